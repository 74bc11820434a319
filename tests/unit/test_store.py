"""The store keeps each oid once; the object index says which repository sees it."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from lfs_server.db import Database
from lfs_server.store import CommitError, LocalStore, ObjectIndex, UploadVerifier, is_valid_oid


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    (tmp_path / "tmp").mkdir()
    return LocalStore(tmp_path / "objects", tmp_path / "tmp")


@pytest.fixture
def index(store: LocalStore, db: Database) -> ObjectIndex:
    """The index on each database (SQLite, PostgreSQL)."""
    return ObjectIndex(store, db, UploadVerifier())


def upload(store: LocalStore, data: bytes, name: str = "upload") -> tuple[str, Path]:
    path = store.upload_tmp_dir / name
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest(), path


@pytest.mark.parametrize(
    "oid",
    ["A" * 64, "a" * 63, "a" * 65, "../" + "a" * 61, "/" + "a" * 63, "g" * 64, "a" * 63 + "\n", 5],
)
def test_invalid_oids(oid: object) -> None:
    assert not is_valid_oid(oid)


def test_invalid_oid_never_reaches_a_path(store: LocalStore) -> None:
    for reach in (store.path, store.internal_uri, store.size):
        with pytest.raises(ValueError):
            reach("../../../../etc/passwd")


def test_accept_then_visible(store: LocalStore, index: ObjectIndex) -> None:
    oid, tmp = upload(store, b"hello")
    assert index.size("team/proj", oid) is None
    assert index.accept("team/proj", oid, 5, tmp) is True
    assert index.size("team/proj", oid) == 5
    assert index.sizes("team/proj", [oid, "0" * 64]) == {oid: 5}
    assert store.size(oid) == 5
    assert store.path(oid).read_bytes() == b"hello"
    assert store.path(oid) == store.root / oid[:2] / oid[2:4] / oid
    assert store.internal_uri(oid) == f"/.lfs-internal/objects/{oid[:2]}/{oid[2:4]}/{oid}"


def test_objects_are_per_repository(store: LocalStore, index: ObjectIndex) -> None:
    oid, tmp = upload(store, b"data")
    index.accept("team/a", oid, 4, tmp)
    assert index.size("team/b", oid) is None
    assert index.size("team", oid) is None


def test_an_oid_of_two_repositories_is_stored_once(store: LocalStore, index: ObjectIndex) -> None:
    oid, first = upload(store, b"shared", "first")
    assert index.accept("team/a", oid, 6, first) is True
    inode = store.path(oid).stat().st_ino
    _, second = upload(store, b"shared", "second")
    assert index.accept("team/b", oid, 6, second) is False  # already stored: only a row
    assert store.path(oid).stat().st_ino == inode
    assert index.size("team/b", oid) == 6
    assert [p for p in store.root.rglob("*") if p.is_file()] == [store.path(oid)]


def test_another_repository_cannot_claim_an_oid_without_its_bytes(
    store: LocalStore, index: ObjectIndex
) -> None:
    oid, tmp = upload(store, b"secret of team/a")
    index.accept("team/a", oid, 16, tmp)
    _, forged = upload(store, b"0123456789abcdef", "forged")  # right size, wrong bytes
    with pytest.raises(CommitError) as caught:
        index.accept("team/b", oid, 16, forged)
    assert (caught.value.status, caught.value.reason) == (422, "sha256")
    assert index.size("team/b", oid) is None
    assert store.path(oid).read_bytes() == b"secret of team/a"


def test_wrong_hash_stores_nothing(store: LocalStore, index: ObjectIndex) -> None:
    _, tmp = upload(store, b"real data")
    claimed = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(CommitError) as caught:
        index.accept("r", claimed, 9, tmp)
    assert caught.value.status == 422
    assert store.size(claimed) is None and index.size("r", claimed) is None


def test_wrong_size_stores_nothing(store: LocalStore, index: ObjectIndex) -> None:
    oid, tmp = upload(store, b"12345")
    with pytest.raises(CommitError, match="size mismatch") as caught:
        index.accept("r", oid, 6, tmp)
    assert caught.value.status == 422
    assert store.size(oid) is None and index.size("r", oid) is None


def test_existing_object_is_kept(store: LocalStore, index: ObjectIndex) -> None:
    oid, tmp = upload(store, b"first")
    index.accept("r", oid, 5, tmp)
    inode = store.path(oid).stat().st_ino
    _, again = upload(store, b"first", "again")
    index.accept("r", oid, 5, again)
    assert store.path(oid).stat().st_ino == inode


def test_no_row_without_a_stored_object(
    store: LocalStore, index: ObjectIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    oid, tmp = upload(store, b"never stored")

    def failing_put(verified: object) -> bool:
        raise CommitError(500, "could not store the object")

    monkeypatch.setattr(store, "put", failing_put)
    with pytest.raises(CommitError):
        index.accept("r", oid, 12, tmp)
    assert index.size("r", oid) is None


def test_concurrent_uploads_of_one_oid(store: LocalStore, index: ObjectIndex) -> None:
    data = os.urandom(1 << 20)
    uploads = [upload(store, data, f"u{i}") for i in range(8)]
    errors: list[BaseException] = []
    newly: list[bool] = []

    def accept(number: int, oid: str, tmp: Path) -> None:
        try:
            newly.append(index.accept(f"team/r{number % 2}", oid, len(data), tmp))
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=accept, args=(number, *u)) for number, u in enumerate(uploads)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(newly) == [False] * 7 + [True]
    oid = uploads[0][0]
    assert store.path(oid).read_bytes() == data
    assert index.size("team/r0", oid) == index.size("team/r1", oid) == len(data)


def test_missing_upload_file_is_a_clean_error(store: LocalStore, index: ObjectIndex) -> None:
    with pytest.raises(CommitError) as caught:
        index.accept("r", "a" * 64, 1, store.upload_tmp_dir / "gone")
    assert caught.value.status == 500
    assert str(store.upload_tmp_dir) not in caught.value.message


def test_writable(store: LocalStore) -> None:
    store.root.mkdir()
    assert store.health() == {"store": "ok"}
    assert list(store.upload_tmp_dir.iterdir()) == []
