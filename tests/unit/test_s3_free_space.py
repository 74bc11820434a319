"""In proxy mode an upload body lands in nginx's temp dir before it goes to the
bucket: the S3 store reports that disk's room, so a nearly full one is refused
early with 507, as on the local store. Nothing here talks to a bucket."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from lfs_server.app import create_app
from lfs_server.services import services
from lfs_server.store.base import RESERVED_BYTES
from lfs_server.store.s3 import S3Store
from tests.unit.conftest import make_settings

LFS = "application/vnd.git-lfs+json"
URL = "/team/proj.git/info/lfs/objects/batch"
FREE = 5000  # what the nearly full temp disk still takes


class NearlyFull:
    """statvfs of a disk with FREE bytes over the reserve and inodes to spare."""

    f_frsize = 1
    f_bavail = RESERVED_BYTES + FREE
    f_files = 1000
    f_favail = 10


def s3_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transfer: str) -> FlaskClient:
    settings = make_settings(
        tmp_path / "data",
        LFS_ANONYMOUS="write",
        LFS_STORE="s3",
        LFS_S3_BUCKET="lfs-objects",
        LFS_S3_TRANSFER=transfer,
    )
    app = create_app(settings)
    assert isinstance(services(app).store, S3Store)
    real = os.statvfs
    tmp = settings.upload_tmp_dir

    def statvfs(path: Any) -> Any:
        return NearlyFull() if Path(path) == tmp else real(path)

    monkeypatch.setattr(os, "statvfs", statvfs)
    return app.test_client()


def upload_batch(client: FlaskClient, *objects: tuple[str, int]) -> list[dict[str, Any]]:
    response = client.post(
        URL,
        json={"operation": "upload", "objects": [{"oid": o, "size": s} for o, s in objects]},
        headers={"Accept": LFS},
        content_type=LFS,
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["objects"]


def test_proxy_mode_reports_the_temp_dirs_room_less_the_reserve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = s3_client(tmp_path, monkeypatch, "proxy")
    assert services(client.application).store.free_space() == FREE


def test_a_nearly_full_temp_disk_is_refused_with_507(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = s3_client(tmp_path, monkeypatch, "proxy")
    fits, too_big = ("a" * 64, FREE), ("b" * 64, FREE + 1)
    ok, refused = upload_batch(client, fits, too_big)
    assert "upload" in ok["actions"]
    assert refused["error"]["code"] == 507, refused
    header = ok["actions"]["upload"]["header"]
    # Before the body: a transfer signed while there was room is refused too.
    monkeypatch.setattr(NearlyFull, "f_bavail", RESERVED_BYTES + FREE - 1)
    response = client.get(
        "/.lfs-internal/upload-auth",
        headers={**header, "X-LFS-Oid": "a" * 64, "X-LFS-Content-Length": str(FREE)},
    )
    assert response.status_code == 507
    assert response.headers["X-LFS-Error"].startswith("insufficient storage")


def test_direct_mode_bodies_go_to_the_bucket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = s3_client(tmp_path, monkeypatch, "direct")
    assert services(client.application).store.free_space() is None
