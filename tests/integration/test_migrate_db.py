"""`lfs-server migrate-db`: a single box filled through the real CLI and a
real server on SQLite is copied into a real PostgreSQL; a server started on
it serves the same accounts, tokens, locks, transfer URLs and web sessions.
Running it again is safe; a target holding other data is refused untouched."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import requests

from lfs_server.db.postgres import PostgresDatabase
from lfs_server.migrate_db import TABLES
from lfs_server.tokens import SHARED_SIGNING_KEY
from tests.engines.postgres import PostgresServer, free_port
from tests.integration.helpers import (
    download_action,
    sha256,
    upload,
    web_sign_in,
    web_signed_in,
)
from tests.lfsapi import LockApi
from tests.stack import Stack, run_cli

PASSWORD = "correct horse battery"
# Every table's rows, in an order of their own (the databases sort differently).
Dump = dict[str, list[tuple[Any, ...]]]


@dataclass
class SingleBox:
    """A data dir a server on SQLite filled, with what its clients still hold."""

    stack: Stack
    token: str = ""
    blobs: dict[str, list[bytes]] = field(default_factory=dict)
    download: dict[str, Any] = field(default_factory=dict)
    web: requests.Session = field(default_factory=requests.Session)
    locks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def sqlite_dump(path: Path) -> Dump:
    with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as conn:
        return {t.name: sorted(conn.execute(t.select).fetchall()) for t in TABLES}


def postgres_dump(url: str) -> Dump:
    with psycopg.connect(url) as conn:
        dump = {t.name: sorted(conn.execute(t.select).fetchall()) for t in TABLES}  # type: ignore[call-overload]
        (version,) = conn.execute("SELECT version FROM schema_version").fetchone()  # type: ignore[misc]
        (counter,) = conn.execute("SELECT last_value FROM lock_seq").fetchone()  # type: ignore[misc]
    dump["(schema_version, lock_seq)"] = [(version, counter)]
    return dump


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The error of a failed command: exit code 2, one line, no traceback."""
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("lfs-server: "), done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    return done.stderr


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SingleBox]:
    """Users with passwords, an admin, a token-only user with a token, grants,
    objects in three repositories (one shared by two), locks in two (one
    removed, so the lock counter is past the highest lock), failed and good
    logins, a signed transfer URL and a web session; the server stopped."""
    filled = SingleBox(Stack(tmp_path_factory.mktemp("single-box")).start())
    stack = filled.stack
    try:
        stack.add_user("root", PASSWORD)
        assert (
            stack.cli(
                "user", "add", "ops", "--admin", "--password-stdin", stdin=PASSWORD
            ).returncode
            == 0
        )
        stack.add_user("alice", PASSWORD, ("team/*", "write"), ("other/c", "write"))
        stack.add_user("bob", PASSWORD, ("team/a", "read"))
        assert stack.cli("user", "add", "carol", "--no-password").returncode == 0
        assert stack.cli("grant", "carol", "team/*", "read").returncode == 0
        made = stack.cli("token", "create", "carol", "--note", "ci", "--expires", "90d")
        assert made.returncode == 0, made.stderr
        filled.token = made.stdout.strip()
        shared = os.urandom(3000)
        for repo in ("team/a", "team/b", "other/c"):
            filled.blobs[repo] = [os.urandom(1000 + len(repo)), shared]
            for data in filled.blobs[repo]:
                upload(stack, repo, data, auth=("alice", PASSWORD))
        for repo, paths in (("team/b", ["b.bin"]), ("team/a", ["a/1.bin", "a/2.bin", "a/3.bin"])):
            api = LockApi.over_http(stack, repo, ("alice", PASSWORD))
            for path in paths:
                created = api.create(path)
                assert created.status_code == 201, created.text
            filled.locks[repo] = api.list().json()["locks"]
        newest = filled.locks["team/a"].pop()
        assert LockApi.over_http(stack, "team/a", ("alice", PASSWORD)).unlock(newest["id"]).ok
        for _ in range(3):
            refused = stack.batch(
                "team/a", {"operation": "download", "objects": []}, auth=("bob", "wrong password")
            )
            assert refused.status_code == 401
        filled.download = download_action(stack, "team/a", shared, auth=("bob", PASSWORD))
        web_sign_in(stack, "alice", PASSWORD, filled.web)
        assert web_signed_in(stack, filled.web)
    finally:
        stack.stop()
    yield filled


