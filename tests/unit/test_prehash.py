from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import pytest

from lfs_server.app import create_app
from lfs_server.prehash import Prehasher, ask_digest, ping
from lfs_server.services import services
from lfs_server.store import CommitError, LocalStore, UploadVerifier
from lfs_server.store import local as local_store
from lfs_server.store import verify as verify_module
from tests.unit.conftest import make_settings


def put(verifier: UploadVerifier, store: LocalStore, oid: str, size: int, upload: Path) -> bool:
    """What the object index does with an upload: verify it, then put it in the store."""
    with verifier.verified(upload, oid, size) as verified:
        return store.put(verified)


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


def after_two_passes(hasher: Prehasher) -> bool:
    """Wait until a whole follow pass started after this call (and finished)."""
    start = hasher.passes
    return wait_for(lambda: hasher.passes >= start + 2)


STAT_FIELDS = {"st_ino": 1, "st_dev": 2, "st_size": 6}


def opened(path: Path, **override: int) -> os.stat_result:
    """What the store sends for the file at `path` (its fstat), fields overridden."""
    values = list(os.stat(path)[:10])
    for name, value in override.items():
        values[STAT_FIELDS[name]] = value
    return os.stat_result(values)


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
        ask_digest(str(prehasher.socket_path), path, opened(path))
        == hashlib.sha256(data).hexdigest()
    )


def test_refuses_what_it_cannot_vouch_for(prehasher: Prehasher, tmp_path: Path) -> None:
    socket_path = str(prehasher.socket_path)
    path = prehasher.upload_dir / "0000000002"
    path.write_bytes(b"12345")
    assert wait_for(lambda: followed_offset(prehasher, path) == 5)
    assert ask_digest(socket_path, path, opened(path)) == hashlib.sha256(b"12345").hexdigest()
    assert ask_digest(socket_path, path, opened(path, st_size=4)) is None  # not nginx's size
    assert ask_digest(socket_path, prehasher.upload_dir / "0000000009", opened(path)) is None
    other = prehasher.upload_dir / "healthz-abc"  # not an nginx temp file: never followed
    other.write_bytes(b"x")
    assert after_two_passes(prehasher)
    assert str(other) not in prehasher._files
    assert ask_digest(socket_path, other, opened(other)) is None
    assert ask_digest(str(tmp_path / "no.sock"), path, opened(path)) is None  # no Prehasher


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
        ask_digest(str(prehasher.socket_path), path, opened(path))
        == hashlib.sha256(b"other content").hexdigest()
    )


def test_store_uses_the_prehash_and_still_checks_it(
    prehasher: Prehasher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path / "objects", prehasher.upload_dir)
    verifier = UploadVerifier(str(prehasher.socket_path))
    data = os.urandom(verify_module.SMALL_UPLOAD)  # smaller ones are hashed in the request
    oid = hashlib.sha256(data).hexdigest()
    upload = prehasher.upload_dir / "0000000004"
    upload.write_bytes(data)
    assert wait_for(lambda: followed_offset(prehasher, upload) == len(data))

    def no_local_hashing(src: object) -> str:
        raise AssertionError("hashed again although the Prehasher had the digest")

    monkeypatch.setattr(verify_module, "_hash_while_flushing", no_local_hashing)
    wrong = "0" * 64
    with pytest.raises(CommitError):
        put(verifier, store, wrong, len(data), upload)
    assert put(verifier, store, oid, len(data), upload) is True
    assert store.path(oid).read_bytes() == data


def test_store_hashes_itself_without_a_prehasher(tmp_path: Path) -> None:
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    store = LocalStore(tmp_path / "objects", uploads)
    verifier = UploadVerifier(str(tmp_path / "missing.sock"))
    upload = uploads / "0000000005"
    upload.write_bytes(b"hello")
    oid = hashlib.sha256(b"hello").hexdigest()
    assert put(verifier, store, oid, 5, upload) is True


# ---------------------------------------------------------------- the digest is tied to a file


def test_a_digest_is_only_given_for_the_file_the_asker_has_open(prehasher: Prehasher) -> None:
    socket_path = str(prehasher.socket_path)
    path = prehasher.upload_dir / "0000000006"
    path.write_bytes(b"A" * 1000)
    with open(path, "rb") as first:  # the store opened this one
        first_opened = os.fstat(first.fileno())
        assert wait_for(lambda: followed_offset(prehasher, path) == 1000)
        swapped = prehasher.upload_dir / "swap"
        swapped.write_bytes(b"B" * 1000)
        os.rename(swapped, path)  # same name, same size, other file
        second = os.stat(path)
        assert wait_for(lambda: prehasher._files[str(path)].inode == second.st_ino)
        # The Prehasher follows the new file now: it must not vouch for the old one.
        assert ask_digest(socket_path, path, first_opened) is None
        assert ask_digest(socket_path, path, second) == hashlib.sha256(b"B" * 1000).hexdigest()


