"""Real storage failures on the running stack: each is reported as what it is.

- nginx fails to write an upload body with room on the disk: 500 with a
  plain message, not 507 (the file is made immutable while it is written,
  so nginx's pwrite() fails with EPERM);
- linking a verified upload into place fails (its folder is immutable):
  500, and the server log names the errno and the paths;
- tmp/uploads on another filesystem than objects/ (a tmpfs mounted there):
  the launcher and `lfs-server check-config` refuse, naming LFS_DATA_DIR.

The disk-full cases (507) are in test_faults.py. Without chattr or mount
rights these tests skip, or fail when CI is set.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from tests.integration.helpers import (
    actions_for,
    assert_lfs_error,
    assert_raw_lfs_error,
    put_action,
    read_response_head,
    sha256,
    stored_copies,
    wait_until,
)
from tests.prerequisites import skip_or_fail
from tests.stack import Stack, free_port

REPO = "team/failures"
MIB = 1 << 20


def chattr(flag: str, path: Path) -> None:
    done = subprocess.run(["chattr", flag, str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def immutable_works(stack: Stack) -> None:
    """chattr +i works on the data dir's filesystem (root, ext4, tmpfs, ...)."""
    if shutil.which("chattr") is None:
        skip_or_fail("chattr is not installed (Debian: e2fsprogs)")
    probe = stack.data_dir / "immutable-probe"
    probe.write_bytes(b"")
    done = subprocess.run(["chattr", "+i", str(probe)], capture_output=True, text=True)
    if done.returncode != 0:
        probe.unlink()
        skip_or_fail(f"chattr +i is refused here: {done.stderr.strip()}")
    chattr("-i", probe)
    probe.unlink()


@contextmanager
def immutable(path: Path) -> Iterator[None]:
    chattr("+i", path)
    try:
        yield
    finally:
        chattr("-i", path)


def test_a_body_write_failure_with_room_left_is_500_not_507(
    stack: Stack, immutable_works: None
) -> None:
    data = os.urandom(8 * MIB)
    token = actions_for(stack, REPO, "upload", data)["upload"]["header"]["Authorization"]
    with socket.create_connection(("127.0.0.1", stack.port), timeout=30) as sock:
        sock.sendall(
            f"PUT /.lfs/upload/{sha256(data)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: {token}\r\nContent-Length: {len(data)}\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(data[: 3 * MIB])
        # nginx writes the body to its temp file in 1 MiB steps: once it has
        # begun, the file turns immutable and the next write fails.
        assert wait_until(
            lambda: any(f.stat().st_size >= MIB for f in stack.upload_tmp_files()), timeout=10
        ), stack.upload_tmp_files()
        (temp,) = stack.upload_tmp_files()
        with immutable(temp):
            with suppress(OSError):
                sock.sendall(data[3 * MIB :])
            status, headers, body = read_response_head(sock, timeout=30)
    temp.unlink(missing_ok=True)  # nginx could not remove it while immutable
    message = assert_raw_lfs_error(status, headers, body, 500, stack)["message"]
    assert message == "could not write the upload; try again", message
    assert "Operation not permitted" in stack.log.read_text(errors="replace")
    assert stored_copies(stack, sha256(data)) == []
    # A retry succeeds: it was not the disk.
    assert put_action(actions_for(stack, REPO, "upload", data)["upload"], data).status_code == 200


def test_a_failed_link_into_place_is_500_and_logged_with_errno_and_paths(
    stack: Stack, immutable_works: None
) -> None:
    data = os.urandom(100_000)
    oid = sha256(data)
    folder = stack.data_dir / "objects" / oid[:2] / oid[2:4]
    folder.mkdir(parents=True)
    owner = stack.data_dir.stat()
    for made in (folder, folder.parent, folder.parent.parent):  # the server's, as if it made them
        os.chown(made, owner.st_uid, owner.st_gid)
    action = actions_for(stack, REPO, "upload", data)["upload"]
    before = stack.log.stat().st_size
    with immutable(folder):
        response = put_action(action, data)
    body = assert_lfs_error(response, 500, stack)
    assert body["message"] == "could not store the object", body
    assert "EPERM" not in response.text
    assert wait_until(lambda: stack.log.stat().st_size > before)
    with open(stack.log, "rb") as log:
        log.seek(before)
        logged = log.read().decode(errors="replace")
    line = next(line for line in logged.splitlines() if "could not store object" in line)
    assert oid in line and "EPERM" in line, line
    assert f"{folder}/{oid}" in line and f"{stack.data_dir}/tmp/uploads/" in line, line
    assert stored_copies(stack, oid) == []
    assert put_action(action, data).status_code == 200
    print(f"\nlogged: {line}")


@contextmanager
def tmpfs_at(where: Path) -> Iterator[None]:
    where.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        skip_or_fail(f"cannot mount a tmpfs: {done.stderr.strip() or done.returncode}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_uploads_on_another_filesystem_than_the_store_are_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "objects").mkdir(parents=True)
    env = {
        **os.environ,
        "LFS_DATA_DIR": str(data_dir),
        "LFS_LISTEN": f"127.0.0.1:{free_port()}",
    }
    with tmpfs_at(data_dir / "tmp" / "uploads"):
        for command in ("serve", "check-config"):
            done = subprocess.run(
                [sys.executable, "-m", "lfs_server.cli", command],
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert done.returncode == 2, (command, done.stdout, done.stderr)
            lines = done.stderr.splitlines()
            assert len(lines) == 1, (command, done.stderr)
            assert lines[0].startswith("lfs-server: LFS_DATA_DIR: "), lines
            assert "different filesystems" in lines[0], lines
            assert list((data_dir / "tmp" / "uploads").iterdir()) == []
            assert list((data_dir / "objects").iterdir()) == []
