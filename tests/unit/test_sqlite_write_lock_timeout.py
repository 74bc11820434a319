"""A stalled writer cannot block SQLite's other writers for ever.

Writers queue on an flock of the database's folder and, within a process,
on a threading lock. Whoever holds one and stalls (a stopped process, a hung
request thread) makes every other writer give up after WRITE_LOCK_TIMEOUT
with DatabaseUnavailable, which clients get as 429 with Retry-After.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from lfs_server.db import DatabaseUnavailable, IndexedObject, SQLiteDatabase
from lfs_server.db import sqlite as sqlite_db
from lfs_server.services import services
from tests.unit.conftest import nginx_commit

TIMEOUT = 0.3
# Far above TIMEOUT on a busy machine, far below for ever.
GIVES_UP_WITHIN = 15.0
LFS = "application/vnd.git-lfs+json"
DATA = b"an object"
OID = hashlib.sha256(DATA).hexdigest()
ROW = IndexedObject("team/proj", OID, len(DATA), 1)
T = TypeVar("T")

HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


@pytest.fixture(autouse=True)
def short_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_db, "WRITE_LOCK_TIMEOUT", TIMEOUT)


@contextmanager
def flock_held_elsewhere(folder: Path) -> Iterator[None]:
    """Another process holds the folder's flock until the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdin is not None
    try:
        assert holder.stdout.readline() == "held\n"
        yield
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def outcome_of(call: Callable[[], T]) -> tuple[T | BaseException, float]:
    """What `call` returned or raised, and how long it took; fails if it hangs."""
    result: list[T | BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            result.append(call())
        except BaseException as exc:  # the outcome under test
            result.append(exc)
        done.set()

    start = time.monotonic()
    threading.Thread(target=run, daemon=True).start()
    assert done.wait(GIVES_UP_WITHIN), "the writer is still waiting for the lock"
    return result[0], time.monotonic() - start


def test_a_writer_gives_up_on_a_flock_held_by_another_process(tmp_path: Path) -> None:
    db = SQLiteDatabase(tmp_path / "lfs.db")
    with flock_held_elsewhere(tmp_path):
        outcome, waited = outcome_of(lambda: db.add_objects([ROW]))
        # Checked once the holder has let go: a hung writer must not hang the test.
    assert isinstance(outcome, DatabaseUnavailable), outcome
    assert waited >= TIMEOUT
    assert "LFS_DATA_DIR" in str(outcome) and str(tmp_path) not in str(outcome)
    db.add_objects([ROW])  # once it is free, writes go through again


def test_a_writer_gives_up_on_a_thread_stalled_in_a_write(tmp_path: Path) -> None:
    db = SQLiteDatabase(tmp_path / "lfs.db")
    inside, release = threading.Event(), threading.Event()

    def stalled_writer() -> None:
        with db.transaction():
            inside.set()
            release.wait()

    stalled = threading.Thread(target=stalled_writer)
    stalled.start()
    try:
        assert inside.wait(30)
        outcome, waited = outcome_of(lambda: db.add_objects([ROW]))
    finally:
        release.set()
        stalled.join()
    assert isinstance(outcome, DatabaseUnavailable), outcome
    assert waited >= TIMEOUT
    db.add_objects([ROW])


def test_clients_get_a_retryable_answer(
    app: Flask, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A lock and an upload's commit, while another process holds the write lock."""
    response = client.post(
        "/team/proj.git/info/lfs/objects/batch",
        json={"operation": "upload", "objects": [{"oid": OID, "size": len(DATA)}]},
        content_type=LFS,
    )
    header = response.get_json()["objects"][0]["actions"]["upload"]["header"]
    upload = services(app).settings.upload_tmp_dir / "0000000001"
    upload.write_bytes(DATA)

    def lock() -> TestResponse:
        return client.post(
            "/team/proj.git/info/lfs/locks", json={"path": "a.bin"}, content_type=LFS
        )

    def commit() -> TestResponse:
        return nginx_commit(client, header, OID, upload, len(DATA))

    with flock_held_elsewhere(services(app).settings.database_path.parent):
        answers = [outcome_of(lock)[0], outcome_of(commit)[0]]
    for answer in answers:
        assert isinstance(answer, TestResponse), answer
        assert answer.status_code == 429, answer.get_data(as_text=True)
        assert answer.headers["Retry-After"] == "5"
        assert answer.mimetype == LFS and "message" in answer.get_json()
    assert "Traceback" not in caplog.text
