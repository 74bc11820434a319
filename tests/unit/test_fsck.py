"""`lfs-server fsck`: re-hash the store, quarantine (never delete) what is wrong."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import cast

import pytest

from lfs_server import cli, fsck
from lfs_server.db import SQLiteDatabase
from lfs_server.settings import Settings
from lfs_server.store import LocalStore, ObjectIndex, StoredItem, UploadVerifier


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    monkeypatch.setenv("LFS_DATA_DIR", str(data))
    for name in ("LFS_SECRET_KEY", "LFS_ADMIN_USER", "LFS_ADMIN_PASSWORD", "LFS_STORE"):
        monkeypatch.delenv(name, raising=False)
    return data


@pytest.fixture
def store(data_dir: Path) -> LocalStore:
    (data_dir / "tmp" / "uploads").mkdir(parents=True)
    return LocalStore(data_dir / "objects", data_dir / "tmp" / "uploads")


@pytest.fixture
def index(store: LocalStore, data_dir: Path) -> ObjectIndex:
    return ObjectIndex(store, SQLiteDatabase(data_dir / "lfs.db"), UploadVerifier())


def put(index: ObjectIndex, repo: str, data: bytes) -> str:
    oid = hashlib.sha256(data).hexdigest()
    upload = cast(LocalStore, index.store).upload_tmp_dir / "upload"
    upload.write_bytes(data)
    index.accept(repo, oid, len(data), upload)
    upload.unlink()
    return oid


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def quarantined(data_dir: Path) -> list[Path]:
    return sorted(p for p in (data_dir / "quarantine").rglob("*") if not p.is_dir())


def run_fsck(*argv: str) -> int:
    return cli.main(["fsck", *argv])


def test_good_store_passes(index: ObjectIndex, data_dir: Path, capsys: pytest.CaptureFixture[str]):
    put(index, "team/a", b"one" * 1000)
    put(index, "team/a", b"two")
    put(index, "team/b", b"three")
    put(index, "team/b", b"")
    assert run_fsck() == 0
    out = capsys.readouterr()
    assert "fsck: checked 4 objects, 3008 bytes" in out.out
    assert "in 2 repositories; corrupted: 0; quarantined: 0" in out.out
    # Not a terminal: a plain count line instead of a bar.
    assert "fsck: checking 4 files" in out.err
    assert "\r" not in out.err
    assert not (data_dir / "quarantine").exists()


def test_empty_store_passes(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_fsck() == 0
    assert "checked 0 objects, 0 bytes" in capsys.readouterr().out


def test_flipped_byte_is_quarantined_and_leaves_the_index(
    store: LocalStore, index: ObjectIndex, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = put(index, "team/a", b"good data")
    bad = put(index, "team/a", os.urandom(100_000))
    put(index, "team/b", store.path(bad).read_bytes())  # one file, two repositories
    path = store.path(bad)
    flip_a_byte(path)
    corrupted = path.read_bytes()

    assert run_fsck() == 1
    out = capsys.readouterr().out
    assert f"corrupted: team/a, team/b: {bad[:2]}/{bad[2:4]}/{bad}: SHA-256 mismatch" in out
    assert "corrupted: 1; quarantined: 1" in out
    # Moved aside, every byte kept; neither repository sees it now, so the
    # next push uploads it again. The rest is untouched.
    (moved,) = quarantined(data_dir)
    assert moved.parent == data_dir / "quarantine" / bad[:2] / bad[2:4]
    assert moved.name.startswith(f"{bad}.")
    assert moved.read_bytes() == corrupted
    assert not path.exists()
    assert index.size("team/a", bad) is None and index.size("team/b", bad) is None
    assert index.size("team/a", good) == len(b"good data")
    # The next run finds a clean store.
    assert run_fsck() == 0


def test_unexpected_files_are_quarantined(
    store: LocalStore, index: ObjectIndex, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    oid = put(index, "team/a", b"content")
    fanout = store.path(oid).parent
    (fanout / "notes.txt").write_text("stray")
    wrong_place = store.root / "ff" / "ff" / oid
    wrong_place.parent.mkdir(parents=True)
    wrong_place.write_bytes(b"content")
    (store.root / "loose").write_text("no place")
    link_name = oid[:4] + "e" * 60
    os.symlink("/etc/passwd", fanout / link_name)

    assert run_fsck() == 1
    out = capsys.readouterr().out
    assert "unexpected file name" in out
    assert "object in the wrong fan-out folder" in out
    assert "unexpected file in the store" in out
    assert "a symbolic link" in out
    assert "corrupted: 4; quarantined: 4" in out
    names = {p.name.split(".")[0] for p in quarantined(data_dir)}
    assert names == {"notes", oid, "loose", link_name}
    assert [p.name.split(".")[0] for p in (data_dir / "quarantine").glob("loose.*")] == ["loose"]
    (link,) = (data_dir / "quarantine" / oid[:2] / oid[2:4]).glob(f"{link_name}.*")
    assert link.is_symlink()  # moved as it was, never followed
    assert index.size("team/a", oid) == len(b"content")
    assert os.path.exists("/etc/passwd")


def test_repo_argument_checks_only_what_that_repository_sees(
    store: LocalStore, index: ObjectIndex, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_a = put(index, "team/a", b"object of a")
    put(index, "team/b", b"object of b")
    put(index, "team", b"object of team")
    flip_a_byte(store.path(bad_a))

    assert run_fsck("team/b") == 0
    assert "checked 1 objects" in capsys.readouterr().out
    assert run_fsck("team") == 0
    assert "checked 1 objects, 14 bytes" in capsys.readouterr().out
    assert store.path(bad_a).exists()

    assert run_fsck("team/a.git") == 1
    assert "repository team/a; corrupted: 1; quarantined: 1" in capsys.readouterr().out
    assert store.size(bad_a) is None and index.size("team/a", bad_a) is None
    assert run_fsck("no/such/repo") == 0
    assert run_fsck() == 0


@pytest.mark.parametrize("repo", ["../etc", "/abs", "a//b", ".hidden", "a/../b"])
def test_bad_repo_name_exits_2(
    data_dir: Path, repo: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_fsck(repo) == 2
    assert "invalid repository name" in capsys.readouterr().err


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal(index: ObjectIndex, data_dir: Path) -> None:
    for number in range(3):
        put(index, "team/a", os.urandom(3 * (1 << 20) + number))
    terminal, report_out = FakeTerminal(), io.StringIO()
    report = fsck.check(Settings.from_env(), progress_out=terminal, report_out=report_out)
    assert (report.objects, report.problems) == (3, [])
    shown = terminal.getvalue()
    assert shown.startswith("\rfsck [")
    assert "100% 3/3 files" in shown
    assert shown.endswith("\n")
    assert "checked 3 objects" in report_out.getvalue()


def test_a_file_replaced_while_checked_is_not_moved(
    store: LocalStore, index: ObjectIndex, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = put(index, "team/a", b"soon corrupted")
    path = store.path(bad)
    flip_a_byte(path)
    real_hash = LocalStore.hash_object

    def hash_then_replace(self: LocalStore, item: StoredItem, on_bytes) -> str:
        digest = real_hash(self, item, on_bytes)
        replacement = path.with_name("replacement")
        replacement.write_bytes(b"soon corrupted")
        os.replace(replacement, path)
        return digest

    monkeypatch.setattr(LocalStore, "hash_object", hash_then_replace)
    report = fsck.check(Settings.from_env(), progress_out=io.StringIO(), report_out=io.StringIO())
    (problem,) = report.problems
    assert not problem.moved_to and "replaced" in problem.move_error
    assert path.read_bytes() == b"soon corrupted"
    assert index.size("team/a", bad) == len(b"soon corrupted")


# ---------------------------------------------------------------- the index and the store


def test_a_missing_object_is_reported_and_dropped_from_the_index(
    store: LocalStore, index: ObjectIndex, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = put(index, "team/a", b"still here")
    lost = put(index, "team/a", b"lost on disk")
    put(index, "team/b", b"lost on disk")
    store.path(lost).unlink()

    assert run_fsck() == 1
    out = capsys.readouterr().out
    assert f"missing: team/a, team/b: {lost} (12 bytes): in the object index, not in" in out
    assert "missing: 1; not indexed: 0" in out
    # No repository is told it has the object any more: the next push uploads it.
    assert index.size("team/a", lost) is None and index.size("team/b", lost) is None
    assert index.size("team/a", kept) == len(b"still here")
    assert run_fsck() == 0
    assert "missing: 0" in capsys.readouterr().out


def test_an_object_no_row_names_is_reported_and_kept(
    store: LocalStore, index: ObjectIndex, capsys: pytest.CaptureFixture[str]
) -> None:
    put(index, "team/a", b"indexed")
    orphan = put(index, "team/a", b"stored, never indexed")
    index.db.remove_objects(orphan, ["team/a"])  # as an upload cut short before its row

    assert run_fsck() == 0  # nothing is lost or damaged
    out = capsys.readouterr().out
    key = f"{orphan[:2]}/{orphan[2:4]}/{orphan}"
    assert f"not indexed: {key} (21 bytes): no repository may see it; kept" in out
    assert "checked 2 objects" in out and "not indexed: 1" in out
    assert store.path(orphan).read_bytes() == b"stored, never indexed"
    # A repository's own check does not see what no repository holds.
    assert run_fsck("team/a") == 0
    assert "not indexed: 0" in capsys.readouterr().out


def test_a_row_whose_object_appeared_after_the_scan_passed_is_not_missing(
    store: LocalStore, index: ObjectIndex, data_dir: Path
) -> None:
    oid = put(index, "team/a", b"stored while fsck ran")
    check = fsck._Check(store, index.db, fsck.Progress(io.StringIO(), 1, 0), "stamp")
    check.missing(fsck.Indexed(oid, 21, ["team/a"]))
    assert check.report.missing == []
    assert index.size("team/a", oid) == 21


def test_the_index_is_read_in_pages_alongside_the_store(
    store: LocalStore, index: ObjectIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fsck, "PAGE", 2)
    oids = sorted(put(index, f"team/r{n % 3}", b"object %d" % n) for n in range(7))
    for oid in oids[:3]:
        put(index, "team/shared", store.path(oid).read_bytes())
    store.path(oids[4]).unlink()
    indexed = list(fsck.index_rows(index.db))
    assert [entry.oid for entry in indexed] == oids
    assert all("team/shared" in entry.repos for entry in indexed[:3])
    report = fsck.check(Settings.from_env(), progress_out=io.StringIO(), report_out=io.StringIO())
    assert [entry.oid for entry in report.missing] == [oids[4]]
    assert (report.objects, report.unindexed, report.problems) == (6, [], [])
