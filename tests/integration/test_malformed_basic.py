"""Basic credentials that are not ASCII, sent byte for byte through nginx and
gunicorn: a 401 in LFS JSON, no traceback in the server's log."""

from __future__ import annotations

import json

import pytest

from tests.integration.helpers import assert_raw_lfs_error, parse_raw_response, raw_exchange
from tests.stack import LFS_MEDIA_TYPE, Stack

BODY = json.dumps({"operation": "download", "objects": []}).encode()


@pytest.mark.parametrize("credentials", [b"\xff\xfe", b"dXNlcjpw\xe9", b"\xc3\xa9\xc3\xa9"])
def test_non_ascii_basic_credentials_are_a_401(stack: Stack, credentials: bytes) -> None:
    log_before = stack.log.read_bytes()
    request = (
        b"POST /team/proj.git/info/lfs/objects/batch HTTP/1.1\r\n"
        + f"Host: 127.0.0.1:{stack.port}\r\n".encode()
        + b"Authorization: Basic " + credentials + b"\r\n"
        + f"Content-Type: {LFS_MEDIA_TYPE}\r\nAccept: {LFS_MEDIA_TYPE}\r\n".encode()
        + f"Content-Length: {len(BODY)}\r\nConnection: close\r\n\r\n".encode()
        + BODY
    )  # fmt: skip
    status, headers, body = parse_raw_response(raw_exchange(stack, request))
    error = assert_raw_lfs_error(status, headers, body, 401, stack)
    assert error["message"] == "malformed Basic credentials"
    assert headers["lfs-authenticate"].startswith("Basic realm=")
    written = stack.log.read_bytes()[len(log_before) :]
    assert b"Traceback" not in written and b"unhandled error" not in written
