"""A database file the commands cannot use: one line naming LFS_DATA_DIR, exit 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from lfs_server import cli


@pytest.fixture
def not_a_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "lfs.db").write_bytes(b"this is not an SQLite database\n" * 64)
    monkeypatch.setenv("LFS_DATA_DIR", str(data))
    monkeypatch.setenv("LFS_SECRET_KEY", "k" * 48)
    return data


@pytest.mark.parametrize("argv", [["user", "list"], ["grants"], ["check-config"]])
def test_a_file_that_is_not_a_database_is_one_line(
    not_a_database: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err == (
        f"lfs-server: LFS_DATA_DIR: the database in {not_a_database} failed: "
        "file is not a database\n"
    )