@pytest.mark.parametrize("checked_file_keeps_a_name", [True, False])
def test_the_store_links_the_file_it_checked_not_what_the_name_holds_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checked_file_keeps_a_name: bool
) -> None:
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    store = LocalStore(tmp_path / "objects", uploads)
    good = os.urandom(5000)
    oid = hashlib.sha256(good).hexdigest()
    upload = uploads / "0000000007"
    upload.write_bytes(good)
    if checked_file_keeps_a_name:
        os.link(upload, uploads / "another-name")
    real_digest = UploadVerifier._digest

    def digest_then_swap(
        self: UploadVerifier, src: BinaryIO, path: Path, info: os.stat_result
    ) -> str:
        digest = real_digest(self, src, path, info)
        evil = uploads / "evil"
        evil.write_bytes(os.urandom(5000))
        os.rename(evil, path)  # swapped in after the check, before the link
        return digest

    monkeypatch.setattr(UploadVerifier, "_digest", digest_then_swap)
    if checked_file_keeps_a_name:  # the checked file is linked, from the open descriptor
        assert put(UploadVerifier(), store, oid, len(good), upload) is True
        assert store.path(oid).read_bytes() == good
    else:  # it has no name left to link: refused, and the swapped-in file is never stored
        with pytest.raises(CommitError) as caught:
            put(UploadVerifier(), store, oid, len(good), upload)
        assert caught.value.status == 500
        assert store.size(oid) is None


def test_a_failed_link_names_the_real_paths(tmp_path: Path) -> None:
    upload, final = tmp_path / "0000000013", tmp_path / "object"
    upload.write_bytes(b"gone before the link")
    with open(upload, "rb") as src:
        upload.unlink()
        with pytest.raises(FileNotFoundError) as caught:
            local_store.link_open_file(src.fileno(), upload, final)
    assert (caught.value.filename, caught.value.filename2) == (str(upload), str(final))


def test_without_proc_the_name_is_linked_only_while_it_names_the_open_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_link, real_isdir = os.link, os.path.isdir

    def link(src: str, dst: str, **kwargs: object) -> None:
        if str(src).startswith("/proc/"):
            raise FileNotFoundError(2, "No such file or directory", src)
        real_link(src, dst, **kwargs)

    monkeypatch.setattr(local_store.os, "link", link)
    monkeypatch.setattr(
        local_store.os.path, "isdir", lambda p: p != "/proc/self/fd" and real_isdir(p)
    )
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    store = LocalStore(tmp_path / "objects", uploads)
    data = b"linked by name"
    oid = hashlib.sha256(data).hexdigest()
    upload = uploads / "0000000008"
    upload.write_bytes(data)
    assert put(UploadVerifier(), store, oid, len(data), upload) is True
    assert store.path(oid).read_bytes() == data

    swapped = uploads / "0000000009"
    swapped.write_bytes(b"checked")
    checked_oid = hashlib.sha256(b"checked").hexdigest()
    real_digest = UploadVerifier._digest

    def digest_then_swap(
        self: UploadVerifier, src: BinaryIO, path: Path, info: os.stat_result
    ) -> str:
        digest = real_digest(self, src, path, info)
        (uploads / "evil").write_bytes(b"evil!!!")
        os.rename(uploads / "evil", path)
        return digest

    monkeypatch.setattr(UploadVerifier, "_digest", digest_then_swap)
    with pytest.raises(CommitError) as caught:
        put(UploadVerifier(), store, checked_oid, 7, swapped)
    assert caught.value.status == 500
    assert store.size(checked_oid) is None


# ---------------------------------------------------------------- a thread dies


@contextmanager
def running(hasher: Prehasher) -> Iterator[Prehasher]:
    hasher.start()
    try:
        yield hasher
    finally:
        hasher.stop()


def commit_quickly(verifier: UploadVerifier, store: LocalStore, name: str) -> float:
    """Commit a new upload (hashed by the app itself); the seconds it took."""
    data = os.urandom(verify_module.SMALL_UPLOAD)  # large enough to ask the Prehasher
    upload = store.upload_tmp_dir / name
    upload.write_bytes(data)
    begun = time.monotonic()
    assert put(verifier, store, hashlib.sha256(data).hexdigest(), len(data), upload) is True
    return time.monotonic() - begun


