from __future__ import annotations

import hashlib
import time
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient

from lfs_server.services import services

LFS = "application/vnd.git-lfs+json"
URL = "/team/proj.git/info/lfs/objects/batch"
OID = hashlib.sha256(b"hello").hexdigest()


def post(client: FlaskClient, body: Any, url: str = URL, raw: bool = False) -> Any:
    kwargs = {"data": body} if raw else {"json": body}
    response = client.post(url, headers={"Accept": LFS}, content_type=LFS, **kwargs)
    assert response.mimetype == LFS
    return response


def store_object(app: Flask, data: bytes, repo: str = "team/proj") -> str:
    oid = hashlib.sha256(data).hexdigest()
    tmp = services(app).settings.upload_tmp_dir / "t"
    tmp.write_bytes(data)
    services(app).objects.accept(repo, oid, len(data), tmp)
    tmp.unlink()
    return oid


def test_upload_of_new_object_gets_an_upload_action_only(client: FlaskClient, app: Flask) -> None:
    """The PUT commits (verified, durable, the repository's): no verify action to follow it."""
    before = int(time.time())
    response = post(client, {"operation": "upload", "objects": [{"oid": OID, "size": 5}]})
    assert response.status_code == 200
    body = response.get_json()
    assert body["transfer"] == "basic"
    assert body["hash_algo"] == "sha256"
    (obj,) = body["objects"]
    assert (obj["oid"], obj["size"], obj["authenticated"]) == (OID, 5, True)
    upload = obj["actions"]["upload"]
    assert upload["href"] == f"http://127.0.0.1:8080/.lfs/upload/{OID}"
    assert set(obj["actions"]) == {"upload"}
    assert isinstance(upload["expires_in"], int) and upload["expires_in"] == 3600
    assert upload["expires_at"].endswith("Z")
    token = upload["header"]["Authorization"].removeprefix("Bearer ")
    key = app.config["LFS_SETTINGS"].secret_key
    claims = jwt.decode(token, key, algorithms=["HS256"])
    assert claims["repo"] == "team/proj" and claims["oid"] == OID and claims["op"] == "upload"
    assert before + 3600 <= claims["exp"] <= int(time.time()) + 3600


def test_upload_of_stored_object_has_no_actions(client: FlaskClient, app: Flask) -> None:
    oid = store_object(app, b"hello")
    body = post(client, {"operation": "upload", "objects": [{"oid": oid, "size": 5}]}).get_json()
    assert body["objects"] == [{"oid": oid, "size": 5}]


def test_download(client: FlaskClient, app: Flask) -> None:
    oid = store_object(app, b"hello")
    missing = "0" * 64
    body = post(
        client,
        {
            "operation": "download",
            "objects": [{"oid": oid, "size": 5}, {"oid": missing, "size": 1}],
        },
    ).get_json()
    found, absent = body["objects"]
    assert found["actions"]["download"]["href"].endswith(f"/.lfs/download/{oid}")
    assert absent == {
        "oid": missing,
        "size": 1,
        "error": {"code": 404, "message": "object does not exist"},
    }


def test_objects_are_per_repository(client: FlaskClient, app: Flask) -> None:
    oid = store_object(app, b"hello", repo="team/other")
    body = post(client, {"operation": "download", "objects": [{"oid": oid, "size": 5}]}).get_json()
    assert body["objects"][0]["error"]["code"] == 404


def test_every_oid_answered_once_as_sent(client: FlaskClient) -> None:
    oids = [hashlib.sha256(bytes([i])).hexdigest() for i in range(50)]
    objects = [{"oid": oid, "size": 1} for oid in oids + oids[:10]]
    body = post(client, {"operation": "upload", "objects": objects}).get_json()
    assert [obj["oid"] for obj in body["objects"]] == oids


@pytest.mark.parametrize(
    ("oid", "size", "code"),
    [
        ("A" * 64, 1, 422),
        ("abc", 1, 422),
        ("../../etc/passwd", 1, 422),
        ("/etc/passwd", 1, 422),
        (OID, -1, 422),
    ],
)
def test_per_object_errors(client: FlaskClient, oid: str, size: int, code: int) -> None:
    body = post(client, {"operation": "upload", "objects": [{"oid": oid, "size": size}]}).get_json()
    (obj,) = body["objects"]
    assert obj["oid"] == oid
    assert obj["error"]["code"] == code and obj["error"]["message"]
    assert "actions" not in obj