@pytest.fixture(scope="module")
def target(postgres: PostgresServer) -> str:
    return postgres.new_database()


def files(data_dir: Path) -> dict[str, str]:
    """The data dir's files besides the objects and SQLite's own shared-memory
    and (empty, read-only) log files, by content digest."""
    return {
        path.name: sha256(path.read_bytes())
        for path in data_dir.iterdir()
        if path.is_file() and path.name not in ("lfs.db-shm", "lfs.db-wal")
    }


@pytest.fixture(scope="module")
def migrated(box: SingleBox, target: str) -> subprocess.CompletedProcess[str]:
    before = files(box.stack.data_dir)
    done = box.stack.cli("migrate-db", "--to", target)
    assert files(box.stack.data_dir) == before  # the source is only read
    owner = box.stack.data_dir.stat().st_uid
    assert {path.stat().st_uid for path in box.stack.data_dir.iterdir()} == {owner}
    return done


def test_every_table_is_copied_and_counted(
    box: SingleBox, target: str, migrated: subprocess.CompletedProcess[str]
) -> None:
    assert migrated.returncode == 0, migrated.stderr
    source = sqlite_dump(box.stack.data_dir / "lfs.db")
    for name in (
        "users",
        "tokens",
        "grants",
        "auth_failures",
        "good_logins",
        "locks",
        "objects",
        "upgrades",
    ):
        assert source[name], (
            f"the single box left table {name} empty: the test proves nothing there"
        )
    copied = postgres_dump(target)
    key = (box.stack.data_dir / "secret.key").read_text().strip()
    assert copied["server_keys"] == sorted([*source["server_keys"], (SHARED_SIGNING_KEY, key)])
    for table in TABLES:
        if table.name != "server_keys":
            assert copied[table.name] == source[table.name], table.name
        assert re.search(rf"^{table.name} +{len(copied[table.name])}$", migrated.stdout, re.M), (
            migrated.stdout
        )
    source_uri = f"{(box.stack.data_dir / 'lfs.db').as_uri()}?mode=ro"
    with sqlite3.connect(source_uri, uri=True) as conn:
        (counter,) = conn.execute("SELECT last FROM lock_sequence").fetchone()
    assert counter > max(seq for *_, seq in source["locks"])  # the removed lock's number
    assert copied["(schema_version, lock_seq)"][0][1] == counter
    assert "secret.key" in migrated.stdout


def test_the_schema_is_every_migrated_table_and_no_other(
    target: str, migrated: subprocess.CompletedProcess[str]
) -> None:
    with psycopg.connect(target) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    assert sorted(name for (name,) in rows) == sorted([*(t.name for t in TABLES), "schema_version"])


def test_a_second_run_says_already_migrated_and_changes_nothing(
    box: SingleBox, target: str, migrated: subprocess.CompletedProcess[str]
) -> None:
    before = postgres_dump(target)
    again = box.stack.cli("migrate-db", "--to", target)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("already migrated"), again.stdout
    assert re.search(r"^users +5$", again.stdout, re.M), again.stdout
    assert postgres_dump(target) == before


