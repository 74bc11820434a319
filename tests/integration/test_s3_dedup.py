"""One oid in two repositories on S3: one key in the bucket, and a caller of
one repository learns nothing of what the other holds (both transfer modes)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import requests

from tests.integration.helpers import (
    actions_for,
    assert_object_error,
    batch_for,
    only_object,
    sha256,
    upload,
    verify_action,
)
from tests.stack import LFS_MEDIA_TYPE, Stack
from tests.stores import S3_DIRECT, S3_PROXY, StoreEnv

STORES = (S3_PROXY, S3_DIRECT)
PASSWORD = "pass-word-1234"
REPO_A = "dedup/a"
REPO_B = "dedup/b"
ALICE = ("alice", PASSWORD)  # may write dedup/a only
BOB = ("bob", PASSWORD)  # may write dedup/b only


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, store_env: StoreEnv) -> Iterator[Stack]:
    stack = Stack(
        tmp_path_factory.mktemp("dedup"), store_env, LFS_ANONYMOUS="none", **store_env.env
    )
    stack.add_user(*ALICE, (REPO_A, "write"))
    stack.add_user(*BOB, (REPO_B, "write"))
    stack.start()
    yield stack
    stack.stop()


def verify_without_upload(stack: Stack, data: bytes) -> requests.Response:
    actions = actions_for(stack, REPO_A, "upload", data, auth=ALICE)
    action = actions.get("verify") or verify_action(stack, actions["upload"])
    return requests.post(
        action["href"],
        json={"oid": sha256(data), "size": len(data)},
        headers={**action["header"], "Content-Type": LFS_MEDIA_TYPE},
        timeout=30,
    )


def shape(obj: dict) -> dict:
    """What an answer says about an object, without its oid or signed hrefs."""
    return {
        "keys": sorted(obj),
        "actions": sorted(obj.get("actions", {})),
        "error": obj.get("error"),
    }


def test_one_oid_in_two_repositories_is_stored_once_and_never_leaks(server: Stack) -> None:
    assert server.bucket is not None
    data, unknown = os.urandom(50_000), os.urandom(50_000)
    oid = sha256(data)
    key = f"{oid[:2]}/{oid[2:4]}/{oid}"
    upload(server, REPO_B, data, auth=BOB)
    assert server.bucket.keys_named(oid) == [key]

    # Alice may write dedup/a only: for an oid only dedup/b holds she hears
    # what she hears for an oid nobody holds.
    held = only_object(batch_for(server, REPO_A, "download", data, auth=ALICE), server)
    assert_object_error(held, 404)
    nowhere = only_object(batch_for(server, REPO_A, "download", unknown, auth=ALICE), server)
    assert held["error"] == nowhere["error"]
    offered = only_object(batch_for(server, REPO_A, "upload", data, auth=ALICE), server)
    # verify only where the body goes to the bucket itself; a proxied PUT commits
    expected = {"upload", "verify"} if server.store.direct else {"upload"}
    assert set(offered["actions"]) == expected, offered
    assert shape(offered) == shape(
        only_object(batch_for(server, REPO_A, "upload", unknown, auth=ALICE), server)
    )
    # Nor can she claim it without sending its bytes.
    assert verify_without_upload(server, data).status_code == 404

    upload(server, REPO_A, data, auth=ALICE)
    for repo, auth in ((REPO_A, ALICE), (REPO_B, BOB)):
        download = actions_for(server, repo, "download", data, auth=auth)["download"]
        got = requests.get(download["href"], headers=download["header"], timeout=30)
        assert got.status_code == 200 and got.content == data
    # Stored once: one key, and no upload key left over in direct mode.
    assert server.bucket.keys_named(oid) == [key]
    assert server.bucket.keys() == [key]
