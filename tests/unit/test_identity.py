"""Transfer tokens and locks belong to a user's identity (uid), not their name.

A user removed and added again under the same name, or a new user who got a
removed user's reused `id`, is someone else: the old user's transfer tokens
are refused and their locks are not "ours" for the newcomer.
"""

from __future__ import annotations

import base64
import hashlib
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.security import generate_password_hash

from lfs_server.accounts import new_token
from lfs_server.app import create_app
from lfs_server.auth import ANONYMOUS_UID
from lfs_server.db import Database, SQLiteDatabase
from lfs_server.db.sqlite import MIGRATIONS
from lfs_server.services import services
from lfs_server.tokens import Grant, TokenError, TokenSigner, key_id
from tests.unit.conftest import make_settings, wait_out_login_cache

LFS = "application/vnd.git-lfs+json"
PASSWORD = "correct horse battery"
PASSWORD_HASH = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1")
REPO = "team/proj"
DATA = b"hello"
OID = hashlib.sha256(DATA).hexdigest()
UID_RE = re.compile(r"[0-9a-f]{32}")


def basic(name: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{name}:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {encoded}", "Accept": LFS}


def add_writer(db: Database, name: str) -> None:
    db.add_user(name, PASSWORD_HASH, is_admin=False)
    db.set_grant(name, "team/*", "write")


def recreate(db: Database, name: str) -> None:
    """Remove a user and add the name again with the same password and grants."""
    grants = db.list_grants(name)
    db.remove_user(name)
    db.add_user(name, PASSWORD_HASH, is_admin=False)
    for grant in grants:
        db.set_grant(name, grant.pattern, grant.right)
    wait_out_login_cache()


# the database


def test_every_user_has_a_distinct_random_uid(db: Database) -> None:
    users = [db.add_user(f"u{i}", None, is_admin=False) for i in range(20)]
    assert all(UID_RE.fullmatch(user.uid) for user in users)
    assert len({user.uid for user in users}) == 20
    assert db.get_user("u3") == users[3]
    assert db.list_users() == sorted(users, key=lambda user: user.name)


def test_a_reused_id_is_not_a_reused_identity(tmp_path: Path) -> None:
    db = SQLiteDatabase(tmp_path / "lfs.db")
    db.add_user("alice", None, is_admin=False)
    bob = db.add_user("bob", None, is_admin=False)
    db.remove_user("bob")
    carol = db.add_user("carol", None, is_admin=False)
    assert carol.id == bob.id  # SQLite hands out the highest removed id again
    assert carol.uid != bob.uid
    again = db.add_user("bob", None, is_admin=False)
    assert again.uid not in (bob.uid, carol.uid)


def test_the_schema_refuses_a_shared_uid(tmp_path: Path) -> None:
    db = SQLiteDatabase(tmp_path / "lfs.db")
    alice = db.add_user("alice", None, is_admin=False)
    with pytest.raises(sqlite3.IntegrityError):
        db.conn.execute(
            "INSERT INTO users (uid, name, created_at) VALUES (?, 'bob', 0)", (alice.uid,)
        )


def version_2_database(path: Path) -> None:
    """A database as the previous release left it: users, grants, a token, locks."""
    conn = sqlite3.connect(path)
    for script in MIGRATIONS[:2]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version = 2")
    for user_id, name in ((1, "alice"), (2, "bob"), (3, "gone")):
        conn.execute(
            "INSERT INTO users (id, name, password_hash, is_admin, created_at) "
            "VALUES (?, ?, ?, 0, 0)",
            (user_id, name, PASSWORD_HASH),
        )
        conn.execute("INSERT INTO grants VALUES (?, 'team/*', 'write')", (user_id,))
    locks = [("a" * 32, "alice"), ("b" * 32, "bob"), ("c" * 32, "anonymous"), ("d" * 32, "gone")]
    for seq, (lock_id, owner) in enumerate(locks, start=1):
        conn.execute(
            "INSERT INTO locks VALUES (?, ?, ?, ?, 0, ?)",
            (lock_id, REPO, f"{owner}.bin", owner, seq),
        )
    conn.execute("UPDATE lock_sequence SET last = 4")
    conn.execute("DELETE FROM users WHERE name = 'gone'")  # removed; the lock stays
    conn.commit()
    conn.close()


def test_a_version_2_database_migrates_and_stays_usable(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    version_2_database(data / "lfs.db")
    db = SQLiteDatabase(data / "lfs.db")
    assert db.schema_version() == len(MIGRATIONS)
    alice, bob = db.get_user("alice"), db.get_user("bob")
    assert alice is not None and bob is not None
    assert UID_RE.fullmatch(alice.uid) and UID_RE.fullmatch(bob.uid) and alice.uid != bob.uid
    owners = {lock.owner: lock.owner_uid for lock in db.list_locks(REPO)}
    assert owners == {"alice": alice.uid, "bob": bob.uid, "anonymous": ANONYMOUS_UID, "gone": ""}
    assert db.list_grants("alice")[0].pattern == "team/*"
    token_id, token, secret_hash = new_token()
    db.add_token("alice", token_id, secret_hash, "", None)
    assert db.add_user("carol", None, is_admin=False).uid not in (alice.uid, bob.uid)

    app = create_app(make_settings(data, LFS_ANONYMOUS="none"))
    client = app.test_client()
    url = f"/{REPO}.git/info/lfs/locks"
    ours = client.post(f"{url}/verify", json={}, headers=basic("alice")).get_json()
    assert [lock["path"] for lock in ours["ours"]] == ["alice.bin"]
    assert {lock["path"] for lock in ours["theirs"]} == {"bob.bin", "anonymous.bin", "gone.bin"}
    # alice's own lock opens without force; the removed user's does not
    assert (
        client.post(f"{url}/{'a' * 32}/unlock", json={}, headers=basic("alice")).status_code == 200
    )
    refused = client.post(f"{url}/{'d' * 32}/unlock", json={}, headers=basic("alice"))
    assert refused.status_code == 403
    # her access token, made after the migration, works as the Basic password
    with_token = {"Authorization": "Basic " + base64.b64encode(f"alice:{token}".encode()).decode()}
    assert client.get(url, headers={**with_token, "Accept": LFS}).status_code == 200


# transfer tokens


def test_tokens_carry_the_uid_and_stay_pyjwt_identical() -> None:
    key = b"k" * 40
    signer = TokenSigner(key)
    grant = Grant(REPO, OID, 5, "download", "alice", "ab" * 16, "read")
    token = signer.sign(grant, int(time.time()) + 60)
    claims = jwt.decode(token, key, algorithms=["HS256"])
    assert (claims["sub"], claims["uid"]) == ("alice", "ab" * 16)
    assert token == jwt.encode(claims, key, algorithm="HS256", headers={"kid": key_id(key)})
    assert signer.verify(token, "download", OID) == grant
    del claims["uid"]
    legacy = jwt.encode(claims, key, algorithm="HS256", headers={"kid": key_id(key)})
    with pytest.raises(TokenError, match="invalid"):
        signer.verify(legacy, "download", OID)


@pytest.fixture
def app(tmp_path: Path, database_env: dict[str, str]) -> Iterator[Flask]:
    app = create_app(make_settings(tmp_path / "data", LFS_ANONYMOUS="none", **database_env))
    app.config["TESTING"] = True
    db: Database = services(app).db
    add_writer(db, "alice")
    db.add_user("boss", PASSWORD_HASH, is_admin=False)
    db.set_grant("boss", REPO, "admin")
    upload = services(app).settings.upload_tmp_dir / "hello"
    upload.write_bytes(DATA)
    services(app).objects.accept(REPO, OID, len(DATA), upload)
    yield app
    db.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def actions(client: FlaskClient, operation: str, oid: str, size: int) -> dict[str, dict]:
    body = {"operation": operation, "objects": [{"oid": oid, "size": size}]}
    response = client.post(f"/{REPO}.git/info/lfs/objects/batch", json=body, headers=basic("alice"))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["objects"][0]["actions"]


def download_status(client: FlaskClient, action: dict) -> int:
    path = action["href"].split("/.lfs/", 1)[1]
    return client.get(f"/.lfs/{path}", headers=action["header"]).status_code


def upload_auth_status(client: FlaskClient, action: dict, oid: str, size: int = 3) -> int:
    """nginx's auth_request for an upload of `size` bytes (what nginx passes on)."""
    headers = {**action["header"], "X-LFS-Oid": oid, "X-LFS-Content-Length": str(size)}
    return client.get("/.lfs-internal/upload-auth", headers=headers).status_code


def test_tokens_of_a_removed_user_stay_dead_when_the_name_returns(
    app: Flask, client: FlaskClient
) -> None:
    new_oid = hashlib.sha256(b"new").hexdigest()
    download = actions(client, "download", OID, len(DATA))["download"]
    upload = actions(client, "upload", new_oid, 3)["upload"]
    assert download_status(client, download) == 200
    assert upload_auth_status(client, upload, new_oid) == 204
    recreate(services(app).db, "alice")
    assert download_status(client, download) == 403
    assert upload_auth_status(client, upload, new_oid) == 403
    assert download_status(client, actions(client, "download", OID, len(DATA))["download"]) == 200
    assert (
        upload_auth_status(client, actions(client, "upload", new_oid, 3)["upload"], new_oid) == 204
    )


# locks


def test_locks_of_a_removed_user_are_not_the_new_same_named_users(
    app: Flask, client: FlaskClient
) -> None:
    url = f"/{REPO}.git/info/lfs/locks"
    lock = client.post(url, json={"path": "hero.psd"}, headers=basic("alice")).get_json()["lock"]
    verify = client.post(f"{url}/verify", json={}, headers=basic("alice")).get_json()
    assert [mine["id"] for mine in verify["ours"]] == [lock["id"]]
    recreate(services(app).db, "alice")
    verify = client.post(f"{url}/verify", json={}, headers=basic("alice")).get_json()
    assert verify["ours"] == [] and verify["theirs"] == [lock]
    assert lock["owner"] == {"name": "alice"}
    plain = client.post(f"{url}/{lock['id']}/unlock", json={}, headers=basic("alice"))
    assert plain.status_code == 403
    assert "former user named alice" in plain.get_json()["message"]
    forced = client.post(f"{url}/{lock['id']}/unlock", json={"force": True}, headers=basic("alice"))
    assert forced.status_code == 403  # alice has write, not admin
    # a lock the new alice takes is hers
    mine = client.post(url, json={"path": "new.psd"}, headers=basic("alice")).get_json()["lock"]
    assert (
        client.post(f"{url}/{mine['id']}/unlock", json={}, headers=basic("alice")).status_code
        == 200
    )
    admin = client.post(f"{url}/{lock['id']}/unlock", json={"force": True}, headers=basic("boss"))
    assert admin.status_code == 200


def test_anonymous_writers_share_one_identity(tmp_path: Path) -> None:
    client = create_app(make_settings(tmp_path / "data", LFS_ANONYMOUS="write")).test_client()
    url = f"/{REPO}.git/info/lfs/locks"
    lock = client.post(url, json={"path": "a.bin"}, headers={"Accept": LFS}).get_json()["lock"]
    verify = client.post(f"{url}/verify", json={}, headers={"Accept": LFS}).get_json()
    assert verify["ours"] == [lock]
    new_oid = hashlib.sha256(b"new").hexdigest()
    body = {"operation": "upload", "objects": [{"oid": new_oid, "size": 3}]}
    answer = client.post(f"/{REPO}/info/lfs/objects/batch", json=body, headers={"Accept": LFS})
    upload = answer.get_json()["objects"][0]["actions"]["upload"]
    token = upload["header"]["Authorization"].removeprefix("Bearer ")
    assert jwt.decode(token, options={"verify_signature": False})["uid"] == ANONYMOUS_UID
    assert upload_auth_status(client, upload, new_oid) == 204