def test_a_server_on_postgresql_serves_what_the_single_box_held(
    box: SingleBox, target: str, migrated: subprocess.CompletedProcess[str]
) -> None:
    # The same box, its database now in PostgreSQL; no LFS_SECRET_KEY.
    before = postgres_dump(target)
    stack = Stack(box.stack.root, LFS_DATABASE_URL=target).start()
    try:
        for repo, blobs in box.blobs.items():
            for data in blobs:
                action = download_action(stack, repo, data, auth=("alice", PASSWORD))
                fetched = requests.get(action["href"], headers=action["header"], timeout=30)
                assert fetched.status_code == 200 and fetched.content == data
        response = stack.batch(
            "team/b", {"operation": "download", "objects": []}, auth=("carol", box.token)
        )
        assert response.status_code == 200, response.text
        refused = stack.batch(
            "team/b", {"operation": "upload", "objects": []}, auth=("carol", box.token)
        )
        assert refused.status_code == 403, refused.text  # carol's grant came along: read only
        # A transfer URL the SQLite server signed, and alice's web session there.
        path = urlsplit(box.download["href"]).path
        fetched = requests.get(f"{stack.url}{path}", headers=box.download["header"], timeout=30)
        assert fetched.status_code == 200 and sha256(fetched.content) == path.rsplit("/", 1)[-1]
        assert web_signed_in(stack, box.web)
        # The locks, with their ids; a new lock comes after the copied counter.
        api = LockApi.over_http(stack, "team/a", ("alice", PASSWORD))
        assert api.list().json()["locks"] == box.locks["team/a"]
        assert LockApi.over_http(stack, "team/b", ("bob", PASSWORD)).list().status_code == 403
        created = api.create("a/new.bin")
        assert created.status_code == 201, created.text
        assert api.list().json()["locks"] == [*box.locks["team/a"], created.json()["lock"]]
        with psycopg.connect(target) as conn:
            (seq,) = conn.execute(
                "SELECT seq FROM locks WHERE id = %s", (created.json()["lock"]["id"],)
            ).fetchone()  # type: ignore[misc]
        assert seq == before["(schema_version, lock_seq)"][0][1] + 1
        # New users get ids after the copied ones.
        stack.add_user("dave", PASSWORD, ("team/a", "read"))
        ids = {name: uid for uid, _, name, *_ in postgres_dump(target)["users"]}
        assert ids["dave"] > max(uid for uid, *_ in before["users"])
        assert stack.batch(
            "team/a", {"operation": "download", "objects": []}, auth=("dave", PASSWORD)
        ).ok
    finally:
        stack.stop()


def test_a_run_after_the_target_moved_on_is_refused_and_writes_nothing(
    box: SingleBox, target: str, migrated: subprocess.CompletedProcess[str]
) -> None:
    with psycopg.connect(target) as conn:
        conn.execute(
            "INSERT INTO auth_failures (key, count, reset_at) VALUES ('elsewhere', 1, 1e12)"
        )
    before = postgres_dump(target)
    error = one_line_error(box.stack.cli("migrate-db", "--to", target))
    assert "already holds other data (table " in error and "nothing was written" in error
    assert postgres_dump(target) == before


def test_a_target_holding_another_servers_rows_is_refused_untouched(
    box: SingleBox, postgres: PostgresServer
) -> None:
    url = postgres.new_database()
    other = PostgresDatabase(url)
    try:
        other.add_user("mallory", None, is_admin=True)
    finally:
        other.close()
    before = postgres_dump(url)
    error = one_line_error(box.stack.cli("migrate-db", "--to", url))
    assert "(table users differs" in error, error
    assert postgres_dump(url) == before


def test_a_differing_row_is_refused_naming_its_table(
    box: SingleBox, postgres: PostgresServer
) -> None:
    url = postgres.new_database()
    assert box.stack.cli("migrate-db", "--to", url).returncode == 0
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE grants SET access = 'admin' WHERE access = 'read'")
    before = postgres_dump(url)
    error = one_line_error(box.stack.cli("migrate-db", "--to", url))
    assert "(table grants differs" in error, error
    assert postgres_dump(url) == before


