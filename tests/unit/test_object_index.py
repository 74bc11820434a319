"""The object index: what each repository may see of a store that keeps every oid once.

The batch answers from the index (one query per batch, never the store per
object); an oid another repository holds is neither offered nor served nor
verified for a repository that did not upload it, and such an upload still
sends and verifies every byte before the index lets the repository see it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from lfs_server.db import Database, IndexedObject, RepoUsage
from lfs_server.db.sqlite import MIGRATIONS
from lfs_server.services import services
from lfs_server.settings import SettingsError
from lfs_server.tokens import Grant
from tests.unit.conftest import make_settings, nginx_commit

LFS = "application/vnd.git-lfs+json"
DATA = b"held by team/a"
OID = hashlib.sha256(DATA).hexdigest()


def batch(client: FlaskClient, repo: str, operation: str, *objects: tuple[str, int]) -> Any:
    response = client.post(
        f"/{repo}.git/info/lfs/objects/batch",
        json={"operation": operation, "objects": [{"oid": o, "size": s} for o, s in objects]},
        content_type=LFS,
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["objects"]


def commit(app: Flask, client: FlaskClient, repo: str, payload: bytes, name: str) -> int:
    """Upload `payload` as OID to `repo` the way nginx hands it to the app."""
    (obj,) = batch(client, repo, "upload", (OID, len(DATA)))
    header = obj["actions"]["upload"]["header"]
    upload = services(app).settings.upload_tmp_dir / name
    upload.write_bytes(payload)
    return nginx_commit(client, header, OID, upload, len(DATA)).status_code


def token_for(app: Flask, repo: str, op: str) -> dict[str, str]:
    grant = Grant(repo, OID, len(DATA), op, "anonymous", "anonymous", "write")
    return {"Authorization": f"Bearer {services(app).signer.sign(grant, 2**31)}"}


def objects_on_disk(app: Flask) -> list[Path]:
    return [p for p in services(app).settings.objects_dir.rglob("*") if p.is_file()]


def test_a_batch_asks_the_index_once_and_never_the_store(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert commit(app, client, "team/a", DATA, "0000000001") == 200
    db = services(app).db
    queries: list[int] = []
    real = db.object_sizes
    monkeypatch.setattr(
        db, "object_sizes", lambda repo, oids: queries.append(1) or real(repo, oids)
    )

    def no_store_access(oid: str) -> int | None:
        raise AssertionError("the batch asked the store")

    monkeypatch.setattr(services(app).store, "size", no_store_access)
    others = [(hashlib.sha256(b"%d" % n).hexdigest(), n) for n in range(99)]
    answered = batch(client, "team/a", "download", (OID, len(DATA)), *others)
    assert len(answered) == 100 and "actions" in answered[0]
    assert all(obj["error"]["code"] == 404 for obj in answered[1:])
    assert len(queries) == 1
    answered = batch(client, "team/a", "upload", (OID, len(DATA)), *others)
    assert answered[0] == {"oid": OID, "size": len(DATA)}
    assert all("upload" in obj["actions"] for obj in answered[1:])
    assert len(queries) == 2


def test_an_oid_of_another_repository_is_not_offered_served_or_verified(
    app: Flask, client: FlaskClient
) -> None:
    assert commit(app, client, "team/a", DATA, "0000000002") == 200
    (download,) = batch(client, "team/b", "download", (OID, len(DATA)))
    assert download["error"] == {"code": 404, "message": "object does not exist"}
    (upload,) = batch(client, "team/b", "upload", (OID, len(DATA)))
    assert set(upload["actions"]) == {"upload"}  # as for an oid nobody has
    verify = client.post(
        "/.lfs/verify",
        json={"oid": OID, "size": len(DATA)},
        headers=token_for(app, "team/b", "verify"),
        content_type=LFS,
    )
    assert verify.status_code == 404
    fetched = client.get(f"/.lfs/download/{OID}", headers=token_for(app, "team/b", "download"))
    assert fetched.status_code == 404 and "X-Accel-Redirect" not in fetched.headers
    fetched = client.get(f"/.lfs/download/{OID}", headers=token_for(app, "team/a", "download"))
    assert fetched.headers["X-Accel-Redirect"] == (
        f"/.lfs-internal/objects/{OID[:2]}/{OID[2:4]}/{OID}"
    )


def test_the_second_repository_sends_and_verifies_the_bytes_then_shares_the_file(
    app: Flask, client: FlaskClient
) -> None:
    assert commit(app, client, "team/a", DATA, "0000000003") == 200
    (stored,) = objects_on_disk(app)
    inode = stored.stat().st_ino
    # Claiming the oid without its bytes (right size, other bytes) gets nothing.
    assert commit(app, client, "team/b", b"x" * len(DATA), "0000000004") == 422
    (still,) = batch(client, "team/b", "download", (OID, len(DATA)))
    assert still["error"]["code"] == 404
    assert commit(app, client, "team/b", DATA, "0000000005") == 200
    (shared,) = batch(client, "team/b", "download", (OID, len(DATA)))
    assert "download" in shared["actions"]
    assert objects_on_disk(app) == [stored] and stored.stat().st_ino == inode


def test_the_index_is_a_migration_after_the_existing_ones(app: Flask) -> None:
    assert services(app).db.schema_version() == len(MIGRATIONS)
    assert "CREATE TABLE objects" in MIGRATIONS[4]  # version 5, after the first four


def test_only_the_local_store_is_known(tmp_path: Path) -> None:
    assert make_settings(tmp_path / "d").store == "local"
    assert make_settings(tmp_path / "d", LFS_STORE=" Local ").store == "local"
    with pytest.raises(SettingsError, match=r"^LFS_STORE: expected one of local, s3, got 'nfs'$"):
        make_settings(tmp_path / "d", LFS_STORE="nfs")


def test_repository_usage_sums_the_index_per_repository(db: Database) -> None:
    """What the web pages show, on every database backend."""
    db.add_objects(
        [
            IndexedObject("team/a", "a" * 64, 10, 100),
            IndexedObject("team/a", "b" * 64, 5_000_000_000, 300),
            IndexedObject("team/b", "a" * 64, 10, 200),
        ]
    )
    assert db.repo_usage() == [
        RepoUsage("team/a", 2, 5_000_000_010, 300),
        RepoUsage("team/b", 1, 10, 200),
    ]
