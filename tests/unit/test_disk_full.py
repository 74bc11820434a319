"""A full disk: the batch refuses what cannot fit (507 per object), so does upload-auth.

The real filesystem is replaced by a store whose free space the test sets;
tests/integration/test_faults.py fills a real (tmpfs) filesystem.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from lfs_server.services import services
from lfs_server.store import LocalStore
from lfs_server.store.local import RESERVED_BYTES
from tests.unit.conftest import nginx_commit

LFS = "application/vnd.git-lfs+json"
URL = "/team/proj.git/info/lfs/objects/batch"


def oid_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def free(app: Flask, monkeypatch: pytest.MonkeyPatch) -> dict[str, int | None]:
    """Set `free["bytes"]` to what the store reports as free (None: unknown)."""
    room: dict[str, int | None] = {"bytes": 10**12}
    store: LocalStore = services(app).store
    monkeypatch.setattr(store, "free_space", lambda: room["bytes"])
    return room


def batch(client: FlaskClient, operation: str, *objects: tuple[str, int]) -> list[dict[str, Any]]:
    response = client.post(
        URL,
        json={"operation": operation, "objects": [{"oid": o, "size": s} for o, s in objects]},
        headers={"Accept": LFS},
        content_type=LFS,
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["objects"]


def store_object(app: Flask, data: bytes) -> str:
    tmp = services(app).settings.upload_tmp_dir / "t"
    tmp.write_bytes(data)
    services(app).objects.accept("team/proj", oid_of(data), len(data), tmp)
    tmp.unlink()
    return oid_of(data)


def test_upload_that_does_not_fit_gets_a_507_object_error(
    client: FlaskClient, free: dict[str, int | None]
) -> None:
    free["bytes"] = 1000
    fits, too_big = ("a" * 64, 1000), ("b" * 64, 1001)
    ok, refused = batch(client, "upload", fits, too_big)
    assert "upload" in ok["actions"]
    assert refused == {
        "oid": "b" * 64,
        "size": 1001,
        "error": {"code": 507, "message": "insufficient storage on the server: the disk is full"},
    }


def test_objects_of_one_batch_share_the_free_space(
    client: FlaskClient, free: dict[str, int | None]
) -> None:
    free["bytes"] = 1500
    first, second, third = batch(
        client, "upload", ("a" * 64, 1000), ("b" * 64, 600), ("c" * 64, 500)
    )
    assert "actions" in first
    assert second["error"]["code"] == 507
    assert "actions" in third


def test_a_full_disk_still_serves_downloads_and_knows_stored_objects(
    client: FlaskClient, app: Flask, free: dict[str, int | None]
) -> None:
    oid = store_object(app, b"already here")
    free["bytes"] = 0
    (stored,) = batch(client, "upload", (oid, 12))
    assert stored == {"oid": oid, "size": 12}
    (download,) = batch(client, "download", (oid, 12))
    assert "download" in download["actions"]
    (empty,) = batch(client, "upload", (oid_of(b""), 0))
    assert "upload" in empty["actions"]


def test_unknown_free_space_refuses_nothing(
    client: FlaskClient, free: dict[str, int | None]
) -> None:
    free["bytes"] = None
    (obj,) = batch(client, "upload", ("a" * 64, 10**10))
    assert "upload" in obj["actions"]


def test_upload_auth_refuses_before_the_body_with_507(
    client: FlaskClient, free: dict[str, int | None]
) -> None:
    oid = "d" * 64
    (obj,) = batch(client, "upload", (oid, 5000))
    header = obj["actions"]["upload"]["header"]
    free["bytes"] = 4999
    response = client.get(
        "/.lfs-internal/upload-auth",
        headers={**header, "X-LFS-Oid": oid, "X-LFS-Content-Length": "5000"},
    )
    assert response.status_code == 507
    assert response.headers["X-LFS-Error"].startswith("insufficient storage")
    free["bytes"] = 5000
    response = client.get(
        "/.lfs-internal/upload-auth",
        headers={**header, "X-LFS-Oid": oid, "X-LFS-Content-Length": "5000"},
    )
    assert response.status_code == 204


def test_local_store_reports_free_space_less_a_reserve(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    store = LocalStore(tmp_path / "objects", tmp_path / "tmp")
    info = os.statvfs(tmp_path)
    expected = max(0, info.f_bavail * info.f_frsize - RESERVED_BYTES)
    reported = store.free_space()
    assert reported is not None
    assert abs(reported - expected) < 64 << 20
    assert LocalStore(tmp_path / "x", tmp_path / "missing").free_space() is None


@pytest.mark.parametrize(("room", "status"), [(0, 507), (1, 200), (None, 200)])
def test_the_commit_takes_a_body_only_while_the_reserve_is_free(
    app: Flask, client: FlaskClient, free: dict[str, int | None], room: int | None, status: int
) -> None:
    # A body under 1 MB reaches the commit without a look at the free space
    # before it; once it is on the disk, 0 means the reserve is eaten into.
    data = b"a small object that came in first"
    (obj,) = batch(client, "upload", (oid_of(data), len(data)))
    upload = services(app).settings.upload_tmp_dir / "0000000042"
    upload.write_bytes(data)
    free["bytes"] = room
    response = nginx_commit(
        client, obj["actions"]["upload"]["header"], oid_of(data), upload, len(data)
    )
    assert response.status_code == status, response.get_data(as_text=True)
    stored = services(app).objects.size("team/proj", oid_of(data))
    if status == 507:
        assert (
            response.get_json()["message"] == "insufficient storage on the server: the disk is full"
        )
        assert stored is None
    else:
        assert stored == len(data)