def test_a_target_schema_newer_than_this_server_is_refused(
    box: SingleBox, postgres: PostgresServer
) -> None:
    url = postgres.new_database()
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (99)")
    error = one_line_error(box.stack.cli("migrate-db", "--to", url))
    assert "version 99" in error and "newer than this server" in error, error
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(99,)]


SECRET = "s3cr3t-never-shown"


def test_an_unreachable_target_is_one_line_without_the_password(box: SingleBox) -> None:
    port = free_port()
    error = one_line_error(
        box.stack.cli("migrate-db", "--to", f"postgresql://lfs:{SECRET}@127.0.0.1:{port}/lfs")
    )
    assert f"--to: PostgreSQL at 127.0.0.1:{port}/lfs failed: " in error, error
    assert SECRET not in error


@pytest.mark.parametrize(
    "url",
    [
        f"mysql://lfs:{SECRET}@db.example/lfs",
        f"postgresql://lfs:{SECRET}@db.example:99999/lfs",
        f"postgresql://lfs:{SECRET}@db.example/",
        "",
    ],
)
def test_a_url_that_is_no_postgresql_database_is_one_line(box: SingleBox, url: str) -> None:
    error = one_line_error(box.stack.cli("migrate-db", "--to", url))
    assert error.startswith("lfs-server: --to: ") and SECRET not in error, error


@pytest.fixture(scope="module")
def password_role(postgres: PostgresServer) -> Iterator[str]:
    """A role that must give its password (scram) over TCP; its name."""
    role = "migrator"
    with psycopg.connect(postgres.url("postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{SECRET}'")  # type: ignore[call-overload]
    hba = postgres.data_dir / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n{original}")
    with psycopg.connect(postgres.url("postgres"), autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield role
    finally:
        hba.write_text(original)
        with psycopg.connect(postgres.url("postgres"), autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")


def owned_by(postgres: PostgresServer, role: str) -> str:
    url = postgres.new_database()
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(postgres.url("postgres"), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" OWNER TO {role}')  # type: ignore[call-overload]
    return f"postgresql://{role}@127.0.0.1:{postgres.port}/{name}"


def test_the_password_comes_from_the_password_file(
    box: SingleBox, postgres: PostgresServer, password_role: str, tmp_path: Path
) -> None:
    url = owned_by(postgres, password_role)
    secret_file = tmp_path / "password"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o644)  # read by the data dir's owner, whom the command acts as
    tmp_path.chmod(0o755)
    env = {**box.stack.env, "LFS_DATABASE_PASSWORD_FILE": str(secret_file)}
    done = run_cli(env, "migrate-db", "--to", url)
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr
    with psycopg.connect(url, password=SECRET) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (5,)


def test_a_wrong_password_is_one_line_without_it(
    box: SingleBox, postgres: PostgresServer, password_role: str
) -> None:
    url = owned_by(postgres, password_role)
    wrong = "not-the-password-either"
    error = one_line_error(box.stack.cli("migrate-db", "--to", url.replace("@", f":{wrong}@", 1)))
    assert "password authentication failed" in error, error
    assert wrong not in error and SECRET not in error


def test_a_data_dir_without_a_database_is_one_line_and_stays_empty(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    env = {**os.environ, "LFS_DATA_DIR": str(data)}
    error = one_line_error(
        run_cli(env, "migrate-db", "--to", f"postgresql://lfs@127.0.0.1:{free_port()}/lfs")
    )
    assert "LFS_DATA_DIR: no database (lfs.db)" in error, error
    assert list(data.iterdir()) == []


def test_a_key_set_as_a_setting_stays_a_setting(box: SingleBox, postgres: PostgresServer) -> None:
    url = postgres.new_database()
    env = {**box.stack.env, "LFS_SECRET_KEY": "k" * 48}
    done = run_cli(env, "migrate-db", "--to", url)
    assert done.returncode == 0, done.stderr
    assert "LFS_SECRET_KEY, not copied" in done.stdout and "k" * 48 not in done.stdout
    assert postgres_dump(url)["server_keys"] == []
