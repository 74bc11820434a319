"""The real stack (`lfs-server serve`) on PostgreSQL: accounts, the object
index and locks live in the database, shared by two servers on it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests

from tests.engines.postgres import PostgresServer
from tests.integration.helpers import download_action, sha256, upload
from tests.stack import LFS_MEDIA_TYPE, Stack

REPO = "team/proj"
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def database(postgres: PostgresServer) -> str:
    return postgres.new_database()


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, database: str) -> Iterator[list[Stack]]:
    # No LFS_SECRET_KEY: the servers share the signing key kept in the database.
    env = {"LFS_DATABASE_URL": database}
    stacks: list[Stack] = []
    try:
        for name in ("a", "b"):
            stacks.append(Stack(tmp_path_factory.mktemp(f"replica-{name}"), **env).start())
        stacks[0].add_user("alice", PASSWORD, ("team/*", "write"))
        yield stacks
    finally:
        for stack in stacks:
            stack.stop()


def lock(stack: Stack, path: str) -> requests.Response:
    return requests.post(
        f"{stack.lfs_base(REPO)}/locks",
        json={"path": path},
        headers={"Accept": LFS_MEDIA_TYPE, "Content-Type": LFS_MEDIA_TYPE},
        auth=("alice", PASSWORD),
        timeout=30,
    )


def test_push_and_fetch_with_the_index_in_postgresql(replicas: list[Stack], database: str) -> None:
    first, _ = replicas
    data = os.urandom(100_000)
    upload(first, REPO, data, auth=("alice", PASSWORD))
    action = download_action(first, REPO, data, auth=("alice", PASSWORD))
    fetched = requests.get(action["href"], headers=action.get("header", {}), timeout=30)
    assert fetched.status_code == 200 and fetched.content == data
    with psycopg.connect(database) as conn:
        rows = conn.execute("SELECT repo, oid, size FROM objects").fetchall()
        users = conn.execute("SELECT name FROM users").fetchall()
    assert rows == [(REPO, sha256(data), len(data))]
    assert users == [("alice",)]
    assert not Path(first.data_dir / "lfs.db").exists()


def test_a_second_server_shares_accounts_and_locks(replicas: list[Stack]) -> None:
    first, second = replicas
    created = lock(first, "shared.bin")
    assert created.status_code == 201, created.text
    again = lock(second, "shared.bin")  # alice logs in there too: the same users
    assert again.status_code == 409, again.text
    assert again.json()["lock"] == created.json()["lock"]
