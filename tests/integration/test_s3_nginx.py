"""nginx streams downloads from the bucket after the app's X-Accel-Redirect.

A real nginx with the rendered S3 snippets, a tiny upstream standing in for
the app (it answers every download with X-Accel-Redirect to
S3Bucket.internal_get_location), and SeaweedFS behind, over http and over
https (a TLS front with a certificate of its own).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from lfs_server.settings import S3Settings
from lfs_server.store.s3_bucket import S3Bucket
from lfs_server.store.s3_nginx import NginxS3, render_s3_nginx
from tests.engines.seaweedfs import SeaweedFS
from tests.prerequisites import skip_or_fail
from tests.stack import free_port
from tests.waiting import wait_until

LFS_JSON = "application/vnd.git-lfs+json"


class App(BaseHTTPRequestHandler):
    """Answers GET/HEAD /dl/<oid> the way the app does: X-Accel-Redirect, no body."""

    bucket: S3Bucket

    def do_GET(self) -> None:
        oid = self.path.rpartition("/")[2]
        self.send_response(200)
        self.send_header(
            "X-Accel-Redirect", self.bucket.internal_get_location(self.bucket.key_for(oid))
        )
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def app() -> Iterator[tuple[type[App], int]]:
    handler = type("BoundApp", (App,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler, server.server_address[1]
    server.shutdown()
    server.server_close()


def nginx_binary() -> str:
    found = shutil.which(
        "nginx", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    )
    if found is None:
        skip_or_fail("nginx is missing")
    return found


class Nginx:
    """nginx with the S3 snippets in front of the stand-in app, stopped by its PID."""

    def __init__(
        self, root: Path, snippets: NginxS3, app_port: int, extra_server: str = ""
    ) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "nginx.log"
        (root / "nginx.conf").write_text(
            f"""
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {root}/client_temp;
    proxy_temp_path {root}/proxy_temp;
    fastcgi_temp_path {root}/fastcgi_temp;
    uwsgi_temp_path {root}/uwsgi_temp;
    scgi_temp_path {root}/scgi_temp;
{snippets.http}
    server {{
        listen 127.0.0.1:{self.port};
        location /dl/ {{ proxy_pass http://127.0.0.1:{app_port}; }}
{snippets.server}
    }}
{extra_server}
}}
"""
        )
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [nginx_binary(), "-p", str(root), "-c", str(root / "nginx.conf"), "-e", "stderr"],
                stdout=log,
                stderr=log,
            )
        assert wait_until(self.answers, 10), f"nginx did not start:\n{self.log.read_text()}"

    def answers(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"nginx exited:\n{self.log.read_text()}")
        try:
            requests.get(self.url, timeout=1)
        except requests.ConnectionError:
            return False
        return True

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def bucket_name(seaweedfs: SeaweedFS) -> str:
    return seaweedfs.new_bucket()


def s3_settings(bucket: str, endpoint: str) -> S3Settings:
    return S3Settings(bucket=bucket, prefix="nginx/", endpoint=endpoint, addressing="path")


def store(seaweedfs: SeaweedFS, bucket: str, data: bytes) -> str:
    """Put an object behind the code's back; its oid."""
    oid = hashlib.sha256(data).hexdigest()
    key = f"nginx/{oid[:2]}/{oid[2:4]}/{oid}"
    seaweedfs.client.put_object(Bucket=bucket, Key=key, Body=data)
    return oid


@pytest.fixture
def served(
    seaweedfs: SeaweedFS,
    bucket_name: str,
    s3_env: dict[str, str],
    app: tuple[type[App], int],
    tmp_path: Path,
) -> Iterator[Nginx]:
    settings = s3_settings(bucket_name, seaweedfs.endpoint)
    handler, port = app
    handler.bucket = S3Bucket(settings)
    nginx = Nginx(tmp_path / "nginx", render_s3_nginx(settings), port)
    yield nginx
    nginx.stop()


