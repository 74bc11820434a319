"""A failed COMMIT (or ROLLBACK) must not leave the database's write lock held.

Failures are injected with a connection class whose COMMIT or ROLLBACK
raises once, as a disk error or a busy database would.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from lfs_server.db import SQLiteDatabase
from lfs_server.db import sqlite as sqlite_db

REAL_CONNECT = sqlite3.connect


def failing_once(*statements: str) -> type[sqlite3.Connection]:
    """A connection class whose first run of each of `statements` raises."""
    pending = set(statements)

    class FailingOnce(sqlite3.Connection):
        def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
            if sql in pending:
                pending.discard(sql)
                raise sqlite3.OperationalError(f"injected: {sql} failed")
            return super().execute(sql, *args)

    return FailingOnce


@pytest.fixture
def db(tmp_path: Path) -> SQLiteDatabase:
    return SQLiteDatabase(tmp_path / "lfs.db")


def inject(monkeypatch: pytest.MonkeyPatch, db: SQLiteDatabase, *statements: str) -> None:
    """From now on this thread's connection fails `statements` once each."""
    factory = failing_once(*statements)
    monkeypatch.setattr(
        sqlite_db.sqlite3,
        "connect",
        lambda *args, **kwargs: REAL_CONNECT(*args, factory=factory, **kwargs),
    )
    db._local.conn = None


def another_worker_can_write(path: Path) -> None:
    """A second connection, as another gunicorn worker has, takes the write lock."""
    other = REAL_CONNECT(path, timeout=0.5, isolation_level=None)
    try:
        started = time.monotonic()
        other.execute("BEGIN IMMEDIATE")
        other.execute(
            "INSERT INTO users (name, password_hash, is_admin, created_at) VALUES ('other', NULL, 0, 0)"
        )
        other.execute("COMMIT")
        assert time.monotonic() - started < 0.5
    finally:
        other.close()


def test_a_failed_commit_releases_the_write_lock(
    db: SQLiteDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    inject(monkeypatch, db, "COMMIT")
    with pytest.raises(sqlite3.OperationalError, match="injected: COMMIT failed"):
        db.add_user("lost", None, is_admin=False)
    another_worker_can_write(db.path)
    db.add_user("alice", None, is_admin=False)  # the same thread writes again
    assert [user.name for user in db.list_users()] == ["alice", "other"]


@pytest.mark.parametrize("body_fails", [False, True], ids=["commit-fails", "body-fails"])
def test_a_failed_rollback_drops_the_connection_and_keeps_the_first_error(
    db: SQLiteDatabase, monkeypatch: pytest.MonkeyPatch, body_fails: bool
) -> None:
    inject(monkeypatch, db, "ROLLBACK", *([] if body_fails else ["COMMIT"]))
    expected = "no such user" if body_fails else "injected: COMMIT failed"
    with pytest.raises(Exception, match=expected) as caught:
        if body_fails:
            db.set_admin("nobody", True)  # raises DatabaseError inside the transaction
        else:
            db.add_user("lost", None, is_admin=False)
    assert "ROLLBACK" not in str(caught.value)
    another_worker_can_write(db.path)
    db.add_user("alice", None, is_admin=False)
    assert [user.name for user in db.list_users()] == ["alice", "other"]
