"""/healthz: the database, the store and the Prehasher, checked without writing.

The Prehasher runs in this process here, as the launcher runs it; the app
reaches it over its socket, as a gunicorn worker does.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from lfs_server.app import create_app
from lfs_server.prehash import PREHASH_SOCKET_ENV, Prehasher
from lfs_server.services import services
from tests.unit.conftest import make_settings

LFS = "application/vnd.git-lfs+json"
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT
# Files opened for writing (or created) under a watched folder: an audit hook
# sees every open() and os.open() of this process, whatever module calls it.
watched: list[Path] = []
written: list[str] = []


def _record_writes(event: str, args: tuple[object, ...]) -> None:
    if not watched:
        return
    if event == "open" and isinstance(args[0], str | Path):
        path, mode, flags = args[0], args[1], args[2]
        if isinstance(mode, str):  # open()
            writes = any(c in mode for c in "wax+")
        else:  # os.open()
            writes = isinstance(flags, int) and bool(flags & WRITE_FLAGS)
        if writes and any(str(path).startswith(str(folder)) for folder in watched):
            written.append(str(path))
    elif event in ("os.mkdir", "os.rename", "os.remove"):
        written.append(f"{event} {args[0]}")


sys.addaudithook(_record_writes)


@pytest.fixture
def prehasher(tmp_path: Path) -> Iterator[Prehasher]:
    uploads = tmp_path / "data" / "tmp" / "uploads"
    uploads.mkdir(parents=True)
    hasher = Prehasher(uploads, tmp_path / "prehash.sock")
    hasher.start()
    yield hasher
    hasher.stop()


@pytest.fixture
def app(tmp_path: Path, prehasher: Prehasher, monkeypatch: pytest.MonkeyPatch) -> Flask:
    monkeypatch.setenv(PREHASH_SOCKET_ENV, str(prehasher.socket_path))
    return create_app(make_settings(tmp_path / "data", LFS_METRICS="public"))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def healthy_gauges(client: FlaskClient) -> dict[str, float]:
    text = client.get("/metrics").get_data(as_text=True)
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == "lfs_healthy"]
    return {sample.labels["check"]: sample.value for sample in family.samples}


def assert_unhealthy(client: FlaskClient, message: str, **checks: str) -> None:
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.mimetype == LFS
    body = response.get_json()
    assert body["message"] == message
    assert body["status"] == "unhealthy"
    assert {name: body["checks"][name] for name in checks} == checks


def test_healthy_and_writes_nothing(client: FlaskClient, tmp_path: Path) -> None:
    watched.append(tmp_path)
    try:
        response = client.get("/healthz")
    finally:
        watched.clear()
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {
        "status": "ok",
        "checks": {"database": "ok", "store": "ok", "prehasher": "ok"},
    }
    assert written == []
    assert healthy_gauges(client) == {"database": 1, "store": 1, "prehasher": 1}


def test_a_dead_prehasher_thread_is_unhealthy(
    client: FlaskClient, prehasher: Prehasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    def dies() -> None:
        raise RuntimeError("injected: the follow loop dies")

    monkeypatch.setattr(prehasher, "_follow_once", dies)
    prehasher._threads["follow"].join(5)
    assert not prehasher.alive()["follow"]
    assert_unhealthy(
        client, "unhealthy: prehasher follow loop stopped", prehasher="follow loop stopped"
    )
    assert healthy_gauges(client) == {"database": 1, "store": 1, "prehasher": 0}


def test_a_stopped_prehasher_is_unhealthy(client: FlaskClient, prehasher: Prehasher) -> None:
    prehasher.stop()
    assert_unhealthy(client, "unhealthy: prehasher not answering", prehasher="not answering")


def test_a_database_that_does_not_answer_is_unhealthy(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> int:
        raise sqlite3.DatabaseError("file is not a database")

    monkeypatch.setattr(services(app).db, "schema_version", broken)
    assert_unhealthy(client, "unhealthy: database not answering", database="not answering")
    assert healthy_gauges(client)["database"] == 0


@pytest.mark.parametrize(
    ("free_blocks", "free_inodes", "state"),
    [(0, 1000, "full"), (10, 1000, "full"), (1 << 20, 0, "out of inodes")],
)
def test_a_full_disk_is_unhealthy(
    client: FlaskClient,
    monkeypatch: pytest.MonkeyPatch,
    free_blocks: int,
    free_inodes: int,
    state: str,
) -> None:
    real_statvfs = os.statvfs

    def statvfs(path: object) -> os.statvfs_result:
        real = real_statvfs(path)  # type: ignore[arg-type]
        values = list(real)
        values[4] = free_blocks  # f_bavail, in f_frsize units
        values[7] = free_inodes  # f_favail
        values[1] = 4096  # f_frsize
        return os.statvfs_result(values)

    monkeypatch.setattr(os, "statvfs", statvfs)
    assert_unhealthy(client, f"unhealthy: store {state}", store=state)


def test_a_missing_objects_folder_is_unhealthy(app: Flask, client: FlaskClient) -> None:
    app.config["LFS_SETTINGS"].objects_dir.rmdir()
    assert_unhealthy(client, "unhealthy: store not writable", store="not writable")
    assert not app.config["LFS_SETTINGS"].objects_dir.exists()  # nothing was created
