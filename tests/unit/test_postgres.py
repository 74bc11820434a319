"""The PostgreSQL backend's own promises: rows really live in PostgreSQL, one
migration however many replicas start at once, a newer schema refused, a
failed transaction leaves nothing, and no message shows the password."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from lfs_server.app import create_app
from lfs_server.db import Database, DatabaseError, IndexedObject, open_database
from lfs_server.db.migrations import MIGRATIONS
from lfs_server.db.postgres import PostgresDatabase
from lfs_server.services import services
from lfs_server.settings import SettingsError
from lfs_server.tokens import Grant
from lfs_server.web.session import session_key
from tests.engines.postgres import PostgresServer, free_port
from tests.unit.conftest import make_settings

SECRET = "s3cr3t-never-shown"


def test_the_rows_are_in_postgresql(postgres: PostgresServer, tmp_path: Path) -> None:
    url = postgres.new_database()
    db = open_database(make_settings(tmp_path, LFS_DATABASE_URL=url))
    try:
        assert isinstance(db, PostgresDatabase)
        db.add_user("alice", None, is_admin=True)
        db.add_objects([IndexedObject("team/a", "a" * 64, 5, 1)])
        lock, created = db.create_lock("l1", "team/a", "x.bin", "alice", 0, owner_uid="u")
    finally:
        db.close()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT name, is_admin FROM users").fetchall() == [("alice", 1)]
        assert conn.execute("SELECT repo, size FROM objects").fetchall() == [("team/a", 5)]
        assert conn.execute("SELECT last_value FROM lock_seq").fetchone() == (lock.seq,)
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(len(MIGRATIONS),)]
    assert created and not (tmp_path / "lfs.db").exists()


def test_replicas_starting_together_migrate_once(postgres: PostgresServer) -> None:
    url = postgres.new_database()
    barrier = threading.Barrier(8)
    opened: list[PostgresDatabase] = []
    failed: list[BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            opened.append(PostgresDatabase(url, pool_size=1))
        except BaseException as exc:
            failed.append(exc)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failed == [] and len(opened) == 8
    assert {db.schema_version() for db in opened} == {len(MIGRATIONS)}
    for db in opened:
        db.close()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM schema_version").fetchone() == (1,)


def test_a_newer_schema_is_refused(postgres: PostgresServer) -> None:
    url = postgres.new_database()
    PostgresDatabase(url).close()
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE schema_version SET version = %s", (len(MIGRATIONS) + 1,))
    with pytest.raises(DatabaseError, match="newer than this server"):
        PostgresDatabase(url)


def test_a_failed_transaction_leaves_nothing(postgres: PostgresServer) -> None:
    db = PostgresDatabase(postgres.new_database())
    try:
        with pytest.raises(RuntimeError), db.transaction() as conn:
            conn.execute("INSERT INTO users (uid, name, created_at) VALUES ('x', 'half', 0)")
            raise RuntimeError("the body fails after a write")
        assert db.get_user("half") is None
        db.add_user("next", None, is_admin=False)  # the connection went back clean
        assert [user.name for user in db.list_users()] == ["next"]
    finally:
        db.close()


def test_the_password_comes_out_of_the_url(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, LFS_DATABASE_URL=f"postgresql://lfs:{SECRET}@db.example:6543/lfs?sslmode=require"
    )
    assert settings.database_url == "postgresql://lfs@db.example:6543/lfs?sslmode=require"
    assert settings.database_password == SECRET
    assert SECRET not in repr(settings)


def test_the_password_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(SECRET + "\n")
    settings = make_settings(
        tmp_path,
        LFS_DATABASE_URL="postgresql://lfs@db.example/lfs",
        LFS_DATABASE_PASSWORD_FILE=str(tmp_path / "pw"),
    )
    assert (settings.database_url, settings.database_password) == (
        "postgresql://lfs@db.example/lfs",
        SECRET,
    )


@pytest.mark.parametrize(
    "url",
    [
        f"mysql://lfs:{SECRET}@db.example/lfs",
        f"postgresql://lfs:{SECRET}@db.example:99999/lfs",
        f"postgresql://lfs:{SECRET}@db.example/",
    ],
)
def test_a_bad_url_is_named_without_its_password(tmp_path: Path, url: str) -> None:
    with pytest.raises(SettingsError, match=r"^LFS_DATABASE_URL: ") as raised:
        make_settings(tmp_path, LFS_DATABASE_URL=url)
    assert SECRET not in str(raised.value)


def test_an_unreachable_server_is_named_without_the_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    closed_port = free_port()  # nothing listens there
    url = f"postgresql://lfs:{SECRET}@127.0.0.1:{closed_port}/lfs"
    with pytest.raises(DatabaseError, match=r"^LFS_DATABASE_URL: ") as raised:
        open_database(make_settings(tmp_path, LFS_DATABASE_URL=url))
    assert SECRET not in str(raised.value) and SECRET not in caplog.text
    assert f"127.0.0.1:{closed_port}/lfs" in str(raised.value)


def test_servers_on_one_database_share_a_generated_signing_key(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = postgres.new_database()
    apps = [create_app(make_settings(tmp_path / name, LFS_DATABASE_URL=url)) for name in ("a", "b")]
    try:
        grant = Grant("team/a", "a" * 64, 5, "download", "alice", "u", "read")
        token = services(apps[0]).signer.sign(grant, int(time.time()) + 60)
        assert services(apps[1]).signer.verify(token, "download", "a" * 64).user == "alice"
        assert not (tmp_path / "a" / "secret.key").exists()
        assert not (tmp_path / "b" / "secret.key").exists()
        # Web sessions are signed with that shared key too, never a key made of nothing.
        assert apps[0].secret_key == apps[1].secret_key != session_key(b"")
    finally:
        for app in apps:
            services(app).db.close()


def test_shared_key_keeps_the_first_one(db: Database) -> None:
    assert db.shared_key("k", "first") == "first"
    assert db.shared_key("k", "second") == "first"
