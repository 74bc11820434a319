"""Every public POST must be declared JSON: a cross-site form cannot act with cached credentials.

A browser sends a form or a no-cors fetch from any site with the Basic
credentials it cached for this server, but only as text/plain,
application/x-www-form-urlencoded, multipart/form-data or with no type at
all. Each of those gets 415 before the handler runs, so nothing changes.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.security import generate_password_hash

from lfs_server.app import create_app
from lfs_server.db import SQLiteDatabase
from lfs_server.services import services
from lfs_server.settings import Settings
from lfs_server.tokens import Grant
from tests.unit.conftest import nginx_commit

LFS = "application/vnd.git-lfs+json"
PASSWORD = "correct horse battery"
REPO = "team/proj"
LOCKS = f"/{REPO}.git/info/lfs/locks"
BATCH = f"/{REPO}.git/info/lfs/objects/batch"
DATA = b"an object"
OID = hashlib.sha256(DATA).hexdigest()
# What a page on another site can send without a CORS preflight (None: no Content-Type).
CROSS_SITE_TYPES = [
    "text/plain",
    "text/plain; charset=utf-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    None,
]
# Near misses that are not JSON either.
OTHER_TYPES = ["application/jsonp", "text/json", "application/json-patch", "application/x-json"]
ACCEPTED_TYPES = [
    LFS,
    f"{LFS}; charset=utf-8",
    "application/json",
    "Application/JSON; charset=UTF-8",
    "APPLICATION/VND.GIT-LFS+JSON",
]


def basic(user: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Accept": LFS}


@pytest.fixture
def lfs_app(tmp_path: Path) -> Flask:
    app = create_app(Settings.from_env({"LFS_DATA_DIR": str(tmp_path / "data")}))
    db: SQLiteDatabase = services(app).db
    password_hash = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1")
    db.add_user("alice", password_hash, is_admin=False)
    db.add_user("root", password_hash, is_admin=True)
    db.set_grant("alice", "team/*", "write")
    return app


@pytest.fixture
def client(lfs_app: Flask) -> FlaskClient:
    return lfs_app.test_client()


def post(client: FlaskClient, url: str, body: Any, content_type: str | None, **headers: str):
    sent = {**headers}
    if content_type is not None:
        sent["Content-Type"] = content_type
    return client.post(url, data=json.dumps(body), headers=sent)


def assert_415(response) -> None:
    assert response.status_code == 415, response.get_data(as_text=True)
    assert response.mimetype == LFS
    message = response.get_json()["message"]
    assert LFS in message and "application/json" in message, message


def upload_actions(client: FlaskClient) -> dict[str, Any]:
    body = {"operation": "upload", "objects": [{"oid": OID, "size": len(DATA)}]}
    response = post(client, BATCH, body, LFS, **basic("alice"))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["objects"][0]["actions"]


def verify_header(lfs_app: Flask) -> dict[str, str]:
    """A valid verify token of alice's (batch answers offer verify only for direct S3
    uploads; the endpoint still answers tokens minted for it)."""
    alice = services(lfs_app).db.get_user("alice")
    assert alice is not None
    grant = Grant(REPO, OID, len(DATA), "verify", "alice", alice.uid, "write")
    return {"Authorization": f"Bearer {services(lfs_app).signer.sign(grant, 2**31)}"}


def create_lock(client: FlaskClient, path: str) -> str:
    response = post(client, LOCKS, {"path": path}, LFS, **basic("alice"))
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()["lock"]["id"]


def lock_ids(client: FlaskClient) -> list[str]:
    response = client.get(LOCKS, headers=basic("alice"))
    return [lock["id"] for lock in response.get_json()["locks"]]


@pytest.mark.parametrize("content_type", CROSS_SITE_TYPES + OTHER_TYPES)
def test_a_form_cannot_create_a_lock(client: FlaskClient, content_type: str | None) -> None:
    assert_415(post(client, LOCKS, {"path": "a.bin"}, content_type, **basic("alice")))
    assert lock_ids(client) == []


@pytest.mark.parametrize("content_type", CROSS_SITE_TYPES + OTHER_TYPES)
def test_a_form_cannot_unlock_or_force_unlock(
    client: FlaskClient, content_type: str | None
) -> None:
    lock_id = create_lock(client, "a.bin")
    unlock = f"{LOCKS}/{lock_id}/unlock"
    assert_415(post(client, unlock, {"force": True}, content_type, **basic("root")))
    assert_415(post(client, unlock, {}, content_type, **basic("alice")))
    # No body at all (a bodiless no-cors fetch) is refused the same way.
    headers = {**basic("alice"), **({"Content-Type": content_type} if content_type else {})}
    assert_415(client.post(unlock, headers=headers))
    assert lock_ids(client) == [lock_id]


@pytest.mark.parametrize("content_type", CROSS_SITE_TYPES)
def test_a_form_cannot_verify_locks_ask_a_batch_or_verify_an_upload(
    lfs_app: Flask, client: FlaskClient, content_type: str | None
) -> None:
    assert_415(post(client, f"{LOCKS}/verify", {}, content_type, **basic("alice")))
    body = {"operation": "upload", "objects": [{"oid": OID, "size": len(DATA)}]}
    assert_415(post(client, BATCH, body, content_type, **basic("alice")))
    verify = verify_header(lfs_app)
    assert_415(
        post(client, "/.lfs/verify", {"oid": OID, "size": len(DATA)}, content_type, **verify)
    )


@pytest.mark.parametrize("content_type", ACCEPTED_TYPES)
def test_json_media_types_are_accepted_with_parameters_in_any_case(
    client: FlaskClient, content_type: str
) -> None:
    response = post(client, LOCKS, {"path": "b.bin"}, content_type, **basic("alice"))
    assert response.status_code == 201, response.get_data(as_text=True)
    lock_id = response.get_json()["lock"]["id"]
    response = post(client, f"{LOCKS}/verify", {}, content_type, **basic("alice"))
    assert response.status_code == 200
    response = post(client, f"{LOCKS}/{lock_id}/unlock", {}, content_type, **basic("alice"))
    assert response.status_code == 200
    body = {"operation": "download", "objects": [{"oid": OID, "size": len(DATA)}]}
    assert post(client, BATCH, body, content_type, **basic("alice")).status_code == 200


def test_routing_errors_come_first(client: FlaskClient) -> None:
    """A POST to what nothing serves keeps its 404 or 405, whatever its type."""
    assert client.post("/nothing/here", data="x", content_type="text/plain").status_code == 404
    response = client.post(f"/.lfs/download/{OID}", data="x", content_type="text/plain")
    assert response.status_code == 405


def test_nginx_upload_commit_needs_no_content_type(lfs_app: Flask, client: FlaskClient) -> None:
    """nginx clears Content-Type when it hands an upload to the app: still accepted."""
    actions = upload_actions(client)
    upload = lfs_app.config["LFS_SETTINGS"].upload_tmp_dir / "0000000001"
    upload.write_bytes(DATA)
    response = nginx_commit(client, actions["upload"]["header"], OID, upload, len(DATA))
    assert response.status_code == 200, response.get_data(as_text=True)
    body = {"oid": OID, "size": len(DATA)}
    assert post(client, "/.lfs/verify", body, LFS, **verify_header(lfs_app)).status_code == 200
