"""A stop (SIGTERM, as `docker stop` sends) lets uploads in flight finish
within LFS_STOP_GRACE and takes no new connection; after the grace it cuts."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

from tests.integration.helpers import (
    actions_for,
    read_response_head,
    sha256,
    stored_copies,
    wait_until,
)
from tests.stack import Stack

REPO = "team/deploys"
SIZE = 4 << 20
FIRST_PART = 2 << 20  # more than nginx's 1 MiB body buffer: a temp file holds it


def start_upload(stack: Stack, data: bytes) -> socket.socket:
    """A raw PUT of `data` whose body stops after FIRST_PART bytes."""
    action = actions_for(stack, REPO, "upload", data)["upload"]
    href = urlsplit(action["href"])
    headers = {
        **action["header"],
        "Host": href.netloc,
        "Content-Length": str(len(data)),
        "Content-Type": "application/octet-stream",
    }
    head = f"PUT {href.path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock = socket.create_connection(("127.0.0.1", stack.port), timeout=30)
    sock.sendall(head.encode() + b"\r\n" + data[:FIRST_PART])
    assert wait_until(
        lambda: any(path.stat().st_size > 0 for path in stack.upload_tmp_files()), timeout=10
    ), "nginx never wrote the body to a temp file"
    return sock


def refuses_connections(stack: Stack) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", stack.port), timeout=2):
            return False  # accepted before the port closed: try again
    except ConnectionRefusedError:
        return True


def test_upload_in_flight_finishes_during_a_stop(tmp_path: Path) -> None:
    stack = Stack(tmp_path, LFS_ANONYMOUS="write").start()
    assert stack.proc is not None
    data = os.urandom(SIZE)
    with start_upload(stack, data) as sock:
        stack.proc.send_signal(signal.SIGTERM)
        assert wait_until(lambda: refuses_connections(stack), timeout=10)
        assert stack.proc.poll() is None
        sock.sendall(data[FIRST_PART:])
        status, _, body = read_response_head(sock, timeout=30)
    assert status == 200, body[:500]
    assert [sha256(path.read_bytes()) for path in stored_copies(stack, sha256(data))] == [
        sha256(data)
    ]
    assert stack.proc.wait(timeout=30) == 0


def test_a_stalled_upload_is_cut_after_the_grace(tmp_path: Path) -> None:
    grace = 2
    stack = Stack(tmp_path, LFS_ANONYMOUS="write", LFS_STOP_GRACE=str(grace)).start()
    assert stack.proc is not None
    data = os.urandom(SIZE)
    with start_upload(stack, data) as sock:
        started = time.monotonic()
        stack.proc.send_signal(signal.SIGTERM)
        assert stack.proc.wait(timeout=30) == 0
        elapsed = time.monotonic() - started
        sock.settimeout(5)
        try:
            answer = sock.recv(65536)
        except ConnectionResetError:
            answer = b""
    assert answer == b"", answer[:300]
    assert grace - 0.5 < elapsed < grace + 2.5, f"stopped after {elapsed:.1f}s"
    assert stored_copies(stack, sha256(data)) == []
