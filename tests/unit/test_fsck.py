"""`lfs-server fsck`: re-hash the store, quarantine (never delete) what is wrong."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from lfs_server import cli, fsck
from lfs_server.store import LocalStore


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    monkeypatch.setenv("LFS_DATA_DIR", str(data))
    for name in ("LFS_SECRET_KEY", "LFS_ADMIN_USER", "LFS_ADMIN_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    return data


@pytest.fixture
def store(data_dir: Path) -> LocalStore:
    (data_dir / "tmp" / "uploads").mkdir(parents=True)
    return LocalStore(data_dir / "objects", data_dir / "tmp" / "uploads")


def put(store: LocalStore, repo: str, data: bytes) -> str:
    oid = hashlib.sha256(data).hexdigest()
    upload = store.upload_tmp_dir / "upload"
    upload.write_bytes(data)
    store.commit(repo, oid, len(data), upload)
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


def test_good_store_passes(store: LocalStore, data_dir: Path, capsys: pytest.CaptureFixture[str]):
    put(store, "team/a", b"one" * 1000)
    put(store, "team/a", b"two")
    put(store, "team/b", b"three")
    put(store, "team/b", b"")
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


def test_flipped_byte_is_quarantined(
    store: LocalStore, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = put(store, "team/a", b"good data")
    bad = put(store, "team/a", os.urandom(100_000))
    path = store.path("team/a", bad)
    flip_a_byte(path)
    corrupted = path.read_bytes()

    assert run_fsck() == 1
    out = capsys.readouterr().out
    assert f"corrupted: team/a: objects/team/a.git/{bad[:2]}/{bad[2:4]}/{bad}" in out
    assert "SHA-256 mismatch" in out
    assert "corrupted: 1; quarantined: 1" in out
    # Moved aside, every byte kept; the store no longer has it, the rest is untouched.
    (moved,) = quarantined(data_dir)
    assert moved.parent == data_dir / "quarantine" / "team" / "a.git"
    assert moved.name.startswith(f"{bad}.")
    assert moved.read_bytes() == corrupted
    assert store.size("team/a", bad) is None
    assert not path.exists()
    assert store.size("team/a", good) == len(b"good data")
    # The next run finds a clean store.
    assert run_fsck() == 0


def test_unexpected_files_are_quarantined(
    store: LocalStore, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    oid = put(store, "team/a", b"content")
    fanout = store.path("team/a", oid).parent
    (fanout / "notes.txt").write_text("stray")
    wrong_place = fanout.parent.parent / "ff" / "ff" / oid
    wrong_place.parent.mkdir(parents=True)
    wrong_place.write_bytes(b"content")
    (data_dir / "objects" / "loose").write_text("no repository")
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
    (link,) = (data_dir / "quarantine" / "team" / "a.git").glob(f"{link_name}.*")
    assert link.is_symlink()  # moved as it was, never followed
    assert store.size("team/a", oid) == len(b"content")
    assert os.path.exists("/etc/passwd")


def test_repo_argument_limits_the_scan(
    store: LocalStore, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_a = put(store, "team/a", b"object of a")
    put(store, "team/b", b"object of b")
    # `team.git/sub` lives inside team's root folder: it is not part of `team`.
    bad_nested = put(store, "team.git/sub", b"nested repository")
    put(store, "team", b"object of team")
    flip_a_byte(store.path("team/a", bad_a))
    flip_a_byte(store.path("team.git/sub", bad_nested))

    assert run_fsck("team/b") == 0
    assert "checked 1 objects" in capsys.readouterr().out
    assert run_fsck("team") == 0
    assert "checked 1 objects, 14 bytes" in capsys.readouterr().out
    assert store.path("team/a", bad_a).exists()

    assert run_fsck("team/a.git") == 1
    assert "repository team/a; corrupted: 1; quarantined: 1" in capsys.readouterr().out
    assert store.size("team/a", bad_a) is None
    assert store.path("team.git/sub", bad_nested).exists()
    assert run_fsck("no/such/repo") == 0
    assert run_fsck() == 1
    assert store.size("team.git/sub", bad_nested) is None


@pytest.mark.parametrize("repo", ["../etc", "/abs", "a//b", ".hidden", "a/../b"])
def test_bad_repo_name_exits_2(
    data_dir: Path, repo: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_fsck(repo) == 2
    assert "invalid repository name" in capsys.readouterr().err


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal(store: LocalStore, data_dir: Path) -> None:
    for index in range(3):
        put(store, "team/a", os.urandom(3 * fsck.CHUNK + index))
    terminal, report_out = FakeTerminal(), io.StringIO()
    report = fsck.check(data_dir, progress_out=terminal, report_out=report_out)
    assert (report.objects, report.problems) == (3, [])
    shown = terminal.getvalue()
    assert shown.startswith("\rfsck [")
    assert "100% 3/3 files" in shown
    assert shown.endswith("\n")
    assert "checked 3 objects" in report_out.getvalue()


def test_a_file_replaced_while_checked_is_not_moved(
    store: LocalStore, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = put(store, "team/a", b"soon corrupted")
    path = store.path("team/a", bad)
    flip_a_byte(path)
    real_hash = fsck._hash

    def hash_then_replace(target: Path, progress: fsck.Progress):
        result = real_hash(target, progress)
        replacement = target.with_name("replacement")
        replacement.write_bytes(b"soon corrupted")
        os.replace(replacement, target)
        return result

    monkeypatch.setattr(fsck, "_hash", hash_then_replace)
    report = fsck.check(data_dir, progress_out=io.StringIO(), report_out=io.StringIO())
    (problem,) = report.problems
    assert problem.moved_to is None and "replaced" in problem.move_error
    assert path.read_bytes() == b"soon corrupted"
