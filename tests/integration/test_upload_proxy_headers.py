"""What the app sees of an upload: nginx's own forwarding headers, never the client's.

The upload, upload-auth and upload-failed locations set headers of their
own, and nginx then inherits none of the server-level ones there. This runs
the real rendered nginx.conf in front of a recording upstream on the
app's unix socket and sends an upload with a forged X-Forwarded-For.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lfs_server import nginx_conf
from lfs_server.serve import find_nginx
from lfs_server.settings import Settings
from tests.stack import free_port
from tests.waiting import wait_until

OID = "a" * 64
CLIENT_HOST = "lfs.example.test:8443"
OPEN = 0o711  # nginx's workers may run as another user (nobody, under a root master)


@dataclass(frozen=True)
class Seen:
    connection: int
    method: str
    path: str
    headers: dict[str, str]


class Recorder(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path) -> None:
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        super().__init__(str(path), Handler)
        path.chmod(0o666)


class Handler(http.server.BaseHTTPRequestHandler):
    """Answers like the app: upload-auth 204, upload-commit 200, upload-failed 500."""

    protocol_version = "HTTP/1.1"  # keep-alive, as gunicorn
    server: Recorder

    def record(self) -> None:
        seen = Seen(id(self), self.command, self.path, dict(self.headers.items()))
        with self.server.lock:
            self.server.seen.append(seen)

    def answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.git-lfs+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.record()
        if self.path == "/.lfs-internal/upload-auth":
            self.answer(204, b"")
        else:
            self.answer(500, json.dumps({"message": "could not write the upload"}).encode())

    def do_POST(self) -> None:
        self.record()
        self.answer(200, b"{}")

    def address_string(self) -> str:
        return "nginx"  # a unix socket's peer has no address

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class Front:
    port: int
    recorder: Recorder
    uploads: Path


@pytest.fixture
def front(tmp_path: Path) -> Iterator[Front]:
    data, run_dir = tmp_path / "data", tmp_path / "run"
    for folder in (data, data / "tmp", data / "tmp" / "uploads", data / "objects", run_dir):
        folder.mkdir()
        folder.chmod(OPEN)
    (run_dir / "app").mkdir(mode=OPEN)
    socket_path = run_dir / "app" / "gunicorn.sock"
    port = free_port()
    settings = Settings.from_env(
        {"LFS_DATA_DIR": str(data), "LFS_LISTEN": f"127.0.0.1:{port}", "LFS_SECRET_KEY": "k" * 48}
    )
    conf = run_dir / "nginx.conf"
    conf.write_text(nginx_conf.render(settings, run_dir, socket_path, str(run_dir / "access.log")))
    recorder = Recorder(socket_path)
    threading.Thread(target=recorder.serve_forever, daemon=True).start()
    nginx = subprocess.Popen(
        [find_nginx("nginx"), "-p", str(run_dir), "-c", str(conf), "-e", "stderr"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_until(lambda: listening(port) or nginx.poll() is not None, timeout=10)
        assert nginx.poll() is None, nginx.communicate()[1]
        yield Front(port, recorder, data / "tmp" / "uploads")
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
        recorder.shutdown()
        recorder.server_close()


def listening(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        connection.request("GET", "/.lfs-internal/anything")
        connection.getresponse().read()
        return True
    except OSError:
        return False
    finally:
        connection.close()


# Content-Length from which nginx asks upload-auth before the body (10**6:
# seven digits); a smaller upload goes to the commit alone.
CHECKED_FIRST = 1_000_000
SMALL = 5


def put_upload(front: Front, size: int) -> int:
    """An upload of `size` bytes whose client forges every forwarding header."""
    connection = http.client.HTTPConnection("127.0.0.1", front.port, timeout=30)
    try:
        connection.putrequest("PUT", f"/.lfs/upload/{OID}", skip_host=True)
        for name, value in {
            "Host": CLIENT_HOST,
            "Authorization": "Bearer a-token",
            "X-Forwarded-For": "203.0.113.9",
            "X-Forwarded-Proto": "https",
            "Content-Length": str(size),
        }.items():
            connection.putheader(name, value)
        connection.endheaders(os.urandom(size))
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def assert_forwarded_by_nginx(seen: Seen, size: int) -> None:
    assert seen.headers.get("X-LFS-Oid") == OID, seen
    assert seen.headers.get("X-LFS-Content-Length") == str(size), seen
    assert seen.headers.get("X-Forwarded-For") == "127.0.0.1", seen
    assert seen.headers.get("X-Forwarded-Proto") == "http", seen
    assert seen.headers.get("Host") == CLIENT_HOST, seen
    # Connection "" keeps the upstream connection alive; without it nginx says close.
    assert "close" not in seen.headers.get("Connection", "").lower(), seen


def test_an_upload_reaches_the_app_with_nginxs_headers_on_a_kept_alive_connection(
    front: Front,
) -> None:
    assert put_upload(front, CHECKED_FIRST) == 200
    auth, commit = front.recorder.seen
    assert (auth.method, auth.path) == ("GET", "/.lfs-internal/upload-auth")
    assert (commit.method, commit.path) == ("POST", "/.lfs-internal/upload-commit")
    for seen in (auth, commit):
        assert_forwarded_by_nginx(seen, CHECKED_FIRST)
    assert commit.connection == auth.connection


@pytest.mark.parametrize("size", [SMALL, CHECKED_FIRST - 1])
def test_an_upload_under_1_mb_reaches_the_app_once(front: Front, size: int) -> None:
    assert put_upload(front, size) == 200
    (commit,) = front.recorder.seen
    assert (commit.method, commit.path) == ("POST", "/.lfs-internal/upload-commit")
    assert_forwarded_by_nginx(commit, size)


@pytest.mark.parametrize(
    ("size", "paths"),
    [
        (CHECKED_FIRST, ["/.lfs-internal/upload-auth", "/.lfs-internal/upload-failed"]),
        (SMALL, ["/.lfs-internal/upload-failed"]),
    ],
)
def test_a_failed_body_write_reaches_upload_failed_with_nginxs_headers(
    front: Front, size: int, paths: list[str]
) -> None:
    # nginx's workers cannot create the body's temp file: a 500 after
    # upload-auth passed (the app's or, under 1 MB, nginx's own 204), which
    # @e500 hands to upload-failed.
    os.chmod(front.uploads, 0)
    try:
        assert put_upload(front, size) == 500
    finally:
        os.chmod(front.uploads, OPEN)
    assert [seen.path for seen in front.recorder.seen] == paths
    for seen in front.recorder.seen:
        assert_forwarded_by_nginx(seen, size)
