"""What the PostgreSQL backend sends for the calls every request makes, as the
server logs it: on a busy connection a read or a one-statement write is that
statement alone (no BEGIN and COMMIT around it, no empty query to check the
connection first: each a round trip of its own), recording objects is one
statement however many, and a multi-statement write still commits as one
transaction. The checks that cost no round trip still replace a connection
the server closed, and an idle connection is still asked before use."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator

import psycopg
import pytest

from lfs_server.db import IndexedObject
from lfs_server.db import postgres as postgres_db
from lfs_server.db.postgres import PostgresDatabase
from tests.engines.postgres import PostgresServer

LOGGED = re.compile(r"duration: \S+ ms  (?:statement|execute [^:]*): ?(.*)$")
POOL_CHECK = ""  # the pool's empty query at checkout: an answer means the connection works


@pytest.fixture
def db(postgres: PostgresServer) -> Iterator[PostgresDatabase]:
    """A database whose every statement the server logs (for this database alone)."""
    url = postgres.new_database()
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET log_min_duration_statement = 0')  # type: ignore[call-overload]
    database = PostgresDatabase(url, pool_size=1)
    yield database
    database.close()


def sent(postgres: PostgresServer, call: Callable[[], object]) -> list[str]:
    """The statements the server ran for `call` (it logs each before answering)."""
    start = postgres.log.stat().st_size
    call()
    with open(postgres.log, "rb") as log:
        log.seek(start)
        lines = log.read().decode(errors="replace").splitlines()
    return [match.group(1).strip() for line in lines if (match := LOGGED.search(line))]


def oids(count: int) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(count)]


def test_reads_of_a_request_are_one_statement_each(
    db: PostgresDatabase, postgres: PostgresServer
) -> None:
    user = db.add_user("alice", None, is_admin=False)
    reads: dict[str, Callable[[], object]] = {
        "users": lambda: db.get_user("alice"),
        "grants": lambda: db.user_grants(user.id),
        "auth_failures": lambda: db.failures(["client:127.0.0.1"], 0.0),
        "good_logins": lambda: db.last_login(user.id, "127.0.0.1"),
        "objects": lambda: db.object_sizes("team/a", oids(100)),
        "schema_version": db.schema_version,
    }
    for table, read in reads.items():
        statements = sent(postgres, read)
        assert len(statements) == 1 and table in statements[0], (table, statements)


def test_one_statement_writes_run_alone(db: PostgresDatabase, postgres: PostgresServer) -> None:
    db.add_user("alice", None, is_admin=False)
    writes: dict[str, Callable[[], object]] = {
        "UPDATE users": lambda: db.set_password("alice", "hash"),
        "UPDATE auth_failures": lambda: db.forgive_failure(["client:127.0.0.1"], 0.0),
        "DELETE FROM objects": lambda: db.remove_objects(oids(1)[0], ["team/a"]),
    }
    for what, write in writes.items():
        statements = sent(postgres, write)
        assert len(statements) == 1 and what in statements[0], (what, statements)
    assert db.get_user("alice").password_hash == "hash"  # type: ignore[union-attr]


@pytest.mark.parametrize("count", [1, 100])
def test_recording_objects_is_one_statement(
    db: PostgresDatabase, postgres: PostgresServer, count: int
) -> None:
    db.add_objects([IndexedObject("team/a", oids(1)[0], 7, 1)])
    rows = [IndexedObject("team/a", oid, 5, 2) for oid in oids(count)]
    statements = sent(postgres, lambda: db.add_objects([*rows, rows[-1]]))
    assert len(statements) == 1 and statements[0].startswith("INSERT INTO objects"), statements
    # The row there before stays as it is; every new one (a repeat once) is in.
    expected = {row.oid: row.size for row in rows} | {oids(1)[0]: 7}
    assert db.object_sizes("team/a", oids(count)) == expected


def test_a_write_of_several_statements_is_one_transaction(
    db: PostgresDatabase, postgres: PostgresServer
) -> None:
    statements = sent(
        postgres, lambda: db.create_lock("l1", "team/a", "a.bin", "x", 0, owner_uid="u")
    )
    assert statements[0] == "BEGIN" and statements[-1] == "COMMIT", statements
    assert db.get_lock("team/a", "l1") is not None


def test_an_idle_connection_is_checked_with_a_round_trip(
    db: PostgresDatabase, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_db, "RECHECK_SECONDS", 0.0)
    statements = sent(postgres, lambda: db.get_user("alice"))
    assert statements[0] == POOL_CHECK and "FROM users" in statements[1], statements


def test_a_connection_the_server_closed_is_replaced_at_checkout(
    db: PostgresDatabase, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_db, "RECHECK_SECONDS", 3600.0)  # no empty query to find it
    db.add_user("alice", None, is_admin=False)  # the pool's one connection, just used
    with psycopg.connect(postgres.url("postgres"), autocommit=True) as admin:
        (ended,) = admin.execute(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (db.pool.conninfo.rsplit("/", 1)[1],),
        ).fetchall()
    assert ended == (True,)
    user = db.get_user("alice")  # no error: the pool took a new connection
    assert user is not None and user.name == "alice"


def test_odd_oids_are_not_found_and_break_nothing(db: PostgresDatabase) -> None:
    real = oids(2)
    db.add_objects([IndexedObject("team/a", oid, 5, 1) for oid in real])
    odd = ["", "NULL", "a,b", "}", '"', "\\", "x y", "{" + real[0] + "}", real[1].upper()]
    assert db.object_sizes("team/a", [*odd, *real]) == {real[0]: 5, real[1]: 5}
    assert db.object_sizes("team/a", odd) == {}
