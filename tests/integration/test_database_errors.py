"""The launcher on a database file that is not one, with an admin to set up at start."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.stack import LAUNCHER, free_port


def test_serve_with_an_admin_on_a_broken_database_stops_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "lfs.db").write_bytes(b"this is not an SQLite database\n" * 64)
    env = {
        **os.environ,
        "LFS_DATA_DIR": str(data),
        "LFS_LISTEN": f"127.0.0.1:{free_port()}",
        "LFS_ADMIN_USER": "admin",
        "LFS_ADMIN_PASSWORD": "admin-password",
    }
    done = subprocess.run(LAUNCHER, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f"lfs-server: LFS_DATA_DIR: the database in {data} failed: file is not a database\n"
    )
