"""A small upload is linked first, then fsynced with its names in one wait.

Until that wait is over its name may lead to bytes not yet on disk (after a
power loss: a short or empty file). No index row names it before put()
returns, and an upload that finds the name taken checks what is there,
keeps it only if it is the object (fsynced), and replaces it otherwise.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from lfs_server.store import LocalStore
from lfs_server.store.verify import SMALL_UPLOAD
from tests.local_put import put

# (what was fsynced: a folder with the names it held, or a file by inode)
Fsync = tuple[str, object]


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[Fsync]:
    seen: list[Fsync] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        real_fsync(fd)
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if path.is_dir():
            seen.append((str(path), set(os.listdir(path))))
        else:
            seen.append(("file", os.fstat(fd).st_ino))

    monkeypatch.setattr(os, "fsync", recording_fsync)
    return seen


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    (tmp_path / "tmp").mkdir()
    (tmp_path / "objects").mkdir()
    return LocalStore(tmp_path / "objects", tmp_path / "tmp")


def test_a_small_upload_is_durable_when_put_returns(store: LocalStore, fsyncs: list[Fsync]) -> None:
    data = os.urandom(16 << 10)
    assert put(store, data) is True
    final = store.path(hashlib.sha256(data).hexdigest())
    assert final.read_bytes() == data
    assert ("file", final.stat().st_ino) in fsyncs  # its data
    folders = {path: names for path, names in fsyncs if path != "file"}
    assert final.name in folders[str(final.parent)]  # its name
    assert final.parent.name in folders[str(final.parent.parent)]  # its new folders
    assert final.parent.parent.name in folders[str(store.root)]


@pytest.mark.parametrize(
    "damage",
    [b"", b"short", b"x" * (16 << 10)],
    ids=["empty (lost in a power loss)", "short", "same size, other bytes"],
)
def test_a_damaged_copy_under_the_name_is_replaced(
    store: LocalStore, fsyncs: list[Fsync], damage: bytes
) -> None:
    data = os.urandom(16 << 10)
    final = store.path(hashlib.sha256(data).hexdigest())
    final.parent.mkdir(parents=True)
    final.write_bytes(damage)
    assert put(store, data) is True
    assert final.read_bytes() == data
    assert ("file", final.stat().st_ino) in fsyncs
    assert {p.name for p in final.parent.iterdir()} == {final.name}  # no spare name left


def test_a_symlink_under_the_name_is_replaced(store: LocalStore, tmp_path: Path) -> None:
    data = os.urandom(1000)
    final = store.path(hashlib.sha256(data).hexdigest())
    final.parent.mkdir(parents=True)
    (tmp_path / "elsewhere").write_bytes(data)
    final.symlink_to(tmp_path / "elsewhere")
    assert put(store, data) is True
    assert not final.is_symlink() and final.read_bytes() == data


def test_a_good_copy_under_the_name_is_kept_and_made_durable(
    store: LocalStore, fsyncs: list[Fsync]
) -> None:
    """What a first writer still on its way to its fsync has linked: the object."""
    data = os.urandom(16 << 10)
    final = store.path(hashlib.sha256(data).hexdigest())
    final.parent.mkdir(parents=True)
    final.write_bytes(data)
    first = final.stat().st_ino
    assert put(store, data) is False
    assert final.stat().st_ino == first
    assert ("file", first) in fsyncs


def test_a_large_copy_of_the_right_size_is_trusted(store: LocalStore) -> None:
    """Large uploads are fsynced before they are linked: their names lead to durable bytes."""
    data = os.urandom(SMALL_UPLOAD)
    final = store.path(hashlib.sha256(data).hexdigest())
    final.parent.mkdir(parents=True)
    final.write_bytes(data)
    first = final.stat().st_ino
    assert put(store, data) is False
    assert final.stat().st_ino == first
