"""Uploading to the bucket takes memory flat in object size (parts are read from the file)."""

from __future__ import annotations

import hashlib
import tracemalloc
from pathlib import Path

from lfs_server.settings import S3Settings
from lfs_server.store.s3_bucket import S3Bucket
from tests.engines.seaweedfs import SeaweedFS

MIB = 1 << 20
PART = 5 * MIB
CONCURRENCY = 4


def zeros_sha256(size: int) -> str:
    digest = hashlib.sha256()
    block = bytes(MIB)
    for _ in range(size // MIB):
        digest.update(block)
    return digest.hexdigest()


def peak_during_put(bucket: S3Bucket, path: Path, size: int) -> int:
    """Python's peak allocation (every thread) while one object is uploaded."""
    oid = zeros_sha256(size)
    with open(path, "wb") as sparse:
        sparse.truncate(size)
    key = bucket.key_for(oid)
    tracemalloc.start()
    try:
        bucket.put_file(key, path, size, oid)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        path.unlink()
    head = bucket.head(key)
    assert head is not None and head.size == size
    bucket.delete(key)
    return peak


def test_upload_memory_does_not_grow_with_object_size(
    seaweedfs: SeaweedFS, s3_env: dict[str, str], tmp_path: Path
) -> None:
    settings = S3Settings(
        bucket=seaweedfs.new_bucket(),
        endpoint=seaweedfs.endpoint,
        addressing="path",
        part_size=PART,
        concurrency=CONCURRENCY,
    )
    bucket = S3Bucket(settings)
    bucket.check()  # the client's first-use set-up is not counted below
    small = peak_during_put(bucket, tmp_path / "small", 64 * MIB)
    large = peak_during_put(bucket, tmp_path / "large", 256 * MIB)
    # Four times the bytes: the peak stays well under what the parts in
    # flight would take if they were held in memory (4 x 5 MiB).
    assert large < small + 4 * MIB, (small, large)
    assert large < CONCURRENCY * PART, (small, large)
