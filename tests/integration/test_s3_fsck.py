"""`lfs-server fsck` on the S3 store: the bucket and the object index reconciled
both ways, corrupted keys moved aside under quarantine/, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.engines.seaweedfs import free_ports
from tests.integration.helpers import (
    assert_object_error,
    batch_for,
    only_object,
    sha256,
    upload,
)
from tests.stack import Stack
from tests.stores import S3_PROXY, BucketView

STORES = (S3_PROXY,)
REPO = "team/fsck"


def key_for(oid: str) -> str:
    return f"{oid[:2]}/{oid[2:4]}/{oid}"


def flipped(data: bytes) -> bytes:
    changed = bytearray(data)
    changed[len(changed) // 2] ^= 0x01
    return bytes(changed)


def fsck(stack: Stack, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lfs_server.cli", "fsck"],
        env={**stack.env, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_fsck_reconciles_the_bucket_with_the_index(stack: Stack) -> None:
    bucket = stack.bucket
    assert isinstance(bucket, BucketView)
    put = bucket.client.put_object
    good, corrupt, lost, unindexed = (os.urandom(5000 + n) for n in range(4))
    for data in (good, corrupt, lost):
        upload(stack, REPO, data)
    # Behind the server's back: wrong bytes under an oid's key, a key deleted,
    # an object no row names, a stray key, and a direct upload awaiting verify.
    put(Bucket=bucket.name, Key=key_for(sha256(corrupt)), Body=flipped(corrupt))
    bucket.client.delete_object(Bucket=bucket.name, Key=key_for(sha256(lost)))
    put(Bucket=bucket.name, Key=key_for(sha256(unindexed)), Body=unindexed)
    put(Bucket=bucket.name, Key="stray.txt", Body=b"not an object")
    pending = f"uploads/{sha256(good)}/0123abcd"
    put(Bucket=bucket.name, Key=pending, Body=good)

    done = fsck(stack)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    out = done.stdout
    assert f"corrupted: {REPO}: {key_for(sha256(corrupt))}: SHA-256 mismatch" in out, out
    assert "corrupted: (no repository): stray.txt: unexpected key in the bucket" in out, out
    assert f"missing: {REPO}: {sha256(lost)} ({len(lost)} bytes)" in out, out
    assert f"not indexed: {key_for(sha256(unindexed))} ({len(unindexed)} bytes)" in out, out
    assert "corrupted: 2; quarantined: 2; missing: 1; not indexed: 1" in out, out

    keys = bucket.keys()
    moved = [key for key in keys if key.startswith("quarantine/")]
    assert len(moved) == 2, keys
    (aside,) = [key for key in moved if key.startswith(f"quarantine/{key_for(sha256(corrupt))}.")]
    assert bucket.read(aside) == flipped(corrupt)  # moved aside, every byte kept
    assert key_for(sha256(corrupt)) not in keys and "stray.txt" not in keys
    assert {key_for(sha256(good)), key_for(sha256(unindexed)), pending} <= set(keys)

    # The quarantined and the missing object left the index: a push uploads them again.
    for data in (corrupt, lost):
        assert_object_error(only_object(batch_for(stack, REPO, "download", data), stack), 404)
        assert "upload" in only_object(batch_for(stack, REPO, "upload", data), stack)["actions"]
    assert "download" in only_object(batch_for(stack, REPO, "download", good), stack)["actions"]

    again = fsck(stack)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "corrupted: 0; quarantined: 0; missing: 0; not indexed: 1" in again.stdout


def test_an_unreachable_bucket_is_one_line_and_exit_2(stack: Stack) -> None:
    done = fsck(stack, LFS_S3_ENDPOINT=f"http://127.0.0.1:{free_ports(1)[0]}")
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("lfs-server: fsck: LFS_STORE=s3: "), lines
    assert "LFS_S3_ENDPOINT: cannot reach" in lines[0], lines
    assert "Traceback" not in done.stdout + done.stderr
