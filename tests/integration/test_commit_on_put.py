"""An upload through the server is committed by its PUT: no verify action.

The PUT's 200 comes only once the object is verified (size and SHA-256),
durable and the repository's, so the batch offers no verify action for it
(git-lfs then sends none) and the object is downloadable the moment the PUT
has answered. Direct S3 uploads go to the bucket itself and still need the
verify call that checks and commits them.
"""

from __future__ import annotations

import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.integration.helpers import (
    actions_for,
    assert_object_error,
    batch_for,
    download_action,
    only_object,
    put_action,
    sha256,
    stored_copies,
)
from tests.stack import Stack
from tests.stores import LOCAL, S3_DIRECT, S3_PROXY

STORES = (LOCAL, S3_PROXY, S3_DIRECT)
REPO = "commit/proj"


def index_rows(stack: Stack, oid: str) -> list[tuple[str, int]]:
    with sqlite3.connect(stack.data_dir / "lfs.db") as db:
        return db.execute("SELECT repo, size FROM objects WHERE oid = ?", (oid,)).fetchall()


def test_an_upload_is_downloadable_as_soon_as_its_put_answers(stack: Stack) -> None:
    data = os.urandom(16 << 10)
    oid = sha256(data)
    actions = actions_for(stack, REPO, "upload", data)
    if stack.store.direct:
        assert set(actions) == {"upload", "verify"}
        assert put_action(actions["upload"], data).status_code == 200
        # in the bucket, not yet checked: invisible until verify
        assert_object_error(only_object(batch_for(stack, REPO, "download", data), stack), 404)
        assert index_rows(stack, oid) == []
        return
    assert set(actions) == {"upload"}
    assert put_action(actions["upload"], data).status_code == 200
    # No verify call: the PUT's answer means stored, checked and this repository's.
    assert index_rows(stack, oid) == [(REPO, len(data))]
    assert len(stored_copies(stack, oid)) == 1
    download = download_action(stack, REPO, data)
    got = requests.get(download["href"], headers=download["header"], timeout=30)
    assert got.status_code == 200 and got.content == data
    again = only_object(batch_for(stack, REPO, "upload", data), stack)
    assert "actions" not in again  # done


def test_many_small_uploads_at_once_are_each_committed(stack: Stack) -> None:
    """Concurrent commits share their index writes; every one is still there."""
    blobs = [os.urandom(4096 + n) for n in range(24)]
    body = {"operation": "upload", "objects": [{"oid": sha256(b), "size": len(b)} for b in blobs]}
    answer = stack.batch(REPO, body)
    assert answer.status_code == 200
    if stack.store.direct:  # bodies go to the bucket: each needs its verify call
        assert all(set(o["actions"]) == {"upload", "verify"} for o in answer.json()["objects"])
        return
    offered = {obj["oid"]: obj["actions"]["upload"] for obj in answer.json()["objects"]}
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda b: put_action(offered[sha256(b)], b).status_code, blobs))
    assert statuses == [200] * len(blobs)
    for blob in blobs:
        assert index_rows(stack, sha256(blob)) == [(REPO, len(blob))]
        download = download_action(stack, REPO, blob)
        assert (
            requests.get(download["href"], headers=download["header"], timeout=30).content == blob
        )
