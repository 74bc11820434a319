from __future__ import annotations

import base64
import hashlib
import time
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from lfs_server import throttle
from lfs_server.access import matches, normalize_pattern
from lfs_server.accounts import hash_password, new_token
from lfs_server.app import create_app
from lfs_server.db import SQLiteDatabase
from lfs_server.services import services
from tests.lfsapi import basic
from tests.unit.conftest import make_settings, wait_out_login_cache

LFS = "application/vnd.git-lfs+json"
OID = hashlib.sha256(b"hello").hexdigest()
PASSWORD = "correct horse battery"
PASSWORD_HASH = hash_password(PASSWORD)


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    app = create_app(make_settings(tmp_path / "data", LFS_ANONYMOUS="none"))
    db: SQLiteDatabase = services(app).db
    for name in ("writer", "reader", "nobody", "boss"):
        db.add_user(name, PASSWORD_HASH, is_admin=name == "boss")
    db.set_grant("writer", "team/*", "write")
    db.set_grant("reader", "team/proj", "read")
    return app


def batch(
    client: FlaskClient,
    op: str,
    headers: dict[str, str],
    repo: str = "team/proj",
    ip: str = "10.0.0.1",
):
    return client.post(
        f"/{repo}.git/info/lfs/objects/batch",
        json={"operation": op, "objects": [{"oid": OID, "size": 5}]},
        headers={**headers, "X-Forwarded-For": ip},
        content_type=LFS,
    )


def test_anonymous_gets_401_with_challenge(client: FlaskClient) -> None:
    response = batch(client, "download", {})
    assert response.status_code == 401
    assert response.headers["LFS-Authenticate"].startswith("Basic realm=")


def test_wrong_password_is_401(client: FlaskClient) -> None:
    response = batch(client, "download", basic("reader", "wrong password"))
    assert response.status_code == 401
    assert "LFS-Authenticate" in response.headers


@pytest.mark.parametrize("header", ["Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode()])
def test_malformed_basic_is_401(client: FlaskClient, header: str) -> None:
    assert batch(client, "download", {"Authorization": header}).status_code == 401


def test_rights_by_role(client: FlaskClient) -> None:
    assert batch(client, "download", basic("reader", PASSWORD)).status_code == 200
    denied = batch(client, "upload", basic("reader", PASSWORD))
    assert denied.status_code == 403
    assert "no write access" in denied.get_json()["message"]
    assert batch(client, "upload", basic("writer", PASSWORD)).status_code == 200
    assert (
        batch(client, "upload", basic("writer", PASSWORD), repo="team/deep/repo").status_code == 200
    )
    assert batch(client, "download", basic("writer", PASSWORD), repo="other/x").status_code == 403
    assert batch(client, "download", basic("nobody", PASSWORD)).status_code == 403
    assert batch(client, "upload", basic("boss", PASSWORD), repo="any/where").status_code == 200


def test_access_token_as_password(client: FlaskClient, app: Flask) -> None:
    db: SQLiteDatabase = services(app).db
    token_id, token, secret_hash = new_token()
    db.add_token("reader", token_id, secret_hash, "ci", None)
    assert batch(client, "download", basic("reader", token)).status_code == 200
    assert db.get_token(token_id).last_used_at is not None
    assert batch(client, "download", basic("writer", token)).status_code == 401
    db.revoke_token(token_id)
    wait_out_login_cache()
    assert batch(client, "download", basic("reader", token)).status_code == 401


def test_expired_access_token(client: FlaskClient, app: Flask) -> None:
    db: SQLiteDatabase = services(app).db
    token_id, token, secret_hash = new_token()
    db.add_token("reader", token_id, secret_hash, "", int(time.time()) - 1)
    assert batch(client, "download", basic("reader", token)).status_code == 401


def test_changed_password_stops_cached_login(client: FlaskClient, app: Flask) -> None:
    db: SQLiteDatabase = services(app).db
    assert batch(client, "download", basic("reader", PASSWORD)).status_code == 200
    db.set_password("reader", hash_password("a new password"))
    wait_out_login_cache()
    assert batch(client, "download", basic("reader", PASSWORD)).status_code == 401
    assert batch(client, "download", basic("reader", "a new password")).status_code == 200
    db.remove_user("reader")
    wait_out_login_cache()
    assert batch(client, "download", basic("reader", "a new password")).status_code == 401


def test_brute_force_gets_429_but_the_real_user_goes_on(client: FlaskClient) -> None:
    for _ in range(throttle.MAX_PER_USER_AND_CLIENT):
        assert batch(client, "download", basic("reader", "guess"), ip="10.6.6.6").status_code == 401
    blocked = batch(client, "download", basic("reader", PASSWORD), ip="10.6.6.6")
    assert blocked.status_code == 429
    assert int(blocked.headers["Retry-After"]) > 0
    assert batch(client, "download", basic("reader", PASSWORD), ip="10.0.0.2").status_code == 200


def test_transfer_token_stops_when_the_grant_goes(client: FlaskClient, app: Flask) -> None:
    tmp = services(app).settings.upload_tmp_dir / "t"
    tmp.write_bytes(b"hello")
    services(app).objects.accept("team/proj", OID, 5, tmp)
    body = batch(client, "download", basic("reader", PASSWORD)).get_json()
    action = body["objects"][0]["actions"]["download"]
    path = action["href"].removeprefix("http://127.0.0.1:8080")
    assert client.get(path, headers=action["header"]).status_code == 200
    services(app).db.remove_grant("reader", "team/proj")
    assert client.get(path, headers=action["header"]).status_code == 403


def test_reader_token_cannot_upload(client: FlaskClient, app: Flask) -> None:
    tmp = services(app).settings.upload_tmp_dir / "t"
    tmp.write_bytes(b"hello")
    services(app).objects.accept("team/proj", OID, 5, tmp)
    body = batch(client, "download", basic("reader", PASSWORD)).get_json()
    header = body["objects"][0]["actions"]["download"]["header"]
    response = client.get("/.lfs-internal/upload-auth", headers={**header, "X-LFS-Oid": OID})
    assert response.status_code == 403
    assert "not valid for upload" in response.headers["X-LFS-Error"]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*", "*"),
        ("team/*", "team/*"),
        ("team/proj.git", "team/proj"),
        ("../x", None),
        ("a/*/b", None),
        ("", None),
    ],
)
def test_patterns(pattern: str, expected: str | None) -> None:
    assert normalize_pattern(pattern) == expected


def test_pattern_matching() -> None:
    assert matches("team/*", "team/a/b")
    assert not matches("team/*", "teamster/a")
    assert not matches("team/*", "team")
    assert matches("team/proj", "team/proj") and not matches("team/proj", "team/proj2")


def test_concurrent_first_checks_share_one_slow_hash(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from lfs_server import accounts

    calls = []
    real = accounts.password_matches

    def counted(password_hash: str | None, password: str) -> bool:
        calls.append(password)
        return real(password_hash, password)

    monkeypatch.setattr(accounts, "password_matches", counted)
    checker = accounts.CredentialChecker(services(app).db)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(checker.check("reader", PASSWORD)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert all(user is not None and user.name == "reader" for user in results)
    assert checker.check("reader", "wrong password") is None
    assert len(calls) == 2
    assert checker._in_flight == {}
