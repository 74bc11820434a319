"""The failed-login brake on the real stack, behind a trusted proxy and without one.

With LFS_TRUSTED_PROXIES=127.0.0.1/32 the test plays the proxy: nginx takes the
client from X-Forwarded-For, so guesses brake only the address they came
from. A peer outside the trusted networks (127.0.0.2 here), and every peer of
a stack that trusts nobody, cannot pick its address with that header.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from lfs_server import throttle
from tests.integration.helpers import sha256
from tests.stack import LFS_MEDIA_TYPE, Stack

PASSWORD = "proxy brake password"
ACCESS_LINE = re.compile(r"^(\S+) - \S+ \[", re.MULTILINE)
BODY = json.dumps({"operation": "download", "objects": [{"oid": sha256(b"x"), "size": 1}]})


def start(root: Path, **env: str) -> Stack:
    stack = Stack(root, **env).start()
    for name in ("alice", "bob", "carol"):
        stack.add_user(name, PASSWORD, ("team/*", "read"))
    return stack


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start(tmp_path_factory.mktemp("proxied"), LFS_TRUSTED_PROXIES="127.0.0.1/32")
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start(tmp_path_factory.mktemp("direct"))
    yield stack
    stack.stop()


def login(
    stack: Stack, name: str, secret: str, forwarded: str | None, peer: str = "127.0.0.1"
) -> int:
    """The status of a batch request from `peer`, with X-Forwarded-For `forwarded`."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", stack.port, timeout=30, source_address=(peer, 0)
    )
    headers = {
        "Authorization": "Basic " + base64.b64encode(f"{name}:{secret}".encode()).decode(),
        "Content-Type": LFS_MEDIA_TYPE,
        "Accept": LFS_MEDIA_TYPE,
    }
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    try:
        connection.request("POST", "/team/proj.git/info/lfs/objects/batch", BODY, headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def logged_addresses(stack: Stack) -> set[str]:
    """The client addresses nginx's access log shows ($remote_addr leads each line)."""
    return set(ACCESS_LINE.findall(stack.log.read_text()))


def test_behind_a_trusted_proxy_guesses_brake_only_their_client(proxied: Stack) -> None:
    for _ in range(throttle.MAX_PER_USER_AND_CLIENT):
        assert login(proxied, "alice", "guess", "198.51.100.7") == 401
    assert login(proxied, "alice", PASSWORD, "198.51.100.7") == 429
    assert login(proxied, "alice", PASSWORD, "198.51.100.8") == 200
    # The proxy's own address, and a chain ending in it, name the client before it.
    assert login(proxied, "alice", PASSWORD, "198.51.100.7, 127.0.0.1") == 429
    assert login(proxied, "alice", PASSWORD, None) == 200
    assert {"198.51.100.7", "198.51.100.8"} <= logged_addresses(proxied)


def test_an_untrusted_peer_cannot_pick_its_address(proxied: Stack) -> None:
    for n in range(throttle.MAX_PER_USER_AND_CLIENT):
        assert login(proxied, "bob", "guess", f"203.0.113.{n + 1}", peer="127.0.0.2") == 401
    assert login(proxied, "bob", PASSWORD, "203.0.113.200", peer="127.0.0.2") == 429
    assert login(proxied, "bob", PASSWORD, None, peer="127.0.0.2") == 429
    assert login(proxied, "bob", PASSWORD, "203.0.113.200") == 200
    assert "127.0.0.2" in logged_addresses(proxied)


def test_without_trusted_proxies_a_forwarded_header_is_ignored(direct: Stack) -> None:
    for n in range(throttle.MAX_PER_USER_AND_CLIENT):
        assert login(direct, "carol", "guess", f"198.51.100.{n + 1}") == 401
    assert login(direct, "carol", PASSWORD, "198.51.100.99") == 429
    assert login(direct, "carol", PASSWORD, None) == 429
    assert login(direct, "alice", PASSWORD, "198.51.100.99") == 200
    assert logged_addresses(direct) == {"127.0.0.1"}
