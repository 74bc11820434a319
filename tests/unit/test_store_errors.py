"""Storage failures are reported as what they are: 507 only for a full disk.

Commit failures answer 500 or 507 with a plain message and are logged with
their errno and paths (the paths never reach the client); nginx's failed
body writes are judged by the free space; a data directory whose uploads
cannot be hard-linked into the store is refused before the server starts.
tests/integration/test_store_failures.py causes the same failures for real.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from lfs_server import cli, serve
from lfs_server.services import services
from lfs_server.settings import Settings
from lfs_server.store import LocalStore
from lfs_server.store import local as local_store
from lfs_server.store.local import LinkCheckError, check_hard_links
from tests.unit.conftest import nginx_commit

LFS = "application/vnd.git-lfs+json"
DATA = b"an object that cannot be stored"
OID = hashlib.sha256(DATA).hexdigest()


def upload_header(client: FlaskClient, oid: str = OID, size: int = len(DATA)) -> dict[str, str]:
    body = {"operation": "upload", "objects": [{"oid": oid, "size": size}]}
    response = client.post("/team/proj.git/info/lfs/objects/batch", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["objects"][0]["actions"]["upload"]["header"]


def commit(app: Flask, client: FlaskClient) -> Any:
    """What nginx does after writing the body: hand the temp file to the app."""
    upload = app.config["LFS_SETTINGS"].upload_tmp_dir / "0000000007"
    upload.write_bytes(DATA)
    return nginx_commit(client, upload_header(client), OID, upload, len(DATA))


def failing_link(code: int):
    def link(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError(code, os.strerror(code), str(src), None, str(dst))

    return link


@pytest.mark.parametrize(
    ("code", "status", "name"),
    [
        (errno.EIO, 500, "EIO"),
        (errno.EACCES, 500, "EACCES"),
        (errno.EXDEV, 500, "EXDEV"),
        (errno.ENOSPC, 507, "ENOSPC"),
        (errno.EDQUOT, 507, "EDQUOT"),
    ],
)
def test_a_failed_commit_is_logged_with_its_errno_and_paths_but_answers_plainly(
    app: Flask,
    client: FlaskClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    code: int,
    status: int,
    name: str,
) -> None:
    monkeypatch.setattr(local_store.os, "link", failing_link(code))
    with caplog.at_level(logging.ERROR, logger="lfs_server.store.local"):
        response = commit(app, client)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == LFS
    text = response.get_data(as_text=True)
    data_dir = str(app.config["LFS_SETTINGS"].data_dir)
    assert data_dir not in text and "/tmp" not in text and name not in text, text
    if status == 507:
        assert "insufficient storage" in response.get_json()["message"]
    else:
        assert response.get_json()["message"] == "could not store the object"
    (record,) = [r for r in caplog.records if r.name == "lfs_server.store.local"]
    logged = record.getMessage()
    assert name in logged and OID in logged, logged
    assert f"{data_dir}/tmp/uploads/0000000007" in logged, logged
    assert f"{data_dir}/objects/{OID[:2]}/{OID[2:4]}/{OID}" in logged, logged
    assert services(app).store.size(OID) is None
    assert services(app).objects.size("team/proj", OID) is None


def test_a_refused_upload_is_not_logged_as_a_storage_failure(
    app: Flask, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A hash mismatch is the client's error (422), not the server's."""
    upload = app.config["LFS_SETTINGS"].upload_tmp_dir / "0000000008"
    upload.write_bytes(DATA[::-1])
    with caplog.at_level(logging.ERROR, logger="lfs_server.store"):
        response = nginx_commit(client, upload_header(client), OID, upload, len(DATA))
        assert response.status_code == 422
    assert caplog.records == []


@pytest.fixture
def free(app: Flask, monkeypatch: pytest.MonkeyPatch) -> dict[str, int | None]:
    room: dict[str, int | None] = {"bytes": 10**12}
    monkeypatch.setattr(services(app).store, "free_space", lambda: room["bytes"])
    return room


@pytest.mark.parametrize(
    ("room", "size", "status"),
    [
        (10**12, 5000, 500),  # room left: the write failed for another reason
        (5000, 5000, 500),
        (None, 5000, 500),  # the free space is unknown: never guess a full disk
        (4999, 5000, 507),  # the object no longer fits: the disk filled up
        (0, 5000, 507),
        (0, 0, 507),  # not even an empty file fits (no inode left)
    ],
)
def test_a_failed_body_write_is_507_only_when_the_object_no_longer_fits(
    client: FlaskClient, free: dict[str, int | None], room: int | None, size: int, status: int
) -> None:
    header = upload_header(client, "e" * 64, size)  # signed while there was room
    free["bytes"] = room
    response = failed_write(client, size, header)
    assert response.status_code == status
    assert response.mimetype == LFS
    expected = {
        500: "could not write the upload; try again",
        507: "insufficient storage on the server: the disk is full",
    }[status]
    assert response.get_json()["message"] == expected


