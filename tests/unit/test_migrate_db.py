"""migrate-db's parts that need no PostgreSQL: it knows every table, its
digest ignores row order, and a source it cannot copy is refused before any
connection, one line, untouched."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from lfs_server import cli
from lfs_server.db import SQLiteDatabase
from lfs_server.db.migrations import MIGRATIONS
from lfs_server.migrate_db import LOCK_COUNTER, TABLES, Source, Tally
from lfs_server.settings import SettingsError, parse_database_url

CLOSED = "postgresql://lfs@127.0.0.1:1/lfs"


def test_every_table_of_the_schema_is_copied(tmp_path: Path) -> None:
    SQLiteDatabase(tmp_path / "lfs.db").close()
    with sqlite3.connect(tmp_path / "lfs.db") as conn:
        tables = {
            name: [column for _, column, *_ in conn.execute(f"PRAGMA table_info({name})")]
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    assert tables.pop(LOCK_COUNTER) == ["last"]  # becomes the sequence lock_seq
    assert {table.name: sorted(table.columns) for table in TABLES} == {
        name: sorted(columns) for name, columns in tables.items()
    }


def test_the_source_is_one_snapshot_and_blocks_no_writer(tmp_path: Path) -> None:
    db = SQLiteDatabase(tmp_path / "lfs.db")
    db.add_user("alice", None, is_admin=False)
    db.create_lock("l1", "team/a", "x.bin", "alice", 0, owner_uid="u")
    source = Source(tmp_path / "lfs.db", "the-key")
    try:
        db.add_user("bob", None, is_admin=False)  # a server writing meanwhile
        db.delete_lock("team/a", "l1")
        db.create_lock("l2", "team/a", "y.bin", "bob", 0, owner_uid="v")
        users, locks, keys = (
            next(t for t in TABLES if t.name == n) for n in ("users", "locks", "server_keys")
        )
        assert [row[2] for row in source.rows(users)] == ["alice"]
        assert [row[0] for row in source.rows(locks)] == ["l1"]
        assert source.lock_counter() == 1
        assert list(source.rows(keys)) == [("transfer-token-signing", "the-key")]
    finally:
        source.close()
        db.close()


def test_the_digest_ignores_order_and_sees_any_change() -> None:
    rows = [(1, "alice", 0.5, None), (2, "bob", 1e12, "x")]

    def tally(items: list[tuple[object, ...]]) -> Tally:
        result = Tally()
        for row in items:
            result.add(row)
        return result

    assert tally(rows) == tally(rows[::-1])
    assert tally(rows) != tally([rows[0], (2, "bob", 1e12, "y")])
    assert tally(rows) != tally([rows[0], (2, "bob", 1e12 + 1, "x")])
    assert tally(rows) != tally(rows[:1])


def test_the_target_url_is_named_by_its_option(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^--to: expected postgresql://"):
        parse_database_url("--to", "sqlite:///x.db", "")
    (tmp_path / "pw").write_text("from-the-file\n")
    url, password = parse_database_url(
        "--to", "postgresql://lfs@db.example/lfs", str(tmp_path / "pw")
    )
    assert (url, password) == ("postgresql://lfs@db.example/lfs", "from-the-file")
    with pytest.raises(SettingsError, match="the password is in --to already"):
        parse_database_url("--to", "postgresql://lfs:pw@db.example/lfs", str(tmp_path / "pw"))


def run(data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    monkeypatch.setenv("LFS_DATA_DIR", str(data))
    assert cli.main(["migrate-db", "--to", CLOSED]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured
    return captured.err


def test_the_server_database_settings_do_not_apply_to_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The source is LFS_DATA_DIR's SQLite database even with a replica's settings
    in the environment; the password file alone is no error (it is --to's)."""
    (tmp_path / "pw").write_text("secret\n")
    monkeypatch.setenv("LFS_DATABASE_PASSWORD_FILE", str(tmp_path / "pw"))
    err = run(tmp_path / "data", monkeypatch, capsys)
    assert err.startswith("lfs-server: LFS_DATA_DIR: no database (lfs.db) in "), err
    assert not (tmp_path / "data").exists()  # nothing created: no data dir, no key
    monkeypatch.setenv("LFS_DATABASE_URL", "mysql://not-read@db.example/lfs")
    monkeypatch.delenv("LFS_DATABASE_PASSWORD_FILE")
    assert "no database (lfs.db)" in run(tmp_path / "data", monkeypatch, capsys)


@pytest.mark.parametrize("version", [3, len(MIGRATIONS) + 1])
def test_a_source_schema_of_another_version_is_refused_untouched(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    version: int,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with sqlite3.connect(data / "lfs.db") as conn:
        for migration in MIGRATIONS[: min(version, len(MIGRATIONS))]:
            conn.executescript(migration.sqlite)
        conn.execute(f"PRAGMA user_version = {version}")
    conn.close()
    before = hashlib.sha256((data / "lfs.db").read_bytes()).hexdigest()
    err = run(data, monkeypatch, capsys)
    expected = "start the server on it once" if version < len(MIGRATIONS) else "is newer than"
    assert f"(version {version})" in err or f"version {version}," in err, err
    assert expected in err, err
    assert hashlib.sha256((data / "lfs.db").read_bytes()).hexdigest() == before
    with sqlite3.connect(data / "lfs.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (version,)
    conn.close()


def test_a_file_that_is_no_database_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "lfs.db").write_bytes(b"this is not an SQLite database\n" * 64)
    err = run(data, monkeypatch, capsys)
    assert (
        err == f"lfs-server: LFS_DATA_DIR: the database in {data} failed: file is not a database\n"
    )
