"""Odd but legal paths reach nginx.conf quoted; values it cannot hold are refused."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import requests

from tests.integration.helpers import download_action, sha256, stored_copies, upload
from tests.stack import LAUNCHER, Stack, free_port


def push_and_fetch(stack: Stack, data: bytes) -> None:
    upload(stack, "team/paths", data)
    assert [path.read_bytes() for path in stored_copies(stack, sha256(data))] == [data]
    action = download_action(stack, "team/paths", data)
    got = requests.get(action["href"], headers=action.get("header", {}), timeout=30)
    assert got.status_code == 200 and got.content == data


@pytest.mark.parametrize("name", ["with space", "semi;colon", 'brace{ "quote" \\ back}'])
def test_a_data_dir_with_odd_characters_serves_a_push(tmp_path: Path, name: str) -> None:
    root = tmp_path / name
    root.mkdir()
    stack = Stack(root, LFS_ANONYMOUS="write").start()
    try:
        push_and_fetch(stack, f"object under {name}\n".encode())
    finally:
        assert stack.stop() == 0


def test_dollar_in_tmpdir(tmp_path: Path) -> None:
    # TMPDIR holds the run dir; pid, temp paths and the socket take no variables.
    tmpdir = tmp_path / "$pid x"
    tmpdir.mkdir()
    stack = Stack(tmp_path, LFS_ANONYMOUS="write", TMPDIR=str(tmpdir)).start()
    try:
        (run_dir,) = tmpdir.glob("lfs-server-*")
        assert (run_dir / "nginx.pid").is_file()
        push_and_fetch(stack, b"object with a run dir under a dollar\n")
    finally:
        assert stack.stop() == 0


@pytest.mark.parametrize(
    ("name", "message"),
    [("new\nline", "LFS_DATA_DIR: control characters"), ("cost$host", "LFS_DATA_DIR: a '$'")],
)
def test_a_data_dir_nginx_cannot_hold_is_refused(tmp_path: Path, name: str, message: str) -> None:
    env = {
        **os.environ,
        "LFS_DATA_DIR": str(tmp_path / name),
        "LFS_LISTEN": f"127.0.0.1:{free_port()}",
    }
    done = subprocess.run(LAUNCHER, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith(f"lfs-server: {message}"), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
