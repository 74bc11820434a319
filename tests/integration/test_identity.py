"""A user removed and added again under the same name, on the real stack.

Same name, same password, same grants, yet someone else: the transfer
tokens the old user got from the batch API are refused (403), fresh ones
work, and the old user's locks are not "ours" for the newcomer, who cannot
unlock them without force (and force needs admin).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from lfs_server.login_cache import LOGIN_CACHE_SECONDS
from tests.integration.helpers import (
    assert_lfs_error,
    lfs_headers,
    only_object,
    sha256,
    stored_copies,
    verify_action,
)
from tests.stack import LFS_MEDIA_TYPE, Stack

REPO = "ident/proj"
PASSWORD = "pass-word-2468"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("identity"), LFS_ANONYMOUS="none")
    stack.add_user("alice", PASSWORD, (REPO, "write"))
    stack.add_user("carol", PASSWORD, (REPO, "write"))
    stack.add_user("boss", PASSWORD, (REPO, "admin"))
    stack.start()
    yield stack
    stack.stop()


def recreate(stack: Stack, name: str) -> None:
    """Through the CLI, another process: in force once each worker's login
    cache let go of the old user (LOGIN_CACHE_SECONDS)."""
    removed = stack.cli("user", "remove", name)
    assert removed.returncode == 0, removed.stderr
    stack.add_user(name, PASSWORD, (REPO, "write"))
    time.sleep(LOGIN_CACHE_SECONDS)


def actions(stack: Stack, name: str, operation: str, data: bytes) -> dict[str, Any]:
    item = {"oid": sha256(data), "size": len(data)}
    response = stack.batch(REPO, {"operation": operation, "objects": [item]}, auth=(name, PASSWORD))
    return only_object(response, stack)["actions"]


def put(action: dict[str, Any], data: bytes) -> requests.Response:
    return requests.put(action["href"], data=data, headers=action["header"], timeout=30)


def get(action: dict[str, Any]) -> requests.Response:
    return requests.get(action["href"], headers=action["header"], timeout=30)


def verify(action: dict[str, Any], data: bytes) -> requests.Response:
    return requests.post(
        action["href"],
        json={"oid": sha256(data), "size": len(data)},
        headers={**action["header"], "Content-Type": LFS_MEDIA_TYPE},
        timeout=30,
    )


def test_old_transfer_tokens_die_with_the_user(server: Stack) -> None:
    stored, fresh = os.urandom(5000), os.urandom(5001)
    first = actions(server, "alice", "upload", stored)
    assert put(first["upload"], stored).status_code == 200
    assert verify(verify_action(server, first["upload"]), stored).status_code == 200
    old_download = actions(server, "alice", "download", stored)["download"]
    old_upload = actions(server, "alice", "upload", fresh)
    assert get(old_download).content == stored  # works while alice is alice

    recreate(server, "alice")

    body = assert_lfs_error(get(old_download), 403, server)
    assert "alice" in body["message"]
    assert_lfs_error(put(old_upload["upload"], fresh), 403, server)
    assert_lfs_error(verify(verify_action(server, old_upload["upload"]), fresh), 403, server)
    assert stored_copies(server, sha256(fresh)) == []

    new_download = actions(server, "alice", "download", stored)["download"]
    assert get(new_download).content == stored
    new_upload = actions(server, "alice", "upload", fresh)
    assert put(new_upload["upload"], fresh).status_code == 200
    assert verify(verify_action(server, new_upload["upload"]), fresh).status_code == 200


def locks_call(stack: Stack, name: str, suffix: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(
        f"{stack.lfs_base(REPO)}/locks{suffix}",
        json=body,
        headers=lfs_headers(),
        auth=(name, PASSWORD),
        timeout=30,
    )


def test_old_locks_are_not_the_new_users(server: Stack) -> None:
    created = locks_call(server, "carol", "", {"path": "art/hero.psd"})
    assert created.status_code == 201, created.text
    lock = created.json()["lock"]
    assert [mine["id"] for mine in locks_call(server, "carol", "/verify", {}).json()["ours"]] == [
        lock["id"]
    ]

    recreate(server, "carol")

    split = locks_call(server, "carol", "/verify", {}).json()
    assert split["ours"] == []
    assert [theirs["id"] for theirs in split["theirs"]] == [lock["id"]]
    assert split["theirs"][0]["owner"] == {"name": "carol"}
    assert_lfs_error(locks_call(server, "carol", f"/{lock['id']}/unlock", {}), 403, server)
    forced = locks_call(server, "carol", f"/{lock['id']}/unlock", {"force": True})
    assert_lfs_error(forced, 403, server)
    by_admin = locks_call(server, "boss", f"/{lock['id']}/unlock", {"force": True})
    assert by_admin.status_code == 200, by_admin.text
    assert by_admin.json()["lock"]["id"] == lock["id"]
