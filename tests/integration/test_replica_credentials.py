"""Credentials changed through one replica are refused by every other within
the login cache's bound.

Two servers on one PostgreSQL database. Replica B runs one gunicorn worker,
so the successful login each test makes there first is certainly in the
cache of the worker that answers next. Then the credential changes through
replica A (its CLI or its web pages), and no request B receives later than
LOGIN_CACHE_SECONDS after the change is accepted (not the password check's
30 s cache); transfer URLs B signed before are refused at once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from lfs_server.login_cache import LOGIN_CACHE_SECONDS
from tests.engines.postgres import PostgresServer
from tests.integration.helpers import (
    UI,
    csrf_of,
    download_action,
    upload,
    web_sign_in,
    web_signed_in,
)
from tests.stack import LFS_MEDIA_TYPE, Stack

REPO = "team/creds"
PASSWORD = "correct horse battery"
NEW_PASSWORD = "a different horse entirely"
ADMIN = ("root", "admin password 9876")
# Answers before the change: each renews B's cached success (one suffices).
WARM_UP = 3
# Answers once one was refused: every one must be refused too.
AFTER = 5
# 401, or 429 once the refusals filled the brake (they count as failures).
REFUSED = (401, 429)
# Between the change's commit and this process seeing its command return.
CLOCK_SLACK = 0.1


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer
) -> Iterator[list[Stack]]:
    env = {"LFS_DATABASE_URL": postgres.new_database()}
    stacks: list[Stack] = []
    try:
        stacks.append(Stack(tmp_path_factory.mktemp("replica-a"), **env).start())
        stacks.append(Stack(tmp_path_factory.mktemp("replica-b"), LFS_WORKERS="1", **env).start())
        done = stacks[0].cli("user", "add", ADMIN[0], "--admin", "--password-stdin", stdin=ADMIN[1])
        assert done.returncode == 0, done.stderr
        yield stacks
    finally:
        for stack in stacks:
            stack.stop()


def list_locks(stack: Stack, auth: tuple[str, str]) -> int:
    """The status of a lock listing: a git API request that checks the credentials."""
    response = requests.get(
        f"{stack.lfs_base(REPO)}/locks", headers={"Accept": LFS_MEDIA_TYPE}, auth=auth, timeout=30
    )
    return response.status_code


def warm(stack: Stack, auth: tuple[str, str]) -> None:
    statuses = [list_locks(stack, auth) for _ in range(WARM_UP)]
    assert statuses == [200] * WARM_UP, statuses


def refused(stack: Stack, auth: tuple[str, str]) -> list[int]:
    return [list_locks(stack, auth) for _ in range(AFTER)]


def refused_after(stack: Stack, auth: tuple[str, str], changed_at: float) -> None:
    """`stack` refuses `auth` from LOGIN_CACHE_SECONDS after the change on, at
    the latest: an answer may accept it only if its request left before then."""
    bound = changed_at + LOGIN_CACHE_SECONDS + CLOCK_SLACK
    while True:
        sent = time.monotonic()
        status = list_locks(stack, auth)
        if status in REFUSED:
            break
        assert status == 200 and sent < bound, (status, sent - changed_at)
        time.sleep(0.05)
    assert all(status in REFUSED for status in refused(stack, auth))


def cli(stack: Stack, *args: str, stdin: str = "") -> str:
    done = stack.cli(*args, stdin=stdin)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_password_changed_with_one_replicas_cli_is_refused_by_another(pair: list[Stack]) -> None:
    a, b = pair
    a.add_user("carol", PASSWORD, (REPO, "write"))
    warm(b, ("carol", PASSWORD))
    cli(a, "user", "passwd", "carol", "--password-stdin", stdin=NEW_PASSWORD + "\n")
    refused_after(b, ("carol", PASSWORD), time.monotonic())
    assert list_locks(b, ("carol", NEW_PASSWORD)) == 200


def test_a_password_reset_on_one_replicas_web_page_is_refused_by_another(
    pair: list[Stack],
) -> None:
    a, b = pair
    a.add_user("dora", PASSWORD, (REPO, "write"))
    warm(b, ("dora", PASSWORD))
    dora_on_b = web_sign_in(b, "dora", PASSWORD)
    assert web_signed_in(b, dora_on_b)
    admin_on_a = web_sign_in(a, *ADMIN)
    users_page = admin_on_a.get(f"{a.url}{UI}/admin/users", timeout=10).text
    reset = admin_on_a.post(
        f"{a.url}{UI}/admin/users",
        data={
            "csrf": csrf_of(users_page),
            "action": "password",
            "name": "dora",
            "password": NEW_PASSWORD,
        },
        timeout=30,
    )
    changed_at = time.monotonic()
    assert reset.status_code == 200 and "is reset" in reset.text, reset.text[:500]
    refused_after(b, ("dora", PASSWORD), changed_at)
    assert not web_signed_in(b, dora_on_b)  # the web session on B ended too
    assert list_locks(b, ("dora", NEW_PASSWORD)) == 200


def test_a_user_removed_on_one_replica_is_refused_by_another(pair: list[Stack]) -> None:
    a, b = pair
    a.add_user("emil", PASSWORD, (REPO, "write"))
    token = cli(a, "token", "create", "emil").strip()
    data = b"emil's object" * 1000
    upload(b, REPO, data, auth=("emil", PASSWORD))
    href = download_action(b, REPO, data, auth=("emil", PASSWORD))
    warm(b, ("emil", PASSWORD))
    warm(b, ("emil", token))
    cli(a, "user", "remove", "emil")
    changed_at = time.monotonic()
    # The transfer URL B signed for emil before goes dead with him, at once.
    fetched = requests.get(href["href"], headers=href["header"], timeout=30)
    assert fetched.status_code == 403, fetched.text[:300]
    refused_after(b, ("emil", PASSWORD), changed_at)
    refused_after(b, ("emil", token), changed_at)


def test_a_token_revoked_on_one_replica_is_refused_by_another(pair: list[Stack]) -> None:
    a, b = pair
    a.add_user("fay", PASSWORD, (REPO, "write"))
    token = cli(a, "token", "create", "fay").strip()
    token_id = token.split("_")[1]
    warm(b, ("fay", token))
    cli(a, "token", "revoke", token_id)
    refused_after(b, ("fay", token), time.monotonic())
    assert list_locks(b, ("fay", PASSWORD)) == 200  # the password was not touched
