"""nginx hardening on the real stack: slow clients are cut off at the configured
timeouts, JSON bodies are size-limited, responses carry security headers and
no version, and the access log holds no secrets.

Timeouts are read from nginx/nginx.conf.template, so the tests follow the
configuration (the slow-client test takes about client_body_timeout seconds).
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.integration.helpers import (
    actions_for,
    assert_lfs_error,
    assert_raw_lfs_error,
    batch_for,
    bearer,
    download_action,
    lfs_headers,
    parse_raw_response,
    put_action,
    raw_exchange,
    sha256,
    upload,
    verify_action,
    wait_until,
)
from tests.lfsapi import basic
from tests.stack import LFS_MEDIA_TYPE, Stack

TEMPLATE = Path(__file__).resolve().parents[2] / "nginx" / "nginx.conf.template"
REPO = "hard/repo"
USER, PASSWORD = "writer", "writer password 5678"
AUTH = (USER, PASSWORD)
JSON_LIMIT = 4 * 1024 * 1024

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}


def configured_seconds(directive: str) -> float:
    """The first (server-level) value of a `directive Ns;` line of the template."""
    match = re.search(rf"^\s*{directive}\s+(\d+)s;", TEMPLATE.read_text(), re.MULTILINE)
    assert match, f"{directive} is not set in {TEMPLATE.name}"
    return float(match.group(1))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    server = Stack(tmp_path_factory.mktemp("hardening"), LFS_ANONYMOUS="none").start()
    server.add_user(USER, PASSWORD, ("*", "write"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def access_token(stack: Stack) -> str:
    done = stack.cli("token", "create", USER, "--note", "hardening test")
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip().splitlines()[0]
    assert token.startswith("lfs_"), done.stdout
    return token


# ------------------------------------------------------------- slow clients


def hold_open(
    stack: Stack, first: bytes, drip: bytes, limit: float, opened: threading.Semaphore
) -> tuple[float, bytes]:
    """Send `first` (then release `opened`), then one byte of `drip` every
    0.5 s (never finishing the request) until the server closes: (seconds the
    connection lived, bytes received). Fails when it is still open after
    `limit` + 10 s."""
    started = time.monotonic()
    received = b""
    with socket.create_connection(("127.0.0.1", stack.port), timeout=5) as sock:
        if first:
            sock.sendall(first)
        opened.release()
        sent = 0
        while time.monotonic() < started + limit + 10:
            readable, _, _ = select.select([sock], [], [], 0.5)
            try:
                if readable:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    received += chunk
                elif drip:
                    sock.send(drip[sent % len(drip) : sent % len(drip) + 1])
                    sent += 1
            except (ConnectionResetError, BrokenPipeError):
                break
        else:
            pytest.fail(f"a slow client was still connected after {limit + 10:.0f} s")
    return time.monotonic() - started, received


def accept_queue(port: int) -> int:
    """Connections to 127.0.0.1:`port` that the kernel holds for nginx to accept
    (the rx_queue of a listening socket in /proc/net/tcp is its accept queue)."""
    local = f"0100007F:{port:04X}"
    queues = [
        int(fields[4].partition(":")[2], 16)
        for fields in (line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:])
        if fields[1] == local and fields[3] == "0A"  # 0A: LISTEN
    ]
    assert queues, f"nothing listens on 127.0.0.1:{port}"
    return sum(queues)


def assert_cut_off(outcome: tuple[float, bytes], limit: float, stack: Stack) -> None:
    lived, received = outcome
    assert limit - 1 <= lived <= limit + 3, f"cut off after {lived:.1f} s, configured {limit} s"
    if received:  # nginx closes silently, or says 408 in LFS JSON
        status, headers, body = parse_raw_response(received)
        assert_raw_lfs_error(status, headers, body, 408, stack)


def test_slow_clients_are_cut_off_at_the_configured_timeouts(stack: Stack) -> None:
    header_timeout = configured_seconds("client_header_timeout")
    body_timeout = configured_seconds("client_body_timeout")
    assert header_timeout <= 30 and body_timeout <= 60, "keep the slow-client limits tight"
    head = f"POST /{REPO}.git/info/lfs/objects/batch HTTP/1.1\r\nHost: x\r\n".encode()
    cases = {
        # Connects and says nothing.
        "silent": (b"", b"", header_timeout),
        # Slowloris: a request line and headers that never end, one byte at
        # a time; each byte arrives well within the timeout, yet the whole
        # header must arrive within it.
        "slow headers": (head, b"X-Slow: zzzzzzzz\r\n", header_timeout),
        "slow request line": (b"GET /", b"abcdefgh", header_timeout),
        # Complete headers, then a body that never comes.
        "stalled body": (
            head + f"Content-Type: {LFS_MEDIA_TYPE}\r\nContent-Length: 100\r\n\r\n{{".encode(),
            b"",
            body_timeout,
        ),
    }
    crowd = 40
    opened = threading.Semaphore(0)
    with ThreadPoolExecutor(max_workers=len(cases) + crowd) as pool:
        futures = {
            name: pool.submit(hold_open, stack, first, drip, limit, opened)
            for name, (first, drip, limit) in cases.items()
        }
        # A crowd of slowloris connections does not keep others out.
        crowd_futures = [
            pool.submit(hold_open, stack, head, b"X-Slow: zzzzzzzz\r\n", header_timeout, opened)
            for _ in range(crowd)
        ]
        # Every slow connection is open, and nginx has accepted them all (none
        # waits in the listen queue): it is holding them while /healthz is asked.
        for _ in range(len(cases) + crowd):
            assert opened.acquire(timeout=10), "a slow client could not connect"
        assert wait_until(lambda: accept_queue(stack.port) == 0), (
            f"nginx left {accept_queue(stack.port)} connections unaccepted"
        )
        for _ in range(5):
            started = time.monotonic()
            assert requests.get(f"{stack.url}/healthz", timeout=5).status_code == 200
            assert time.monotonic() - started < 1.0
        for name, future in futures.items():
            limit = cases[name][2]
            try:
                assert_cut_off(future.result(), limit, stack)
            except AssertionError as exc:
                raise AssertionError(f"{name}: {exc}") from None
        for future in crowd_futures:
            assert_cut_off(future.result(), header_timeout, stack)


def test_upload_body_timeout_is_generous_but_bounded() -> None:
    text = TEMPLATE.read_text()
    upload = text[text.index('location ~ "^/\\.lfs/upload/') :]
    upload = upload[: upload.index("proxy_pass")]
    match = re.search(r"client_body_timeout (\d+)s;", upload)
    assert match, upload
    assert 60 <= int(match.group(1)) <= 300
    assert re.search(r"^\s*reset_timedout_connection on;", text, re.MULTILINE)
    assert configured_seconds("send_timeout") <= 120
    assert configured_seconds("keepalive_timeout") <= 120


# ------------------------------------------------------------- size limits


def raw_head_only(stack: Stack, method: str, path: str, length: int) -> bytes:
    """The raw response to headers announcing a `length`-byte JSON body, and no body."""
    request = (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {LFS_MEDIA_TYPE}\r\n"
        f"Authorization: {basic(USER, PASSWORD)['Authorization']}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", stack.port), timeout=5) as sock:
        sock.sendall(request)
        received = b""
        # Until the whole answer is in: nginx keeps the connection open a
        # while for the body it refused (lingering close).
        while not complete(received):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    return received


def complete(received: bytes) -> bool:
    head, sep, body = received.partition(b"\r\n\r\n")
    match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return bool(sep and match and len(body) >= int(match.group(1)))


@pytest.mark.parametrize(
    "path",
    [
        f"/{REPO}.git/info/lfs/objects/batch",
        f"/{REPO}.git/info/lfs/locks",
        f"/{REPO}.git/info/lfs/locks/verify",
        f"/{REPO}.git/info/lfs/locks/1/unlock",
        "/.lfs/verify",
    ],
)
def test_oversize_json_is_refused_with_413(stack: Stack, path: str) -> None:
    status, headers, body = parse_raw_response(raw_head_only(stack, "POST", path, JSON_LIMIT + 1))
    message = assert_raw_lfs_error(status, headers, body, 413, stack)["message"]
    assert "4 MiB" in message, message
    assert headers.get("server") == "nginx"


def test_json_up_to_the_limit_is_accepted_and_chunked_excess_refused(stack: Stack) -> None:
    text = json.dumps({"operation": "download", "objects": []})
    padded = text[:-1] + " " * (JSON_LIMIT - len(text)) + "}"
    assert len(padded) == JSON_LIMIT
    response = requests.post(
        stack.lfs_base(REPO) + "/objects/batch",
        data=padded,
        headers=lfs_headers(),
        auth=(USER, PASSWORD),
        timeout=30,
    )
    assert response.status_code == 200, response.text[:300]

    def chunks() -> Iterator[bytes]:
        yield text[:-1].encode()
        for _ in range(5):
            yield b" " * (JSON_LIMIT // 4)
        yield b"}"

    try:
        response = requests.post(
            stack.lfs_base(REPO) + "/objects/batch",
            data=chunks(),
            headers=lfs_headers(),
            auth=(USER, PASSWORD),
            timeout=30,
        )
    except requests.ConnectionError:
        return  # nginx may close while the client still sends: also a refusal
    assert_lfs_error(response, 413, stack)


# ------------------------------------------------------------- headers


def assert_hardened_headers(what: str, headers: requests.structures.CaseInsensitiveDict) -> None:
    assert headers.get("Server") == "nginx", (what, headers.get("Server"))
    for name, expected in SECURITY_HEADERS.items():
        # requests joins repeated headers with ", ": equality also means "once".
        assert headers.get(name) == expected, (what, name, headers.get(name))


def test_responses_carry_security_headers_and_no_version(stack: Stack) -> None:
    data = os.urandom(3000)
    upload(stack, REPO, data, auth=AUTH)
    other = os.urandom(100)
    actions = actions_for(stack, REPO, "upload", other, auth=AUTH)
    download = download_action(stack, REPO, data, auth=AUTH)
    bad_token = {"Authorization": "Bearer " + bearer(download)[:-4] + "AAAA"}

    responses = {
        "healthz 200": requests.get(f"{stack.url}/healthz", timeout=10),
        "batch 200": batch_for(stack, REPO, "download", data, auth=AUTH),
        "batch 401": batch_for(stack, REPO, "download", data, auth=None),
        "batch 422": requests.post(
            stack.lfs_base(REPO) + "/objects/batch",
            data=b"[not json",
            headers=lfs_headers(),
            auth=(USER, PASSWORD),
            timeout=10,
        ),
        "nginx 404": requests.get(f"{stack.url}/.lfs/nothing-here", timeout=10),
        "nginx 405": requests.get(actions["upload"]["href"], timeout=10),
        "upload 403 (auth_request)": requests.put(
            actions["upload"]["href"], data=other, headers=bad_token, timeout=10
        ),
        "upload 200": put_action(actions["upload"], other),
        "verify 200": requests.post(
            verify_action(stack, actions["upload"])["href"],
            json={"oid": sha256(other), "size": len(other)},
            headers={
                **verify_action(stack, actions["upload"])["header"],
                "Content-Type": LFS_MEDIA_TYPE,
            },
            timeout=10,
        ),
        "download 200": requests.get(download["href"], headers=download["header"], timeout=10),
        "download 206": requests.get(
            download["href"], headers={**download["header"], "Range": "bytes=0-9"}, timeout=10
        ),
        "download 416": requests.get(
            download["href"], headers={**download["header"], "Range": "bytes=9999-"}, timeout=10
        ),
        "download 403": requests.get(download["href"], headers=bad_token, timeout=10),
        "locks 200": requests.get(
            stack.lfs_base(REPO) + "/locks",
            headers=lfs_headers(),
            auth=(USER, PASSWORD),
            timeout=10,
        ),
    }
    expected_status = {name: int(re.findall(r"\d{3}", name)[-1]) for name in responses}
    for name, response in responses.items():
        assert response.status_code == expected_status[name], (name, response.text[:300])
        assert_hardened_headers(name, response.headers)
    assert responses["download 200"].content == data
    # JSON answers and object bytes are never cached by a proxy or browser.
    for name in (
        "batch 200",
        "batch 401",
        "nginx 404",
        "verify 200",
        "download 200",
        "healthz 200",
    ):
        assert responses[name].headers.get("Cache-Control") == "no-store", name


def raw_header_lines(raw: bytes) -> list[tuple[str, str]]:
    head = raw.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]
    return [(n.strip().lower(), v.strip()) for n, _, v in (line.partition(":") for line in head)]


def test_errors_nginx_makes_alone_carry_the_headers_once(stack: Stack) -> None:
    raw = {
        "413": raw_head_only(stack, "POST", f"/{REPO}.git/info/lfs/objects/batch", 10**8),
        "400": raw_exchange(stack, b"GARBAGE\r\n\r\n"),  # nginx closes after a 400
    }
    for name, response in raw.items():
        lines = raw_header_lines(response)
        assert response.startswith(f"HTTP/1.1 {name}".encode()), response[:200]
        names = [header for header, _ in lines]
        for header, expected in {**SECURITY_HEADERS, "cache-control": "no-store"}.items():
            assert names.count(header) == 1, (name, header, lines)
            assert dict(lines)[header] == expected, (name, header, lines)
        assert dict(lines)["server"] == "nginx", lines


# ------------------------------------------------------------- the access log


def test_access_log_holds_no_secrets(stack: Stack, access_token: str) -> None:
    data = os.urandom(2048)
    credentials = basic(USER, PASSWORD)["Authorization"].removeprefix("Basic ")
    # Password and access token as Basic credentials; transfer tokens as Bearer.
    actions = actions_for(stack, REPO, "upload", data, auth=AUTH)
    assert put_action(actions["upload"], data).status_code == 200
    download = download_action(stack, REPO, data, auth=AUTH)
    assert requests.get(download["href"], headers=download["header"], timeout=10).ok
    token_batch = batch_for(stack, REPO, "download", data, auth=(USER, access_token))
    assert token_batch.status_code == 200
    # A token pasted into the user-name field, and secrets in a query string.
    misplaced = batch_for(stack, REPO, "download", data, auth=(access_token, ""))
    assert misplaced.status_code == 401
    query_secret = "s3cr3t-in-the-query"
    response = requests.get(
        f"{stack.lfs_base(REPO)}/locks?access_token={query_secret}&password={query_secret}",
        auth=(USER, PASSWORD),
        headers=lfs_headers(),
        timeout=10,
    )
    assert response.status_code == 200, response.text[:300]
    transfer_tokens = [bearer(action) for action in (*actions.values(), download)]

    log = wait_for_log(stack, "/locks?<redacted>")
    # lfs_<hex id>_<secret>: the secret is base64url, so it may hold "_" itself.
    token_secret = access_token.split("_", 2)[2]
    secrets = [PASSWORD, credentials, access_token, token_secret, query_secret]
    for secret in secrets + transfer_tokens:
        assert secret not in log, f"a secret ({secret[:8]}...) is in the server log"
    assert "Bearer" not in log and "eyJ" not in log
    assert f" - {USER} [" in log  # the user name itself is logged
    assert " - <token> [" in log  # a token in the user-name field is not


def wait_for_log(stack: Stack, marker: str, timeout: float = 5.0) -> str:
    """The server log, once `marker` is in it."""
    assert wait_until(lambda: marker in stack.log.read_text(errors="replace"), timeout), (
        f"{marker!r} never reached the log"
    )
    return stack.log.read_text(errors="replace")
