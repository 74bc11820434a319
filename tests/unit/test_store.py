from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from lfs_server.store import CommitError, LocalStore, is_valid_oid


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    (tmp_path / "tmp").mkdir()
    return LocalStore(tmp_path / "objects", tmp_path / "tmp")


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
    with pytest.raises(ValueError):
        store.path("team/proj", "../../../../etc/passwd")


def test_commit_then_visible(store: LocalStore) -> None:
    oid, tmp = upload(store, b"hello")
    assert store.size("team/proj", oid) is None
    store.commit("team/proj", oid, 5, tmp)
    assert store.size("team/proj", oid) == 5
    assert store.path("team/proj", oid).read_bytes() == b"hello"
    assert store.internal_uri("team/proj", oid).endswith(
        f"team/proj.git/{oid[:2]}/{oid[2:4]}/{oid}"
    )


def test_objects_are_per_repository(store: LocalStore) -> None:
    oid, tmp = upload(store, b"data")
    store.commit("team/a", oid, 4, tmp)
    assert store.size("team/b", oid) is None
    assert store.size("team", oid) is None


def test_wrong_hash_stores_nothing(store: LocalStore) -> None:
    _, tmp = upload(store, b"real data")
    claimed = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(CommitError) as caught:
        store.commit("r", claimed, 9, tmp)
    assert caught.value.status == 422
    assert store.size("r", claimed) is None


def test_wrong_size_stores_nothing(store: LocalStore) -> None:
    oid, tmp = upload(store, b"12345")
    with pytest.raises(CommitError, match="size mismatch") as caught:
        store.commit("r", oid, 6, tmp)
    assert caught.value.status == 422
    assert store.size("r", oid) is None


def test_existing_object_is_kept(store: LocalStore) -> None:
    oid, tmp = upload(store, b"first")
    store.commit("r", oid, 5, tmp)
    inode = store.path("r", oid).stat().st_ino
    _, again = upload(store, b"first", "again")
    store.commit("r", oid, 5, again)
    assert store.path("r", oid).stat().st_ino == inode


def test_concurrent_commits_of_one_oid(store: LocalStore) -> None:
    data = os.urandom(1 << 20)
    uploads = [upload(store, data, f"u{i}") for i in range(8)]
    errors: list[BaseException] = []

    def commit(oid: str, tmp: Path) -> None:
        try:
            store.commit("r", oid, len(data), tmp)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=commit, args=u) for u in uploads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.path("r", uploads[0][0]).read_bytes() == data


def test_missing_upload_file_is_a_clean_error(store: LocalStore) -> None:
    with pytest.raises(CommitError) as caught:
        store.commit("r", "a" * 64, 1, store.upload_tmp_dir / "gone")
    assert caught.value.status == 500
    assert str(store.upload_tmp_dir) not in caught.value.message


def test_writable(store: LocalStore) -> None:
    store.root.mkdir()
    assert store.health() == {"store": "ok"}
    assert list(store.upload_tmp_dir.iterdir()) == []
