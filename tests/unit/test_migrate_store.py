"""migrate-store's plan, without a bucket: what the local store holds, and which
objects the bucket's listing already has (one listing merged with the scan)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from lfs_server.migrate_store import (
    OLD_LAYOUT,
    MigrationError,
    Result,
    survey,
    with_listed_sizes,
)
from lfs_server.store.local import LocalStore
from lfs_server.store.s3_bucket import Listed, S3Bucket


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put(store: LocalStore, data: bytes) -> str:
    oid = sha(data)
    store.path(oid).parent.mkdir(parents=True, exist_ok=True)
    store.path(oid).write_bytes(data)
    return oid


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    (tmp_path / "objects").mkdir()
    return LocalStore(tmp_path / "objects", tmp_path / "tmp")


class Listing(S3Bucket):
    """A bucket whose listing is given (key_for and oid_for are the real ones)."""

    def __init__(self, prefix: str, listed: list[Listed]) -> None:
        self.prefix = prefix
        self.listed = listed
        self.lists = 0

    def list_keys(self) -> Iterator[Listed]:
        self.lists += 1
        yield from sorted(self.listed)


@pytest.mark.parametrize("prefix", ["", "lfs/"])
def test_the_listing_says_which_objects_are_there_and_their_sizes(
    store: LocalStore, prefix: str
) -> None:
    oids = sorted(put(store, bytes([n]) * (n + 1)) for n in range(6))
    bucket = Listing(prefix, [])
    bucket.listed = [
        Listed(bucket.key_for(oids[1]), 2, "e1"),
        Listed(bucket.key_for(oids[2]), 999, "e2"),  # another size
        Listed(bucket.key_for(oids[5]), 6, "e5"),
        # Not objects: quarantine, pending direct uploads, the probe, strays.
        Listed(f"{prefix}quarantine/{bucket.key_for(oids[0])[len(prefix) :]}.stamp", 1, "q"),
        Listed(f"{prefix}uploads/{oids[3]}/0123", 4, "u"),
        Listed(f"{prefix}.checksum-probe-00", 64, "p"),
        Listed(f"{prefix}{oids[4][:2]}/{oids[4]}", 5, "s"),
    ]
    pairs = [(item.oid, listed) for item, listed in with_listed_sizes(store.scan(), bucket)]
    sizes = [None, 2, 999, None, None, 6]
    assert pairs == list(zip(oids, sizes, strict=True))
    assert bucket.lists == 1


def test_survey_counts_objects_and_leaves_strays_alone(store: LocalStore) -> None:
    put(store, b"one")
    put(store, b"")
    (store.root / "stray.txt").write_text("not an object")
    result = survey(store)
    assert (result.objects, result.bytes, result.strays) == (2, 3, 1)


def test_an_older_layout_is_refused_before_anything_is_copied(store: LocalStore) -> None:
    oid = sha(b"old")
    old = store.root / "team" / "proj.git" / oid[:2] / oid[2:4] / oid
    old.parent.mkdir(parents=True)
    old.write_bytes(b"old")
    with pytest.raises(MigrationError) as raised:
        survey(store)
    assert str(raised.value) == OLD_LAYOUT
    assert OLD_LAYOUT.startswith("LFS_DATA_DIR: ")


@pytest.mark.parametrize(
    ("result", "code"),
    [
        (Result(copied=3, skipped=2), 0),
        (Result(copied=3, failed=[("a" * 64, "content does not match its oid")]), 1),
        (Result(copied=1, stopped="LFS_S3_ENDPOINT: cannot reach it"), 2),
        (Result(copied=1, interrupted=True, stopped="x", failed=[("a" * 64, "x")]), 130),
    ],
)
def test_exit_codes(result: Result, code: int) -> None:
    assert result.exit_code == code
