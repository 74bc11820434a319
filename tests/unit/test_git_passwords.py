"""LFS_GIT_PASSWORDS: with `deny`, the Batch and Locking APIs take only access
tokens as the Basic password; /metrics still takes an admin's password."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.security import generate_password_hash

from lfs_server import accounts
from lfs_server.accounts import new_token
from lfs_server.app import create_app
from lfs_server.auth import NO_GIT_PASSWORDS
from lfs_server.db import SQLiteDatabase
from lfs_server.services import services
from lfs_server.settings import SettingsError
from tests.unit.conftest import make_settings

LFS = "application/vnd.git-lfs+json"
OID = hashlib.sha256(b"hello").hexdigest()
PASSWORD = "correct horse battery"
CHEAP_HASH = generate_password_hash(PASSWORD, "pbkdf2:sha256:1")
BATCH = {"operation": "download", "objects": [{"oid": OID, "size": 5}]}
# What alice gets when let in (no lock "x" to unlock).
LET_IN = {"batch": 200, "lock": 201, "list": 200, "verify": 200, "unlock": 404}


def basic(name: str, secret: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{name}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {encoded}", "X-Forwarded-For": "10.0.0.1"}


def make_app(tmp_path: Path, **env: str) -> tuple[Flask, str]:
    """The app with user alice (password, and the token returned) and admin boss."""
    app = create_app(make_settings(tmp_path / "data", **env))
    db: SQLiteDatabase = services(app).db
    db.add_user("alice", CHEAP_HASH, is_admin=False)
    db.set_grant("alice", "team/*", "write")
    db.add_user("boss", CHEAP_HASH, is_admin=True)
    token_id, token, secret_hash = new_token()
    db.add_token("alice", token_id, secret_hash, "", None)
    return app, token


def git_requests(client: FlaskClient, name: str, secret: str) -> dict[str, tuple[int, dict]]:
    """what -> (status, JSON body) of one request to each Batch and Locking endpoint."""
    base = "/team/proj.git/info/lfs"
    headers = {**basic(name, secret), "Content-Type": LFS}
    answers = {
        "batch": client.post(f"{base}/objects/batch", json=BATCH, headers=headers),
        "lock": client.post(f"{base}/locks", json={"path": "a.bin"}, headers=headers),
        "list": client.get(f"{base}/locks", headers=headers),
        "verify": client.post(f"{base}/locks/verify", json={}, headers=headers),
        "unlock": client.post(f"{base}/locks/x/unlock", json={}, headers=headers),
    }
    return {what: (r.status_code, r.get_json()) for what, r in answers.items()}


def test_the_setting(tmp_path: Path) -> None:
    assert make_settings(tmp_path).git_passwords == "allow"
    assert make_settings(tmp_path, LFS_GIT_PASSWORDS=" Deny ").git_passwords == "deny"
    with pytest.raises(SettingsError, match=r"^LFS_GIT_PASSWORDS: "):
        make_settings(tmp_path, LFS_GIT_PASSWORDS="never")


def test_deny_refuses_passwords_on_every_git_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed: list[str] = []
    monkeypatch.setattr(accounts, "password_matches", lambda *args: hashed.append("x") or True)
    app, _ = make_app(tmp_path, LFS_GIT_PASSWORDS="deny", LFS_ANONYMOUS="read")
    with app.test_client() as client:
        for name, secret in (("alice", PASSWORD), ("alice", "wrong"), ("nobody", "x")):
            for what, (status, body) in git_requests(client, name, secret).items():
                assert (what, status, body["message"]) == (what, 401, NO_GIT_PASSWORDS)
        response = client.get("/team/proj.git/info/lfs/locks", headers=basic("alice", PASSWORD))
        assert response.headers["LFS-Authenticate"].startswith("Basic realm=")
    assert hashed == []  # refused before any password is checked


def statuses(answers: dict[str, tuple[int, dict]]) -> dict[str, int]:
    return {what: status for what, (status, _) in answers.items()}


def test_deny_takes_access_tokens(tmp_path: Path) -> None:
    app, token = make_app(tmp_path, LFS_GIT_PASSWORDS="deny")
    with app.test_client() as client:
        assert statuses(git_requests(client, "alice", token)) == LET_IN


def test_allow_takes_passwords(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    with app.test_client() as client:
        assert statuses(git_requests(client, "alice", PASSWORD)) == LET_IN


def test_metrics_still_take_an_admin_password_under_deny(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path, LFS_GIT_PASSWORDS="deny")
    with app.test_client() as client:
        assert client.get("/metrics", headers=basic("boss", PASSWORD)).status_code == 200
        assert client.get("/metrics", headers=basic("boss", "wrong")).status_code == 401
