"""Stale upload temp files: the sweep, `lfs-server cleanup`, the launcher's schedule."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from lfs_server import cli, serve
from lfs_server.cleanup import Swept, sweep_stale_uploads
from lfs_server.settings import Settings
from lfs_server.units import human_bytes

HOUR = 3600


def make_file(folder: Path, name: str, size: int, age: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"x" * size)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def test_sweep_removes_only_old_files(tmp_path: Path) -> None:
    old = make_file(tmp_path, "0000000001", 100, 2 * HOUR)
    older = make_file(tmp_path, "0000000002", 23, 30 * HOUR)
    fresh = make_file(tmp_path, "0000000003", 7, 60)
    folder = tmp_path / "a-folder"
    folder.mkdir()
    os.utime(folder, (0, 0))
    assert sweep_stale_uploads(tmp_path) == Swept(2, 123)
    assert not old.exists() and not older.exists()
    assert fresh.exists() and folder.exists()
    assert sweep_stale_uploads(tmp_path, older_than=30) == Swept(1, 7)
    assert sweep_stale_uploads(tmp_path / "missing") == Swept()


def test_human_bytes() -> None:
    assert human_bytes(0) == "0 B"
    assert human_bytes(1023) == "1023 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(64 << 20) == "64.0 MiB"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    monkeypatch.setenv("LFS_DATA_DIR", str(data))
    monkeypatch.delenv("LFS_SECRET_KEY", raising=False)
    return data


def test_cleanup_command(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uploads = data_dir / "tmp" / "uploads"
    make_file(uploads, "0000000001", 1000, 2 * HOUR)
    make_file(uploads, "0000000002", 24, 2 * HOUR)
    fresh = make_file(uploads, "0000000003", 5, 10)
    assert cli.main(["cleanup"]) == 0
    assert "removed 2 stale upload temp files, 1024 bytes (1.0 KiB)" in capsys.readouterr().out
    assert [p.name for p in uploads.iterdir()] == [fresh.name]
    assert cli.main(["cleanup", "--older-than", "5"]) == 0
    assert "removed 1 stale upload temp files, 5 bytes" in capsys.readouterr().out
    assert list(uploads.iterdir()) == []


@pytest.mark.parametrize("value", ["-1", "soon", "nan", "inf"])
def test_cleanup_refuses_bad_ages(data_dir: Path, value: str) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["cleanup", "--older-than", value])
    assert stopped.value.code == 2


def test_the_launcher_sweeps_periodically(data_dir: Path) -> None:
    settings = Settings.from_env()
    uploads = settings.upload_tmp_dir
    supervisor = serve.Supervisor(settings)
    start = supervisor.next_sweep - serve.SWEEP_INTERVAL_SECONDS
    stale = make_file(uploads, "0000000001", 10, 2 * HOUR)
    supervisor.sweep_if_due(start + 1)
    assert stale.exists()  # not due yet
    supervisor.sweep_if_due(start + serve.SWEEP_INTERVAL_SECONDS)
    assert not stale.exists()
    assert supervisor.next_sweep == start + 2 * serve.SWEEP_INTERVAL_SECONDS
    again = make_file(uploads, "0000000002", 10, 2 * HOUR)
    supervisor.sweep_if_due(start + serve.SWEEP_INTERVAL_SECONDS + 1)
    assert again.exists()


def test_a_failing_sweep_does_not_stop_the_launcher(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: object, **kwargs: object) -> Swept:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(serve.cleanup, "sweep_stale_uploads", broken)
    serve.sweep_stale_uploads(Settings.from_env())
    assert "could not sweep stale uploads" in capsys.readouterr().err
