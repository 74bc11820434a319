"""The S3 server stopped in the middle of a real `git lfs push`, then started
again: batch keeps answering from the index, transfers get errors git-lfs
retries, /healthz names the bucket, and the push completes with nothing
partial left. Measured behaviour is printed (`pytest -s` or `-rP` shows it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
import requests

from tests.engines.seaweedfs import SeaweedFS
from tests.gitclient import GitUser
from tests.integration.helpers import (
    access_log,
    actions_for,
    assert_lfs_error,
    batch_objects,
    log_size,
    put_action,
    sha256,
    wait_until,
)
from tests.stack import Stack
from tests.stores import S3_PROXY, BucketView

STORES = (S3_PROXY,)
REPO = "team/s3-faults"
MIB = 1 << 20
FILES = 24


def healthz(stack: Stack) -> requests.Response:
    return requests.get(f"{stack.url}/healthz", timeout=10)


def batch_all(stack: Stack, operation: str, blobs: list[bytes]) -> list[dict]:
    body = {
        "operation": operation,
        "objects": [{"oid": sha256(blob), "size": len(blob)} for blob in blobs],
    }
    return batch_objects(stack.batch(REPO, body), stack)


def test_bucket_down_during_a_push(
    stack: Stack, seaweedfs: SeaweedFS, tmp_path_factory: pytest.TempPathFactory
) -> None:
    bucket = stack.bucket
    assert isinstance(bucket, BucketView)
    root = tmp_path_factory.mktemp("push")
    user = GitUser(root / "home")
    work = user.new_repo(root / "work", stack.lfs_base(REPO), root / "remote.git")
    # One transfer at a time, so the push is surely in flight when the bucket
    # goes; retries enough to outlast a restart (each waits Retry-After).
    user.git("config", "lfs.concurrenttransfers", "1", cwd=work)
    user.git("config", "lfs.transfer.maxretries", "30", cwd=work)
    blobs = [os.urandom(2 * MIB) for _ in range(FILES)]
    user.commit_files(work, {f"f{n:02d}.bin": blob for n, blob in enumerate(blobs)})
    oids = {sha256(blob) for blob in blobs}
    keys = {f"{oid[:2]}/{oid[2:4]}/{oid}" for oid in oids}

    before = log_size(stack)
    pushed: list[subprocess.CompletedProcess[str]] = []
    push = threading.Thread(
        target=lambda: pushed.append(
            user.run("git", "push", "-q", "origin", "main", cwd=work, check=False)
        )
    )
    push.start()
    stopped = False
    try:
        assert wait_until(lambda: keys & set(bucket.keys()), timeout=60, step=0.02), (
            "no object reached the bucket"
        )
        seaweedfs.stop()
        stopped = True
        assert push.is_alive(), "the push ended before the bucket went down"

        down = healthz(stack)
        assert down.status_code == 503, down.text
        assert "bucket" in down.json()["message"], down.text
        assert down.json()["checks"]["bucket"] != "ok", down.text

        # Batch answers from the index alone: 200, never a 5xx.
        for operation in ("download", "upload"):
            objects = batch_all(stack, operation, blobs)
            assert len(objects) == FILES, objects
        # A download of an object stored before is a retryable error.
        stored = [obj for obj in batch_all(stack, "download", blobs) if "actions" in obj]
        assert stored, "no object was indexed before the bucket went down"
        get = stored[0]["actions"]["download"]
        unavailable = requests.get(get["href"], headers=get["header"], timeout=30)
        assert_lfs_error(unavailable, 503, stack)
        assert unavailable.headers.get("Retry-After", "").isdigit(), unavailable.headers
        fresh = os.urandom(1000)
        actions = actions_for(stack, REPO, "upload", fresh)
        refused = put_action(actions["upload"], fresh)
        assert_lfs_error(refused, 503, stack)
        assert refused.headers.get("Retry-After", "").isdigit(), refused.headers

        def push_got_a_503() -> bool:
            return any(
                method == "PUT" and status == 503 and uri.rsplit("/", 1)[-1] in oids
                for method, uri, status in access_log(stack, before)
            )

        assert wait_until(push_got_a_503, timeout=60), "the push never met the stopped bucket"
    finally:
        if stopped:
            seaweedfs.start()
    assert wait_until(lambda: healthz(stack).status_code == 200, timeout=30), healthz(stack).text
    push.join(timeout=300)
    assert not push.is_alive(), "the push did not finish"
    (done,) = pushed
    assert done.returncode == 0, done.stdout + done.stderr

    log = access_log(stack, before)
    retried = [uri for method, uri, status in log if method == "PUT" and status == 503]
    print(f"\npush of {FILES} x 2 MiB: {len(retried)} PUTs answered 503 while the bucket was down")
    batches = [status for method, uri, status in log if uri.endswith("/objects/batch")]
    assert batches and max(batches) < 500, batches

    # Nothing partial: every object under its key with its bytes, each indexed.
    stored = set(bucket.keys())
    assert keys <= stored, keys - stored
    for oid in oids:
        assert sha256(bucket.read(f"{oid[:2]}/{oid[2:4]}/{oid}")) == oid
    assert all("download" in obj.get("actions", {}) for obj in batch_all(stack, "download", blobs))
    fsck = subprocess.run(
        [sys.executable, "-m", "lfs_server.cli", "fsck"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert "corrupted: 0; quarantined: 0; missing: 0; not indexed: 0" in fsck.stdout, fsck.stdout