def test_a_dead_follow_loop_is_reported_and_uploads_still_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    early = uploads / "0000000010"
    early.write_bytes(b"followed before the loop died")
    hasher = Prehasher(uploads, tmp_path / "prehash.sock")
    real_follow_once = hasher._follow_once
    passes = 0

    def dies_on_the_second_pass() -> None:
        nonlocal passes
        passes += 1
        if passes > 1:
            raise RuntimeError("injected: the follow loop dies")
        real_follow_once()

    monkeypatch.setattr(hasher, "_follow_once", dies_on_the_second_pass)
    with running(hasher):
        assert hasher._threads["follow"].join(5) is None and not hasher.alive()["follow"]
        assert hasher._files == {}  # what it followed is closed, not kept open
        assert ping(str(hasher.socket_path)) == "follow loop stopped"
        assert "the Prehasher's follow loop died" in capfd.readouterr().err
        store = LocalStore(tmp_path / "objects", uploads)
        verifier = UploadVerifier(str(hasher.socket_path))
        hashed_here = []
        real_hash = verify_module._hash_while_flushing
        monkeypatch.setattr(
            verify_module,
            "_hash_while_flushing",
            lambda src: hashed_here.append(1) or real_hash(src),
        )
        assert commit_quickly(verifier, store, "0000000011") < 5  # far below CLIENT_TIMEOUT
        assert hashed_here == [1]
        assert verifier.health() == {"prehasher": "follow loop stopped"}


class FailingListener(socket.socket):
    def accept(self) -> tuple[socket.socket, object]:
        raise RuntimeError("injected: the accept loop dies")


def test_a_dead_accept_loop_closes_the_socket_so_uploads_do_not_wait(tmp_path: Path) -> None:
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    hasher = Prehasher(uploads, tmp_path / "prehash.sock")
    hasher._listener = FailingListener(socket.AF_UNIX, socket.SOCK_STREAM)
    with running(hasher):
        assert hasher._threads["accept"].join(5) is None and not hasher.alive()["accept"]
        assert ping(str(hasher.socket_path)) == "not answering"
        store = LocalStore(tmp_path / "objects", uploads)
        verifier = UploadVerifier(str(hasher.socket_path))
        assert commit_quickly(verifier, store, "0000000012") < 5
        assert verifier.health()["prehasher"] == "not answering"


def test_a_running_prehasher_answers_ping(prehasher: Prehasher) -> None:
    assert prehasher.alive() == {"follow": True, "accept": True}
    assert ping(str(prehasher.socket_path)) == "ok"


# ---------------------------------------------------------------- where the temp file is not the object


@pytest.mark.parametrize("writeback", [True, False])
def test_writeback_is_started_only_where_the_temp_file_becomes_the_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writeback: bool
) -> None:
    started: list[int] = []
    monkeypatch.setattr(
        "lfs_server.prehash.start_writeback", lambda fd, offset, length: started.append(length)
    )
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    hasher = Prehasher(uploads, tmp_path / "prehash.sock", writeback=writeback)
    hasher.start()
    try:
        path = uploads / "0000000009"
        data = os.urandom(700_000)
        path.write_bytes(data)
        assert wait_for(lambda: followed_offset(hasher, path) == len(data))
        digest = ask_digest(str(hasher.socket_path), path, opened(path))
        assert digest == hashlib.sha256(data).hexdigest()
    finally:
        hasher.stop()
    assert sum(started) == (len(data) if writeback else 0)


@pytest.mark.parametrize("with_prehasher", [True, False])
@pytest.mark.parametrize("fsync_large", [True, False])
def test_a_large_upload_is_fsynced_only_for_a_store_that_keeps_it(
    prehasher: Prehasher,
    monkeypatch: pytest.MonkeyPatch,
    with_prehasher: bool,
    fsync_large: bool,
) -> None:
    data = os.urandom(verify_module.SMALL_UPLOAD)
    oid = hashlib.sha256(data).hexdigest()
    upload = prehasher.upload_dir / "0000000010"
    upload.write_bytes(data)
    if with_prehasher:
        assert wait_for(lambda: followed_offset(prehasher, upload) == len(data))
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(verify_module.os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    socket_path = str(prehasher.socket_path) if with_prehasher else None
    verifier = UploadVerifier(socket_path, fsync_large=fsync_large)
    with verifier.verified(upload, oid, len(data)) as verified:
        assert verified.synced is fsync_large
    assert len(synced) == (1 if fsync_large else 0)
    with pytest.raises(CommitError), verifier.verified(upload, "0" * 64, len(data)):
        pass


@pytest.mark.parametrize(
    ("env", "fsync_large"),
    [
        ({}, True),
        ({"LFS_STORE": "s3", "LFS_S3_BUCKET": "lfs-objects"}, False),
        ({"LFS_STORE": "s3", "LFS_S3_BUCKET": "lfs-objects", "LFS_S3_TRANSFER": "direct"}, False),
    ],
)
def test_the_app_fsyncs_uploads_only_on_the_store_that_keeps_them(
    tmp_path: Path, env: dict[str, str], fsync_large: bool
) -> None:
    app = create_app(make_settings(tmp_path / "data", **env))
    assert services(app).store.keeps_upload_file is fsync_large
    assert services(app).verifier.fsync_large is fsync_large