def test_too_large_for_the_limit(client: FlaskClient) -> None:
    body = post(
        client, {"operation": "upload", "objects": [{"oid": OID, "size": 51 << 30}]}
    ).get_json()
    assert body["objects"][0]["error"]["code"] == 422


def test_unsupported_hash_algo(client: FlaskClient) -> None:
    body = post(
        client, {"operation": "upload", "objects": [{"oid": OID, "size": 5}], "hash_algo": "sha512"}
    ).get_json()
    assert body["objects"][0]["error"]["code"] == 409


@pytest.mark.parametrize("ref", [None, {}, {"name": "refs/heads/main"}])
def test_ref_forms_accepted(client: FlaskClient, ref: object) -> None:
    body: dict[str, Any] = {"operation": "upload", "objects": [{"oid": OID, "size": 5}], "ref": ref}
    assert post(client, body).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'"text"',
        b'{"objects": []}',
        b'{"operation": "delete", "objects": []}',
        b'{"operation": "upload", "objects": {}}',
        b'{"operation": "upload", "objects": [5]}',
        b'{"operation": "upload", "objects": [{"size": 1}]}',
        b'{"operation": "upload", "objects": [{"oid": 7, "size": 1}]}',
        b'{"operation": "upload", "objects": [{"oid": "%s", "size": 1.5}]}' % OID.encode(),
        b'{"operation": "upload", "objects": [{"oid": "%s", "size": "5"}]}' % OID.encode(),
        b'{"operation": "upload", "objects": [{"oid": "%s", "size": true}]}' % OID.encode(),
        b'{"operation": "upload", "objects": [], "transfers": ["tus"]}',
        b'{"operation": "upload", "objects": [], "ref": "main"}',
    ],
)
def test_malformed_requests_are_422(client: FlaskClient, body: bytes) -> None:
    response = post(client, body, raw=True)
    assert response.status_code == 422
    assert response.get_json()["message"]


def test_too_many_objects(client: FlaskClient) -> None:
    objects = [{"oid": OID, "size": 5}] * 1001
    response = post(client, {"operation": "upload", "objects": objects})
    assert response.status_code == 413
    assert "1000" in response.get_json()["message"]


@pytest.mark.parametrize(
    "url",
    [
        "/team/../etc.git/info/lfs/objects/batch",
        "/.hidden/proj.git/info/lfs/objects/batch",
        "/a/b/c/d/e/f/g/h/i.git/info/lfs/objects/batch",
        "/team/pr%20oj/info/lfs/objects/batch",
    ],
)
def test_invalid_repository_names(client: FlaskClient, url: str) -> None:
    response = post(client, {"operation": "upload", "objects": []}, url=url)
    assert response.status_code == 404
    assert response.get_json()["message"]


def test_git_suffix_names_the_same_repository(client: FlaskClient, app: Flask) -> None:
    oid = store_object(app, b"hello")
    body = post(
        client,
        {"operation": "download", "objects": [{"oid": oid, "size": 5}]},
        url="/team/proj/info/lfs/objects/batch",
    ).get_json()
    assert "actions" in body["objects"][0]


def test_errors_are_json_never_html(client: FlaskClient) -> None:
    for response in (client.get("/nowhere"), client.get(URL), client.delete(URL)):
        assert response.mimetype == LFS
        assert response.get_json()["message"]
        assert b"<html" not in response.data.lower()


def test_download_answer_is_valid_json_whatever_the_public_url(tmp_path) -> None:
    from lfs_server.app import create_app
    from tests.unit.conftest import make_settings

    odd = 'http://lfs.example.com/pre"fix\\\\x'
    app = create_app(make_settings(tmp_path / "d", LFS_ANONYMOUS="read", LFS_PUBLIC_URL=odd))
    oid = store_object(app, b"hello")
    response = post(
        app.test_client(), {"operation": "download", "objects": [{"oid": oid, "size": 5}]}
    )
    (obj,) = response.get_json()["objects"]
    assert obj["actions"]["download"]["href"] == f"{odd}/.lfs/download/{oid}"
    assert type(obj["size"]) is int and type(obj["actions"]["download"]["expires_in"]) is int
