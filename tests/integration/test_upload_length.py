"""An upload must declare its size: Content-Length equal to the token's, before any body byte.

Without the check, a chunked body under a token for a 1-byte object could
stream up to LFS_MAX_OBJECT_SIZE into a temp file before the commit saw the
size. Raw sockets, so nothing normalises the requests.
"""

from __future__ import annotations

import socket
from contextlib import suppress

from tests.integration.helpers import (
    actions_for,
    assert_raw_lfs_error,
    parse_raw_response,
    raw_request,
    read_response_head,
    sha256,
    stored_copies,
)
from tests.stack import Stack
from tests.stores import LOCAL, S3_PROXY

# Upload bodies come through nginx in both.
STORES = (LOCAL, S3_PROXY)

REPO = "team/length"
MIB = 1 << 20


def upload_token(stack: Stack, data: bytes) -> tuple[str, str]:
    """The upload href's path and its Authorization value, from a batch."""
    action = actions_for(stack, REPO, "upload", data)["upload"]
    return f"/.lfs/upload/{sha256(data)}", action["header"]["Authorization"]


def upload_head(stack: Stack, data: bytes, *headers: str) -> bytes:
    """A PUT request head for `data`'s upload with its token and `headers`."""
    path, token = upload_token(stack, data)
    lines = [f"PUT {path} HTTP/1.1", f"Host: 127.0.0.1:{stack.port}", f"Authorization: {token}"]
    return ("\r\n".join([*lines, *headers]) + "\r\n\r\n").encode()


def final_response(sock: socket.socket, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """The first non-1xx response on `sock` (a timeout: none came)."""
    sock.settimeout(timeout)
    data = b""
    while True:
        data = data.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n")
        if b"\r\n\r\n" in data:
            status, headers, body = parse_raw_response(data)
            if len(body) >= int(headers.get("content-length", "0")):
                return status, headers, body
        received = sock.recv(65536)
        assert received, f"connection closed after {data[:300]!r}"
        data += received


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def test_chunked_upload_with_expect_is_refused_before_any_body_byte(stack: Stack) -> None:
    head = upload_head(stack, b"1", "Transfer-Encoding: chunked", "Expect: 100-continue")
    with socket.create_connection(("127.0.0.1", stack.port), timeout=30) as sock:
        sock.sendall(head)
        # The answer comes without a body byte sent. (nginx sends "100 Continue"
        # in front of every error to a request that expects it, so that a
        # client may send the body it then reads and drops, writing nothing.)
        status, headers, body = final_response(sock, timeout=10)
    message = assert_raw_lfs_error(status, headers, body, 411, stack)["message"]
    assert "Content-Length required" in message and "1 bytes" in message, message
    assert stack.upload_tmp_files() == []


def test_chunked_body_under_a_small_token_writes_nothing(stack: Stack) -> None:
    data = b"2"
    head = upload_head(stack, data, "Transfer-Encoding: chunked")
    with socket.create_connection(("127.0.0.1", stack.port), timeout=30) as sock:
        sock.sendall(head + chunk(b"x" * MIB))
        status, headers, body = read_response_head(sock, timeout=10)
        assert_raw_lfs_error(status, headers, body, 411, stack)
        # Go on streaming: whatever nginx still reads, it writes nowhere.
        with suppress(OSError):
            for _ in range(7):
                sock.sendall(chunk(b"x" * MIB))
        assert stack.upload_tmp_files() == []
    assert stored_copies(stack, sha256(data)) == []


def test_content_length_with_chunked_is_refused(stack: Stack) -> None:
    """Both headers at once (a request-smuggling shape): nginx refuses it as 400."""
    data = b"4"
    head = upload_head(stack, data, "Content-Length: 1", "Transfer-Encoding: chunked")
    with socket.create_connection(("127.0.0.1", stack.port), timeout=30) as sock:
        sock.sendall(head + chunk(b"x" * 1000) + b"0\r\n\r\n")
        status, headers, body = read_response_head(sock, timeout=10)
    assert_raw_lfs_error(status, headers, body, 400, stack)
    assert stack.upload_tmp_files() == []
    assert stored_copies(stack, sha256(data)) == []


def test_the_declared_size_still_uploads(stack: Stack) -> None:
    data = b"5" * 1000
    path, token = upload_token(stack, data)
    status, _, answer = raw_request(stack, "PUT", path, data, {"Authorization": token})
    assert status == 200, answer
    assert len(stored_copies(stack, sha256(data))) == 1
