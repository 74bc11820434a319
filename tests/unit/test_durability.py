"""What must be on disk before an upload, a key or a database write is acknowledged.

os.fsync is wrapped to record which file or directory each call flushed and,
for a directory, the names it held at that moment: a new name is durable
only once its directory was fsynced while holding it.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from lfs_server import settings as settings_module
from lfs_server.db import SQLiteDatabase
from lfs_server.durable import make_dirs
from lfs_server.settings import Settings, SettingsError
from lfs_server.store import LocalStore, UploadVerifier

Fsyncs = list[tuple[Path, set[str] | None]]


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> Fsyncs:
    seen: Fsyncs = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        seen.append((path, set(os.listdir(path)) if path.is_dir() else None))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    return seen


def durable_names(fsyncs: Fsyncs) -> set[Path]:
    """Every name some fsynced directory held when it was fsynced."""
    return {path / name for path, names in fsyncs if names is not None for name in names}


def commit(store: LocalStore, data: bytes, name: str) -> Path:
    upload = store.upload_tmp_dir / name
    upload.write_bytes(data)
    oid = hashlib.sha256(data).hexdigest()
    with UploadVerifier().verified(upload, oid, len(data)) as verified:
        assert store.put(verified) is True
    return store.path(oid)


def test_commit_makes_every_new_directory_durable_up_to_the_root(
    tmp_path: Path, fsyncs: Fsyncs
) -> None:
    (tmp_path / "tmp").mkdir()
    store = LocalStore(tmp_path / "objects", tmp_path / "tmp")
    store.root.mkdir()
    final = commit(store, b"first object", "u1")
    # objects/aa, aa/bb and the object itself
    chain = [final, *final.parents]
    new_names = chain[: chain.index(store.root)]
    assert len(new_names) == 3
    assert set(new_names) <= durable_names(fsyncs)
    assert (store.upload_tmp_dir / "u1", None) in fsyncs  # the data too

    fsyncs.clear()
    second = commit(store, data_in_fanout(final.name[:2]), "u2")
    assert second in durable_names(fsyncs)
    # Only directories that changed are flushed: nothing above a fan-out that existed.
    flushed = {path for path, names in fsyncs if names is not None}
    assert flushed <= {second.parent, second.parent.parent}
    assert store.root not in flushed


def data_in_fanout(prefix: str) -> bytes:
    """Some data whose oid starts with `prefix`, so it lands in that fan-out folder."""
    for number in range(100_000):
        data = b"second object %d" % number
        if hashlib.sha256(data).hexdigest().startswith(prefix):
            return data
    raise AssertionError("no such data")


def test_make_dirs_reports_new_directories_top_first(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    assert make_dirs(tmp_path / "a" / "b" / "c") == [
        tmp_path / "a" / "b",
        tmp_path / "a" / "b" / "c",
    ]
    assert make_dirs(tmp_path / "a" / "b" / "c") == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError):
        make_dirs(tmp_path / "file" / "d")


def test_the_app_makes_its_new_data_folders_durable(tmp_path: Path, fsyncs: Fsyncs) -> None:
    from lfs_server.app import create_app

    data = tmp_path / "data"
    create_app(Settings.from_env({"LFS_DATA_DIR": str(data)}))
    assert {data / "tmp", data / "tmp" / "uploads", data / "objects"} <= durable_names(fsyncs)


# ---------------------------------------------------------------- secret.key


def load(data_dir: Path, **env: str) -> Settings:
    return Settings.from_env({"LFS_DATA_DIR": str(data_dir), **env})


def test_the_generated_key_is_durable_before_it_is_used(tmp_path: Path, fsyncs: Fsyncs) -> None:
    data = tmp_path / "data"
    key = load(data).secret_key
    key_file = data / "secret.key"
    assert key_file in durable_names(fsyncs)
    flushed_files = [path for path, names in fsyncs if names is None]
    assert (
        len(flushed_files) == 1 and flushed_files[0].parent == data
    )  # the key, under its temp name
    assert [p.name for p in data.iterdir()] == ["secret.key"]  # no temp file left
    assert load(data).secret_key == key


def test_a_failed_key_write_leaves_no_key_and_the_next_start_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"

    def crash(_length: int) -> str:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(settings_module.secrets, "token_urlsafe", crash)
    with pytest.raises(SettingsError, match="LFS_DATA_DIR: cannot create or read the secret key"):
        load(data)
    assert list(data.iterdir()) == []  # neither an empty key nor a temp file
    monkeypatch.undo()
    assert len(load(data).secret_key) >= 32


def test_a_leftover_temp_file_is_ignored(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    leftover = data / ".secret.key.partial.tmp"
    leftover.write_text("half a k")  # what a crash mid-write leaves
    key = load(data).secret_key
    assert key != b"half a k" and len(key) >= 32
    assert (data / "secret.key").read_bytes().strip() == key


def test_a_key_written_concurrently_is_not_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    winner = "w" * 64
    real_link = os.link

    def another_start_wins(src: str, dst: str, *args: object, **kwargs: object) -> None:
        Path(dst).write_text(winner)  # another process linked its key first
        real_link(src, dst, *args, **kwargs)

    monkeypatch.setattr(settings_module.os, "link", another_start_wins)
    assert load(data).secret_key == winner.encode()
    assert [p.name for p in data.iterdir()] == ["secret.key"]


@pytest.mark.parametrize("content", ["", "   \n\t\n"])
def test_an_empty_key_file_is_refused_by_name(tmp_path: Path, content: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "secret.key").write_text(content)
    with pytest.raises(SettingsError) as caught:
        load(data)
    message = str(caught.value)
    assert message.startswith("LFS_SECRET_KEY (from secret.key in LFS_DATA_DIR)")
    assert "empty or only whitespace" in message


def test_a_whitespace_key_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^LFS_SECRET_KEY: is only whitespace"):
        load(tmp_path / "data", LFS_SECRET_KEY=" " * 40)


# ---------------------------------------------------------------- the database


def test_database_commits_are_fsynced(tmp_path: Path) -> None:
    db = SQLiteDatabase(tmp_path / "lfs.db")
    modes: list[int] = []

    def read_mode() -> None:  # every thread opens its own connection
        modes.append(db.conn.execute("PRAGMA synchronous").fetchone()[0])

    read_mode()
    thread = threading.Thread(target=read_mode)
    thread.start()
    thread.join()
    full = 2
    assert modes == [full, full]
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert isinstance(db.conn, sqlite3.Connection)
