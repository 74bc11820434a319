from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lfs_server.prehash import Prehasher, ask_digest
from lfs_server.store import LocalStore
from lfs_server.store import local as local_store


@pytest.fixture
def prehasher(tmp_path: Path) -> Iterator[Prehasher]:
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    hasher = Prehasher(uploads, tmp_path / "prehash.sock")
    hasher.start()
    yield hasher
    hasher.stop()


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def followed_offset(hasher: Prehasher, path: Path) -> int:
    followed = hasher._files.get(str(path))
    return -1 if followed is None else followed.offset


def test_hashes_a_file_while_it_grows(prehasher: Prehasher) -> None:
    path = prehasher.upload_dir / "0000000001"
    parts = [os.urandom(300_000) for _ in range(4)]
    with open(path, "wb") as out:
        for written, part in enumerate(parts, start=1):
            out.write(part)
            out.flush()
            size = written * len(part)
            assert wait_for(lambda size=size: followed_offset(prehasher, path) == size)
    data = b"".join(parts)
    assert (
        ask_digest(str(prehasher.socket_path), path, len(data)) == hashlib.sha256(data).hexdigest()
    )


def test_refuses_what_it_cannot_vouch_for(prehasher: Prehasher, tmp_path: Path) -> None:
    socket_path = str(prehasher.socket_path)
    path = prehasher.upload_dir / "0000000002"
    path.write_bytes(b"12345")
    assert wait_for(lambda: followed_offset(prehasher, path) == 5)
    assert ask_digest(socket_path, path, 4) is None  # not the size nginx received
    assert ask_digest(socket_path, prehasher.upload_dir / "0000000009", 5) is None  # unknown
    other = prehasher.upload_dir / "healthz-abc"  # not an nginx temp file: never followed
    other.write_bytes(b"x")
    time.sleep(0.1)
    assert ask_digest(socket_path, other, 1) is None
    assert ask_digest(str(tmp_path / "no.sock"), path, 5) is None  # no Prehasher at all


def test_forgets_removed_and_replaced_files(prehasher: Prehasher) -> None:
    path = prehasher.upload_dir / "0000000003"
    path.write_bytes(b"first")
    assert wait_for(lambda: followed_offset(prehasher, path) == 5)
    followed = prehasher._files[str(path)]
    path.unlink()
    assert wait_for(lambda: str(path) not in prehasher._files)
    assert wait_for(lambda: followed.fd == -1)  # closed right after it is dropped
    path.write_bytes(b"other content")
    assert wait_for(lambda: followed_offset(prehasher, path) == 13)
    assert (
        ask_digest(str(prehasher.socket_path), path, 13)
        == hashlib.sha256(b"other content").hexdigest()
    )


def test_store_uses_the_prehash_and_still_checks_it(
    prehasher: Prehasher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path / "objects", prehasher.upload_dir, str(prehasher.socket_path))
    data = os.urandom(100_000)
    oid = hashlib.sha256(data).hexdigest()
    upload = prehasher.upload_dir / "0000000004"
    upload.write_bytes(data)
    assert wait_for(lambda: followed_offset(prehasher, upload) == len(data))

    def no_local_hashing(src: object) -> str:
        raise AssertionError("hashed again although the Prehasher had the digest")

    monkeypatch.setattr(local_store, "_hash_while_flushing", no_local_hashing)
    wrong = "0" * 64
    with pytest.raises(local_store.CommitError):
        store.commit("team/proj", wrong, len(data), upload)
    assert store.commit("team/proj", oid, len(data), upload) is True
    assert store.path("team/proj", oid).read_bytes() == data


def test_store_hashes_itself_without_a_prehasher(tmp_path: Path) -> None:
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    store = LocalStore(tmp_path / "objects", uploads, str(tmp_path / "missing.sock"))
    upload = uploads / "0000000005"
    upload.write_bytes(b"hello")
    oid = hashlib.sha256(b"hello").hexdigest()
    assert store.commit("r", oid, 5, upload) is True