def failed_write(client: FlaskClient, size: int, header: dict[str, str]) -> Any:
    """nginx's upload-failed call after it could not write a body of `size` bytes."""
    return client.get(
        "/.lfs-internal/upload-failed",
        headers={**header, "X-LFS-Oid": "e" * 64, "X-LFS-Content-Length": str(size)},
    )


@pytest.mark.parametrize(
    ("header", "status"),
    [({}, 401), ({"Authorization": "Bearer forged"}, 403), (None, 403)],
)
def test_a_failed_body_write_tells_only_the_tokens_holder_of_a_full_disk(
    client: FlaskClient, free: dict[str, int | None], header: dict[str, str] | None, status: int
) -> None:
    # A body under 1 MB reaches nginx before any check of its token; None: a
    # real token whose size is not the Content-Length.
    if header is None:
        header = upload_header(client, "e" * 64, 4000)
    free["bytes"] = 0
    response = failed_write(client, 5000, header)
    assert response.status_code == status
    assert "insufficient storage" not in response.get_json()["message"]


def test_no_inode_left_is_no_free_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.statvfs(tmp_path)
    fields = {name: getattr(real, name) for name in dir(real) if name.startswith("f_")}

    class NoInodes:
        def __getattr__(self, name: str) -> int:
            return 0 if name in ("f_ffree", "f_favail") else fields[name]

    monkeypatch.setattr(local_store.os, "statvfs", lambda path: NoInodes())
    assert LocalStore(tmp_path / "objects", tmp_path).free_space() == 0


# ---------------------------------------------------------------- one filesystem


def make_dirs(tmp_path: Path) -> tuple[Path, Path]:
    uploads, objects = tmp_path / "tmp" / "uploads", tmp_path / "objects"
    uploads.mkdir(parents=True)
    objects.mkdir()
    return uploads, objects


def test_hard_links_on_one_filesystem_pass_and_leave_nothing(tmp_path: Path) -> None:
    uploads, objects = make_dirs(tmp_path)
    check_hard_links(uploads, objects)
    assert list(uploads.iterdir()) == [] and list(objects.iterdir()) == []


def test_exdev_is_named_as_two_filesystems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uploads, objects = make_dirs(tmp_path)
    monkeypatch.setattr(local_store.os, "link", failing_link(errno.EXDEV))
    with pytest.raises(LinkCheckError, match="are on different filesystems"):
        check_hard_links(uploads, objects)
    assert list(uploads.iterdir()) == [] and list(objects.iterdir()) == []
    monkeypatch.setattr(local_store.os, "link", failing_link(errno.EPERM))
    with pytest.raises(LinkCheckError, match=r"cannot hard-link .* Operation not permitted"):
        check_hard_links(uploads, objects)


@pytest.fixture
def cross_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data dir whose links fail with EXDEV, as across two mounts."""
    data_dir = tmp_path / "data"
    monkeypatch.setenv("LFS_DATA_DIR", str(data_dir))
    # A given key: the generated one is linked into place, which must not fail here.
    monkeypatch.setenv("LFS_SECRET_KEY", "k" * 48)
    monkeypatch.setattr(local_store.os, "link", failing_link(errno.EXDEV))
    return data_dir


def assert_one_line_naming_the_data_dir(err: str) -> None:
    assert err.count("\n") == 1, err
    assert err.startswith("lfs-server: LFS_DATA_DIR: "), err
    assert "different filesystems" in err, err


def test_serve_refuses_to_start(cross_device: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def must_not_start(self: Any) -> int:
        raise AssertionError("the server started on a data dir it cannot link in")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(serve.Supervisor, "run", must_not_start)
        # As root serve() would drop this very process to LFS_USER.
        patch.setattr(serve.privileges, "run_as", lambda name: None)
        assert serve.serve(Settings.from_env()) == 2
    assert_one_line_naming_the_data_dir(capsys.readouterr().err)


def test_check_config_refuses(cross_device: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config"]) == 2
    captured = capsys.readouterr()
    assert_one_line_naming_the_data_dir(captured.err)
    assert "valid" not in captured.out