def assert_lfs_error(response: requests.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith(LFS_JSON)
    assert set(response.json()) == {"message"}


def test_whole_and_ranged_downloads_are_byte_identical(
    served: Nginx, seaweedfs: SeaweedFS, bucket_name: str
) -> None:
    data = os.urandom(3 << 20)
    oid = store(seaweedfs, bucket_name, data)
    # The client's credentials must not reach the bucket (it would refuse a
    # request carrying two kinds of authentication).
    headers = {"Authorization": "Basic dXNlcjpwYXNz", "Cookie": "session=1"}
    whole = requests.get(f"{served.url}/dl/{oid}", headers=headers, timeout=30)
    assert whole.status_code == 200, whole.text
    assert hashlib.sha256(whole.content).hexdigest() == oid
    assert whole.headers["Content-Type"] == "application/octet-stream"
    assert "x-amz-request-id" not in whole.headers

    part = requests.get(
        f"{served.url}/dl/{oid}", headers={**headers, "Range": "bytes=1000-1999"}, timeout=30
    )
    assert (part.status_code, part.content) == (206, data[1000:2000])
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
    tail = requests.get(f"{served.url}/dl/{oid}", headers={"Range": "bytes=-100"}, timeout=30)
    assert (tail.status_code, tail.content) == (206, data[-100:])

    head = requests.head(f"{served.url}/dl/{oid}", timeout=30)
    assert (head.status_code, head.headers["Content-Length"], head.content) == (
        200,
        str(len(data)),
        b"",
    )


def test_bucket_errors_are_lfs_json(served: Nginx, seaweedfs: SeaweedFS, bucket_name: str) -> None:
    missing = requests.get(f"{served.url}/dl/{'0' * 64}", timeout=10)
    assert_lfs_error(missing, 404)
    oid = store(seaweedfs, bucket_name, b"short")
    beyond = requests.get(f"{served.url}/dl/{oid}", headers={"Range": "bytes=100-200"}, timeout=10)
    assert_lfs_error(beyond, 416)
    # The internal location is not reachable from outside.
    assert_lfs_error(requests.get(f"{served.url}/.lfs-internal/s3/nginx/x", timeout=10), 404)


class Spy(BaseHTTPRequestHandler):
    """A stand-in bucket that records what reaches it."""

    seen: list[tuple[str, str, dict[str, str]]]

    def do_GET(self) -> None:
        self.seen.append((self.command, self.path, dict(self.headers.items())))
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"spy")

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_only_the_signed_request_reaches_the_bucket(
    s3_env: dict[str, str], app: tuple[type[App], int], tmp_path: Path
) -> None:
    bucket_name = "spied-on"
    spy = type("BoundSpy", (Spy,), {"seen": []})
    bucket_server = ThreadingHTTPServer(("127.0.0.1", 0), spy)
    threading.Thread(target=bucket_server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{bucket_server.server_address[1]}"
    settings = s3_settings(bucket_name, endpoint)
    handler, port = app
    handler.bucket = S3Bucket(settings)
    nginx = Nginx(tmp_path / "nginx", render_s3_nginx(settings), port)
    oid = "ab" * 32
    try:
        headers = {
            "Authorization": "Basic dXNlcjpwYXNz",
            "Cookie": "session=1",
            "X-Amz-Security-Token": "forged",
            "Range": "bytes=0-1",
            "If-None-Match": '"etag"',
        }
        answer = requests.head(f"{nginx.url}/dl/{oid}", headers=headers, timeout=10)
        assert answer.status_code == 200
    finally:
        nginx.stop()
        bucket_server.shutdown()
        bucket_server.server_close()
    [(method, path, sent)] = spy.seen
    assert method == "GET", "HEAD is sent as the GET that was signed"
    assert path.startswith(f"/{bucket_name}/nginx/ab/ab/{oid}?")
    assert "X-Amz-Signature=" in path
    sent = {name.lower(): value for name, value in sent.items()}
    assert sent["host"] == endpoint.removeprefix("http://")
    assert (sent["range"], sent["if-none-match"]) == ("bytes=0-1", '"etag"')
    assert not {"authorization", "cookie", "x-amz-security-token"} & set(sent)


def test_an_unreachable_bucket_is_a_retryable_error(
    bucket_name: str, s3_env: dict[str, str], app: tuple[type[App], int], tmp_path: Path
) -> None:
    settings = s3_settings(bucket_name, f"http://127.0.0.1:{free_port()}")
    handler, port = app
    handler.bucket = S3Bucket(settings)
    nginx = Nginx(tmp_path / "nginx", render_s3_nginx(settings), port)
    try:
        assert_lfs_error(requests.get(f"{nginx.url}/dl/{'1' * 64}", timeout=10), 503)
    finally:
        nginx.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost (and its key)."""
    if shutil.which("openssl") is None:
        skip_or_fail("openssl is missing")
    root = tmp_path_factory.mktemp("tls")
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def tls_front(port: int, cert: Path, key: Path, s3_port: int) -> str:
    """An https server in front of SeaweedFS, passing the signed Host on."""
    return f"""
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://127.0.0.1:{s3_port};
            proxy_set_header Host $http_host;
            proxy_buffering off;
        }}
    }}
"""


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted-ca", "unknown-ca"])
def test_an_https_bucket_is_verified_and_streamed(
    seaweedfs: SeaweedFS,
    bucket_name: str,
    s3_env: dict[str, str],
    app: tuple[type[App], int],
    certificate: tuple[Path, Path],
    tmp_path: Path,
    trusted: bool,
) -> None:
    cert, key = certificate
    tls_port = free_port()
    settings = s3_settings(bucket_name, f"https://localhost:{tls_port}")
    handler, port = app
    handler.bucket = S3Bucket(settings)
    # Without our CA, nginx verifies against the bundle boto3 trusts, which
    # does not hold this self-signed certificate.
    snippets = render_s3_nginx(settings, ca_file=str(cert) if trusted else None)
    assert 'proxy_ssl_name "localhost";' in snippets.server
    nginx = Nginx(
        tmp_path / uuid.uuid4().hex,
        snippets,
        port,
        tls_front(tls_port, cert, key, seaweedfs.s3_port),
    )
    try:
        data = os.urandom(1 << 20)
        oid = store(seaweedfs, bucket_name, data)
        whole = requests.get(f"{nginx.url}/dl/{oid}", timeout=30)
        if not trusted:
            assert_lfs_error(whole, 503)
            return
        assert (whole.status_code, whole.content) == (200, data)
        part = requests.get(f"{nginx.url}/dl/{oid}", headers={"Range": "bytes=10-19"}, timeout=30)
        assert (part.status_code, part.content) == (206, data[10:20])
    finally:
        nginx.stop()
