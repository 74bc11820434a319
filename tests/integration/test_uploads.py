"""Uploads, downloads and verify on the real stack: hash and size checks, the
size limit, concurrent and aborted uploads, Range downloads, verify."""

from __future__ import annotations

import gzip
import os
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.helpers import (
    actions_for,
    assert_lfs_error,
    assert_object_error,
    assert_raw_lfs_error,
    batch_for,
    bearer,
    download_action,
    forge,
    only_object,
    put_action,
    read_response_head,
    send_upload_head,
    sha256,
    stored_copies,
    upload,
    verify_action,
    wait_until,
)
from tests.stack import LFS_MEDIA_TYPE, Stack
from tests.stores import LOCAL, S3_PROXY

# Uploads come through nginx in both; direct mode has its own tests.
STORES = (LOCAL, S3_PROXY)

REPO = "up/proj"
MIB = 1 << 20
SMALL_LIMIT = MIB


@pytest.fixture(scope="module")
def small_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A server whose objects are limited to 1 MiB."""
    server = Stack(
        tmp_path_factory.mktemp("small"), LFS_ANONYMOUS="write", LFS_MAX_OBJECT_SIZE="1M"
    ).start()
    yield server
    server.stop()


def assert_not_stored(stack: Stack, data: bytes, repo: str = REPO) -> None:
    item = {"oid": sha256(data), "size": len(data)}
    obj = only_object(stack.batch(repo, {"operation": "download", "objects": [item]}), stack)
    assert_object_error(obj, 404)
    assert stored_copies(stack, item["oid"]) == []


def assert_stored_once(stack: Stack, data: bytes) -> None:
    copies = stored_copies(stack, sha256(data))
    assert len(copies) == 1, copies
    if stack.bucket is not None:
        assert stack.bucket.read(str(copies[0])) == data
        return
    assert isinstance(copies[0], Path)
    assert copies[0].read_bytes() == data
    # nginx removes its temp file (the object's second link) as the request
    # ends, which may be just after the client has read the answer.
    assert wait_until(lambda: copies[0].stat().st_nlink == 1), "temp file link not removed"


def tmp_is_empty(stack: Stack) -> bool:
    return stack.upload_tmp_files() == []


def verify_post(action: dict[str, Any], data: bytes, size: int | None = None) -> requests.Response:
    return requests.post(
        action["href"],
        json={"oid": sha256(data), "size": len(data) if size is None else size},
        headers={**action["header"], "Content-Type": LFS_MEDIA_TYPE},
        timeout=30,
    )


# ------------------------------------------------------------- hash and size


def test_wrong_hash_is_422_and_nothing_is_stored(stack: Stack) -> None:
    data = os.urandom(300_000)
    actions = actions_for(stack, REPO, "upload", data)
    forged = bytearray(data)
    forged[len(forged) // 2] ^= 0x01  # one flipped bit, same size
    response = put_action(actions["upload"], bytes(forged))
    body = assert_lfs_error(response, 422, stack)
    assert "sha" in body["message"].lower() or "hash" in body["message"].lower(), body
    assert_not_stored(stack, data)
    assert_not_stored(stack, bytes(forged))
    assert wait_until(lambda: tmp_is_empty(stack)), stack.upload_tmp_files()
    assert verify_post(verify_action(stack, actions["upload"]), data).status_code == 404
    # Control: the same token stores the right bytes.
    assert put_action(actions["upload"], data).status_code == 200
    assert_stored_once(stack, data)
    assert verify_post(verify_action(stack, actions["upload"]), data).status_code == 200


def test_chunked_body_is_refused_with_411(stack: Stack) -> None:
    data = os.urandom(50_000)
    actions = actions_for(stack, REPO, "upload", data)

    def chunks(payload: bytes) -> Iterator[bytes]:
        yield payload[:20_000]
        yield payload[20_000:]

    # requests sends a generator body chunked, without Content-Length: the
    # size is unknown before the body, so even the right bytes are refused.
    for body in (data[:-1], data + b"x", data):
        response = requests.put(
            actions["upload"]["href"],
            data=chunks(body),
            headers=actions["upload"]["header"],
            timeout=30,
        )
        assert_lfs_error(response, 411, stack)
        assert_not_stored(stack, data)
    assert wait_until(lambda: tmp_is_empty(stack)), stack.upload_tmp_files()
    response = put_action(actions["upload"], data)
    assert response.status_code == 200, response.text
    assert_stored_once(stack, data)


def assert_wrong_length_message(
    status: int, headers: dict[str, str], body: bytes, stack: Stack, size: int
) -> None:
    message = assert_raw_lfs_error(status, headers, body, 403, stack)["message"]
    assert f"Content-Length must be the object size, {size} bytes" in message, message


@pytest.mark.parametrize("delta", [1, -1, -MIB, 10 * MIB])
def test_content_length_other_than_token_size_is_403_before_the_body(
    stack: Stack, delta: int
) -> None:
    # From 1 MB (10**6 bytes) of Content-Length on, the app checks it first.
    data = os.urandom(2 * MIB)
    token = bearer(actions_for(stack, REPO, "upload", data)["upload"])
    with send_upload_head(stack, sha256(data), token, len(data) + delta) as sock:
        # No body byte is sent: the answer must come from the headers alone.
        status, headers, body = read_response_head(sock, timeout=5)
    assert_wrong_length_message(status, headers, body, stack, len(data))
    assert_not_stored(stack, data)
    assert tmp_is_empty(stack)


@pytest.mark.parametrize("delta", [1, -1, -4000, 999_999 - 4000])
def test_small_upload_of_another_length_is_403_once_its_body_is_in(
    stack: Stack, delta: int
) -> None:
    # Under 1 MB nginx takes the body before asking the app (one trip to it
    # per small object); the commit then refuses it with the same answer.
    data = os.urandom(4000)
    token = bearer(actions_for(stack, REPO, "upload", data)["upload"])
    body_sent = (data * 250)[: len(data) + delta]
    with send_upload_head(stack, sha256(data), token, len(body_sent)) as sock:
        if body_sent:
            with pytest.raises(TimeoutError):
                read_response_head(sock, timeout=0.5)
            sock.sendall(body_sent)
        status, headers, body = read_response_head(sock, timeout=10)
    assert_wrong_length_message(status, headers, body, stack, len(data))
    assert_not_stored(stack, data)
    assert wait_until(lambda: tmp_is_empty(stack)), stack.upload_tmp_files()
    response = put_action(actions_for(stack, REPO, "upload", data)["upload"], data)
    assert response.status_code == 200, response.text
    assert_stored_once(stack, data)


def test_empty_object_round_trip(stack: Stack) -> None:
    upload(stack, REPO, b"")
    action = download_action(stack, REPO, b"")
    response = requests.get(action["href"], headers=action["header"], timeout=30)
    assert response.status_code == 200
    assert response.content == b""


# ------------------------------------------------------------- size limit


def test_batch_refuses_objects_over_the_limit(small_stack: Stack) -> None:
    over = {"oid": sha256(b"over"), "size": SMALL_LIMIT + 1}
    at = {"oid": sha256(b"at"), "size": SMALL_LIMIT}
    objects = {
        o["oid"]: o
        for o in small_stack.batch(REPO, {"operation": "upload", "objects": [over, at]}).json()[
            "objects"
        ]
    }
    assert_object_error(objects[over["oid"]], 422)
    assert "upload" in objects[at["oid"]]["actions"]


def test_nginx_refuses_bodies_over_the_limit_with_413(small_stack: Stack) -> None:
    at_limit = os.urandom(SMALL_LIMIT)
    actions = actions_for(small_stack, REPO, "upload", at_limit)
    # A validly signed token for an object over the limit (the batch would
    # never mint one): nginx still stops it, from the headers, before the body.
    big_oid = sha256(b"too big")
    token = forge(small_stack, bearer(actions["upload"]), oid=big_oid, size=SMALL_LIMIT + 1)
    with send_upload_head(small_stack, big_oid, token, SMALL_LIMIT + 1) as sock:
        status, headers, body = read_response_head(sock, timeout=5)
    assert_raw_lfs_error(status, headers, body, 413, small_stack)

    # Chunked, so no size before the body: refused with 411 before it is read.
    def chunks() -> Iterator[bytes]:
        for _ in range(5):
            yield at_limit[: SMALL_LIMIT // 4]

    try:
        response = requests.put(
            actions["upload"]["href"],
            data=chunks(),
            headers=actions["upload"]["header"],
            timeout=30,
        )
    except requests.ConnectionError:
        pass  # nginx may close while the client still sends: also a refusal
    else:
        assert_lfs_error(response, 411, small_stack)
    assert wait_until(lambda: tmp_is_empty(small_stack)), small_stack.upload_tmp_files()
    assert stored_copies(small_stack, big_oid) == []
    assert_not_stored(small_stack, at_limit)
    # Control: exactly the limit is accepted.
    response = put_action(actions["upload"], at_limit)
    assert response.status_code == 200, response.text
    assert_stored_once(small_stack, at_limit)


# ------------------------------------------------------------- concurrency


def run_together(count: int, work: Any) -> list[Any]:
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = work(index)
        except Exception as exc:  # reported by the assertions below
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


def test_concurrent_uploads_of_one_oid(stack: Stack) -> None:
    data = os.urandom(8 * MIB)
    actions = actions_for(stack, REPO, "upload", data)
    results = run_together(8, lambda _: put_action(actions["upload"], data))
    statuses = [r.status_code if isinstance(r, requests.Response) else repr(r) for r in results]
    assert statuses == [200] * 8, [getattr(r, "text", r) for r in results]
    assert_stored_once(stack, data)
    assert wait_until(lambda: tmp_is_empty(stack)), stack.upload_tmp_files()
    assert verify_post(verify_action(stack, actions["upload"]), data).status_code == 200
    # Uploading it once more is a harmless no-op, and the batch now says done.
    assert put_action(actions["upload"], data).status_code == 200
    again = only_object(batch_for(stack, REPO, "upload", data), stack)
    assert "actions" not in again
    assert_stored_once(stack, data)


def test_concurrent_good_and_bad_uploads_of_one_oid(stack: Stack) -> None:
    data = os.urandom(4 * MIB)
    bad = os.urandom(4 * MIB)
    actions = actions_for(stack, REPO, "upload", data)
    results = run_together(8, lambda i: put_action(actions["upload"], data if i % 2 else bad))
    statuses = [r.status_code if isinstance(r, requests.Response) else repr(r) for r in results]
    # Good bodies always succeed. A bad body fails its hash check, unless a
    # good one was already stored: then it is a no-op that changes nothing.
    assert statuses[1::2] == [200] * 4, statuses
    assert set(statuses[0::2]) <= {422, 200}, statuses
    assert_stored_once(stack, data)
    assert stored_copies(stack, sha256(bad)) == []
    assert wait_until(lambda: tmp_is_empty(stack)), stack.upload_tmp_files()


# ------------------------------------------------------------- aborted upload


def test_aborted_upload_leaves_no_temp_file(stack: Stack) -> None:
    size = 10 * MIB
    data = os.urandom(size)
    actions = actions_for(stack, REPO, "upload", data)
    assert tmp_is_empty(stack)
    sock = send_upload_head(stack, sha256(data), bearer(actions["upload"]), size)
    try:
        sock.sendall(data[:MIB])
        # The body is being written to a temp file: the check below can see it.
        assert wait_until(lambda: not tmp_is_empty(stack)), "no temp file while uploading"
    finally:
        # Linger 0: close with a reset, as a killed client would.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    assert wait_until(lambda: tmp_is_empty(stack), timeout=5), stack.upload_tmp_files()
    assert_not_stored(stack, data)
    # Also with a graceful close (FIN, no RST) in the middle of the body.
    sock = send_upload_head(stack, sha256(data), bearer(actions["upload"]), size)
    sock.sendall(data[: 2 * MIB])
    assert wait_until(lambda: not tmp_is_empty(stack))
    sock.shutdown(socket.SHUT_WR)
    sock.close()
    assert wait_until(lambda: tmp_is_empty(stack), timeout=5), stack.upload_tmp_files()
    assert_not_stored(stack, data)
    # Control: the same token still uploads the object completely.
    assert put_action(actions["upload"], data).status_code == 200
    assert_stored_once(stack, data)


# ------------------------------------------------------------- download


@pytest.fixture(scope="module")
def stored_object(stack: Stack) -> bytes:
    data = os.urandom(3 * MIB + 12345)
    upload(stack, REPO, data)
    return data


def test_full_download(stack: Stack, stored_object: bytes) -> None:
    action = download_action(stack, REPO, stored_object)
    response = requests.get(action["href"], headers=action["header"], timeout=30)
    assert response.status_code == 200
    assert response.content == stored_object
    assert int(response.headers["Content-Length"]) == len(stored_object)


@pytest.mark.parametrize("where", ["start", "second", "middle", "last"])
def test_range_download_is_206(stack: Stack, stored_object: bytes, where: str) -> None:
    size = len(stored_object)
    start = {"start": 0, "second": 1, "middle": size // 2 + 7, "last": size - 1}[where]
    action = download_action(stack, REPO, stored_object)
    response = requests.get(
        action["href"], headers={**action["header"], "Range": f"bytes={start}-"}, timeout=30
    )
    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes {start}-{size - 1}/{size}"
    assert response.content == stored_object[start:]


def test_closed_range_download(stack: Stack, stored_object: bytes) -> None:
    action = download_action(stack, REPO, stored_object)
    response = requests.get(
        action["href"], headers={**action["header"], "Range": "bytes=100-199"}, timeout=30
    )
    assert response.status_code == 206
    assert response.content == stored_object[100:200]


def test_range_past_the_end_is_json(stack: Stack, stored_object: bytes) -> None:
    action = download_action(stack, REPO, stored_object)
    response = requests.get(
        action["href"],
        headers={**action["header"], "Range": f"bytes={len(stored_object) + 10}-"},
        timeout=30,
    )
    assert_lfs_error(response, 416, stack)


def test_gzip_accepted_download_is_the_object(stack: Stack, stored_object: bytes) -> None:
    action = download_action(stack, REPO, stored_object)
    response = requests.get(
        action["href"],
        headers={**action["header"], "Accept-Encoding": "gzip"},
        stream=True,
        timeout=30,
    )
    raw = response.raw.read(decode_content=False)
    assert response.status_code == 200
    if response.headers.get("Content-Encoding") == "gzip":
        raw = gzip.decompress(raw)
    assert raw == stored_object


# ------------------------------------------------------------- verify


def test_verify(stack: Stack) -> None:
    """Batch answers offer no verify here (the PUT commits); a verify token is still answered."""
    data = os.urandom(20_000)
    actions = actions_for(stack, REPO, "upload", data)
    assert set(actions) == {"upload"}
    verify = verify_action(stack, actions["upload"])
    before = verify_post(verify, data)
    assert_lfs_error(before, 404, stack)
    assert put_action(actions["upload"], data).status_code == 200
    after = verify_post(verify, data)
    assert after.status_code == 200, after.text
    assert_lfs_error(verify_post(verify, data, size=len(data) + 1), (400, 403, 422), stack)


def test_verify_malformed_bodies(stack: Stack) -> None:
    data = os.urandom(100)
    actions = actions_for(stack, REPO, "upload", data)
    verify = verify_action(stack, actions["upload"])
    headers = {**verify["header"], "Content-Type": LFS_MEDIA_TYPE}
    for body in (b"", b"{", b"[]", b'"x"', b'{"size": 100}', b'{"oid": 5, "size": 100}'):
        response = requests.post(verify["href"], data=body, headers=headers, timeout=30)
        assert_lfs_error(response, (400, 403, 422), stack)
