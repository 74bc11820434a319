"""An upload whose fsync fails leaves no name behind.

Linux reports a write-back error to one fsync only: a later fsync of the
same file succeeds while the disk may hold other bytes. A name left in
place after a failed commit would be found by the next upload of the oid,
read back right from the page cache, fsynced "successfully" and trusted.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from lfs_server.store import LocalStore
from lfs_server.store import local as local_store
from lfs_server.store.base import CommitError
from lfs_server.store.verify import SMALL_UPLOAD
from tests.local_put import put


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    (tmp_path / "tmp").mkdir()
    (tmp_path / "objects").mkdir()
    return LocalStore(tmp_path / "objects", tmp_path / "tmp")


@pytest.fixture
def failing_fsync(monkeypatch: pytest.MonkeyPatch) -> list[int | None]:
    """The next fsync_together fails with EIO (as a disk write-back error); the ones after pass."""
    calls: list[int | None] = []
    real = local_store.fsync_together

    def fsync_together(fd: int | None, folders: Sequence[Path]) -> None:
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(errno.EIO, "Input/output error")
        real(fd, folders)

    monkeypatch.setattr(local_store, "fsync_together", fsync_together)
    return calls


@pytest.mark.parametrize("size", [16 << 10, SMALL_UPLOAD], ids=["small", "large"])
def test_a_failed_fsync_takes_the_new_name_back(
    store: LocalStore, failing_fsync: list[int | None], size: int
) -> None:
    data = os.urandom(size)
    final = store.path(hashlib.sha256(data).hexdigest())
    with pytest.raises(CommitError) as failed:
        put(store, data)
    assert failed.value.status == 500
    assert not final.exists()
    # The next upload stores (and fsyncs) its own copy instead of trusting one.
    assert put(store, data) is True
    assert final.read_bytes() == data
    if size < SMALL_UPLOAD:
        assert failing_fsync[-1] is not None  # its data was fsynced with its name


def test_a_failed_fsync_after_a_replace_takes_the_name_back(
    store: LocalStore, failing_fsync: list[int | None]
) -> None:
    data = os.urandom(16 << 10)
    final = store.path(hashlib.sha256(data).hexdigest())
    final.parent.mkdir(parents=True)
    final.write_bytes(b"short")
    with pytest.raises(CommitError):
        put(store, data)
    assert not final.exists()
    assert list(final.parent.iterdir()) == []  # no spare name either
    assert put(store, data) is True
    assert final.read_bytes() == data


def test_a_kept_copy_is_not_taken_back(store: LocalStore, failing_fsync: list[int | None]) -> None:
    """A name this upload did not make (the object, linked by another) stays."""
    data = os.urandom(16 << 10)
    final = store.path(hashlib.sha256(data).hexdigest())
    final.parent.mkdir(parents=True)
    final.write_bytes(data)
    with pytest.raises(CommitError):
        put(store, data)
    assert final.read_bytes() == data
