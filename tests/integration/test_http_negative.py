"""The Batch API against malformed and hostile requests, over real HTTP.

Every whole-request error must be LFS JSON with a `message` (never HTML, a
traceback or a server path); per-object problems are answered per object,
and every oid comes back exactly once, spelled as sent.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import requests

from tests.integration.helpers import (
    assert_lfs_error,
    assert_no_leak,
    assert_object_error,
    assert_raw_lfs_error,
    batch_objects,
    download_action,
    lfs_headers,
    media_type,
    only_object,
    parse_raw_response,
    raw_exchange,
    raw_request,
    sha256,
    upload,
)
from tests.stack import LFS_MEDIA_TYPE, Stack

REPO = "neg/proj"
VALID_OID = sha256(b"never uploaded")


def post_batch(stack: Stack, body: bytes, repo: str = REPO) -> requests.Response:
    return requests.post(
        f"{stack.lfs_base(repo)}/objects/batch", data=body, headers=lfs_headers(), timeout=30
    )


def download_of(*objects: dict[str, Any]) -> dict[str, Any]:
    return {"operation": "download", "objects": list(objects)}


@pytest.fixture(scope="module")
def stored(stack: Stack) -> bytes:
    """An object that REPO holds."""
    data = os.urandom(2048)
    upload(stack, REPO, data)
    return data


# ------------------------------------------------------- whole-request errors


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"operation": "download", "objects": [', id="truncated"),
        pytest.param(b"{operation: download}", id="unquoted"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\xfe\x00garbage", id="binary"),
    ],
)
def test_malformed_json(stack: Stack, body: bytes) -> None:
    assert_lfs_error(post_batch(stack, body), (400, 422), stack)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param([], id="list"),
        pytest.param([{"operation": "download", "objects": []}], id="list-of-request"),
        pytest.param("download", id="string"),
        pytest.param(42, id="number"),
        pytest.param(None, id="null"),
        pytest.param(True, id="bool"),
    ],
)
def test_body_not_an_object(stack: Stack, body: Any) -> None:
    assert_lfs_error(post_batch(stack, json.dumps(body).encode()), 422, stack)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"objects": [{"oid": VALID_OID, "size": 1}]}, id="missing"),
        pytest.param({"operation": None, "objects": []}, id="null"),
        pytest.param({"operation": "delete", "objects": []}, id="unknown"),
        pytest.param({"operation": "verify", "objects": []}, id="verify"),
        pytest.param({"operation": "Download", "objects": []}, id="capitalised"),
        pytest.param({"operation": ["download"], "objects": []}, id="list"),
        pytest.param({"operation": {"download": 1}, "objects": []}, id="object"),
        pytest.param({"operation": 1, "objects": []}, id="number"),
    ],
)
def test_missing_or_unknown_operation(stack: Stack, body: dict[str, Any]) -> None:
    assert_lfs_error(post_batch(stack, json.dumps(body).encode()), 422, stack)


@pytest.mark.parametrize(
    "objects",
    [
        pytest.param("missing", id="missing"),
        pytest.param(None, id="null"),
        pytest.param({"oid": VALID_OID, "size": 1}, id="object"),
        pytest.param(VALID_OID, id="string"),
        pytest.param(3, id="number"),
    ],
)
@pytest.mark.parametrize("operation", ["upload", "download"])
def test_objects_not_a_list(stack: Stack, operation: str, objects: Any) -> None:
    body: dict[str, Any] = {"operation": operation}
    if objects != "missing":
        body["objects"] = objects
    assert_lfs_error(post_batch(stack, json.dumps(body).encode()), 422, stack)


@pytest.mark.parametrize(
    "item",
    [
        pytest.param({"size": 1}, id="no-oid"),
        pytest.param({"oid": None, "size": 1}, id="null-oid"),
        pytest.param({"oid": 123, "size": 1}, id="int-oid"),
        pytest.param({"oid": [VALID_OID], "size": 1}, id="list-oid"),
        pytest.param(VALID_OID, id="bare-string"),
        pytest.param(None, id="null-item"),
    ],
)
def test_object_without_valid_oid_field(stack: Stack, item: Any) -> None:
    body = {"operation": "upload", "objects": [{"oid": sha256(b"ok"), "size": 2}, item]}
    assert_lfs_error(post_batch(stack, json.dumps(body).encode()), 422, stack)


@pytest.mark.parametrize(
    "size",
    [
        pytest.param(1.0, id="float-integral"),
        pytest.param(1.5, id="float"),
        pytest.param("1", id="string"),
        pytest.param(True, id="true"),
        pytest.param(False, id="false"),
        pytest.param(None, id="null"),
        pytest.param("missing", id="missing"),
        pytest.param([1], id="list"),
    ],
)
@pytest.mark.parametrize("operation", ["upload", "download"])
def test_non_integer_size(stack: Stack, operation: str, size: Any) -> None:
    item: dict[str, Any] = {"oid": VALID_OID}
    if size != "missing":
        item["size"] = size
    body = json.dumps({"operation": operation, "objects": [item]}).encode()
    assert_lfs_error(post_batch(stack, body), 422, stack)


def test_too_many_objects(stack: Stack) -> None:
    objects = [{"oid": sha256(str(n).encode()), "size": n} for n in range(1001)]
    body = json.dumps({"operation": "download", "objects": objects}).encode()
    assert_lfs_error(post_batch(stack, body), 413, stack)
    # The limit is 1000, not fewer: a full batch of 1000 is answered whole.
    answered = batch_objects(
        post_batch(stack, json.dumps(download_of(*objects[:1000])).encode()), stack
    )
    assert sorted(obj["oid"] for obj in answered) == sorted(o["oid"] for o in objects[:1000])


@pytest.mark.parametrize(
    "transfers",
    [
        pytest.param(["lfs-standalone-file"], id="standalone-only"),
        pytest.param(["ssh", "multipart"], id="others"),
        pytest.param([], id="empty"),
        pytest.param("basic", id="string"),
        pytest.param({"basic": True}, id="object"),
    ],
)
def test_transfers_without_basic(stack: Stack, transfers: Any) -> None:
    body = {
        "operation": "upload",
        "objects": [{"oid": VALID_OID, "size": 1}],
        "transfers": transfers,
    }
    assert_lfs_error(post_batch(stack, json.dumps(body).encode()), 422, stack)


def test_get_on_batch_url_is_json(stack: Stack) -> None:
    response = requests.get(f"{stack.lfs_base(REPO)}/objects/batch", timeout=30)
    assert_lfs_error(response, 405, stack)


# ----------------------------------------------------------- repository names


# nginx itself refuses some of these (400) before the app sees them.
@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("/team/%2E%2E/proj.git", 404, id="dotdot-encoded"),
        pytest.param("/team/../proj.git", 404, id="dotdot"),
        pytest.param("/team/%2e%2e/%2e%2e/etc.git", (400, 404), id="dotdot-above-root"),
        pytest.param("/team/proj.git/../../../etc.git", (400, 404), id="dotdot-after-suffix"),
        pytest.param("/team/./proj.git", 404, id="dot"),
        pytest.param("/.team/proj.git", 404, id="leading-dot"),
        pytest.param("/team/.proj.git", 404, id="leading-dot-last"),
        pytest.param("/team/%2Eproj.git", 404, id="leading-dot-encoded"),
        pytest.param("/team/.git", 404, id="only-suffix"),
        pytest.param("/a/b/c/d/e/f/g/h/i.git", 404, id="nine-segments"),
        pytest.param("/a/b/c/d/e/f/g/h%2Fi.git", 404, id="nine-segments-encoded"),
        pytest.param("/te%00am/proj.git", (400, 404), id="nul"),
        pytest.param("/te%20am/proj.git", 404, id="space"),
        pytest.param("/team/proj%2F..%2F..%2Fother.git", 404, id="encoded-slash-dotdot"),
        pytest.param("/team/proj.git%2F", 404, id="trailing-encoded-slash"),
        pytest.param("/team%2F%2Fproj.git", 404, id="empty-segment-encoded"),
        pytest.param("/.lfs/proj.git", 404, id="server-prefix"),
        pytest.param("/.lfs-internal/proj.git", 404, id="internal-prefix"),
    ],
)
def test_invalid_repository_names(stack: Stack, path: str, expected: int | tuple[int, ...]) -> None:
    body = json.dumps(download_of({"oid": VALID_OID, "size": 1})).encode()
    status, headers, raw = raw_request(
        stack, "POST", f"{path}/info/lfs/objects/batch", body, lfs_headers()
    )
    assert_raw_lfs_error(status, headers, raw, expected, stack)


def test_eight_segments_and_git_suffix_are_valid(stack: Stack, stored: bytes) -> None:
    deep = "a/b/c/d/e/f/g/h"
    obj = only_object(stack.batch(deep, download_of({"oid": VALID_OID, "size": 1})), stack)
    assert_object_error(obj, 404)
    # `team/proj.git` and `team/proj` name one repository.
    plain = f"{stack.url}/{REPO}/info/lfs/objects/batch"
    item = {"oid": sha256(stored), "size": len(stored)}
    response = requests.post(plain, json=download_of(item), headers=lfs_headers(), timeout=30)
    assert "download" in only_object(response, stack)["actions"]


# ------------------------------------------------------------ per-object answers


def test_negative_size_is_per_object_422(stack: Stack) -> None:
    good = {"oid": sha256(b"fine"), "size": 4}
    for operation in ("upload", "download"):
        body = {"operation": operation, "objects": [{"oid": VALID_OID, "size": -1}, good]}
        objects = {obj["oid"]: obj for obj in batch_objects(stack.batch(REPO, body), stack)}
        assert set(objects) == {VALID_OID, good["oid"]}
        assert_object_error(objects[VALID_OID], 422)
        assert objects[VALID_OID]["size"] == -1
        if operation == "upload":
            assert "upload" in objects[good["oid"]]["actions"]


BAD_OIDS = [
    VALID_OID.upper(),
    VALID_OID[:63],
    VALID_OID + "0",
    VALID_OID[:63] + "g",
    VALID_OID + "\n",
    " " + VALID_OID[1:],
    "../../etc/passwd",
    "/etc/passwd",
    "../../" + VALID_OID[6:],
    "/" + VALID_OID[1:],
    VALID_OID[:32] + "/" + VALID_OID[33:],
    "\uff41" * 64,  # fullwidth "a"
    "",
]


@pytest.mark.parametrize("operation", ["upload", "download"])
def test_bad_oids_are_per_object_422(stack: Stack, operation: str) -> None:
    good = {"oid": sha256(b"good"), "size": 4}
    items = [{"oid": oid, "size": 4} for oid in BAD_OIDS]
    objects = batch_objects(
        stack.batch(REPO, {"operation": operation, "objects": [*items, good]}), stack
    )
    answered = [obj["oid"] for obj in objects]
    assert sorted(answered) == sorted([*BAD_OIDS, good["oid"]])
    for obj in objects:
        if obj["oid"] != good["oid"]:
            assert_object_error(obj, 422)
    # Nothing was created on disk for any of them.
    leftovers = [p for p in (stack.data_dir / "objects").rglob("*") if "passwd" in p.name]
    assert leftovers == []
    assert not (stack.data_dir / "etc").exists()


def test_unsupported_hash_algo_is_per_object_409(stack: Stack, stored: bytes) -> None:
    items = [{"oid": sha256(stored), "size": len(stored)}, {"oid": VALID_OID, "size": 9}]
    for operation in ("upload", "download"):
        body = {"operation": operation, "objects": items, "hash_algo": "sha512"}
        objects = batch_objects(stack.batch(REPO, body), stack)
        assert sorted(obj["oid"] for obj in objects) == sorted(i["oid"] for i in items)
        for obj in objects:
            assert_object_error(obj, 409)
    explicit = {"operation": "download", "objects": items[:1], "hash_algo": "sha256"}
    assert "download" in only_object(stack.batch(REPO, explicit), stack)["actions"]


@pytest.mark.parametrize(
    "ref",
    [
        pytest.param("missing", id="missing"),
        pytest.param(None, id="null"),
        pytest.param({}, id="empty"),
        pytest.param({"name": "refs/heads/main"}, id="named"),
    ],
)
@pytest.mark.parametrize(
    "transfers",
    [
        pytest.param("missing", id="no-transfers"),
        pytest.param(["basic"], id="basic"),
        pytest.param(["lfs-standalone-file", "basic", "ssh"], id="basic-among-others"),
    ],
)
def test_ref_and_transfers_accepted(stack: Stack, ref: Any, transfers: Any) -> None:
    oid = sha256(json.dumps([ref, transfers]).encode())
    body: dict[str, Any] = {"operation": "upload", "objects": [{"oid": oid, "size": 10}]}
    if ref != "missing":
        body["ref"] = ref
    if transfers != "missing":
        body["transfers"] = transfers
    response = stack.batch(REPO, body)
    assert response.json().get("transfer") == "basic"
    obj = only_object(response, stack)
    assert obj["oid"] == oid
    assert set(obj["actions"]) >= {"upload"}
    upload_action = obj["actions"]["upload"]
    assert upload_action["href"].startswith(f"{stack.url}/")
    assert isinstance(upload_action["header"]["Authorization"], str)
    assert type(upload_action["expires_in"]) is int and upload_action["expires_in"] > 5


def test_download_of_missing_object_is_per_object_404(stack: Stack, stored: bytes) -> None:
    missing = {"oid": VALID_OID, "size": 14}
    present = {"oid": sha256(stored), "size": len(stored)}
    objects = {
        obj["oid"]: obj
        for obj in batch_objects(stack.batch(REPO, download_of(missing, present)), stack)
    }
    assert set(objects) == {missing["oid"], present["oid"]}
    assert_object_error(objects[missing["oid"]], 404)
    assert objects[missing["oid"]]["size"] == 14
    assert "download" in objects[present["oid"]]["actions"]
    assert "error" not in objects[present["oid"]]


def test_every_oid_answered_once_as_sent(stack: Stack, stored: bytes) -> None:
    present = sha256(stored)
    fresh = [sha256(f"fresh {n}".encode()) for n in range(5)]
    sent = [
        *fresh,
        present,
        fresh[0],  # duplicate
        present,  # duplicate
        present.upper(),  # same object, wrong spelling: answered as sent, invalid
        fresh[1][:40],
        "not-an-oid",
    ]
    expected = sorted(set(sent))
    for operation in ("upload", "download"):
        items = [{"oid": oid, "size": len(stored) if oid == present else 10} for oid in sent]
        objects = batch_objects(
            stack.batch(REPO, {"operation": operation, "objects": items}), stack
        )
        assert sorted(obj["oid"] for obj in objects) == expected, operation
        by_oid = {obj["oid"]: obj for obj in objects}
        assert_object_error(by_oid[present.upper()], 422)
        assert_object_error(by_oid["not-an-oid"], 422)
        for obj in objects:
            assert type(obj["size"]) is int
            assert ("actions" in obj) + ("error" in obj) <= 1, obj


def test_upload_of_existing_object_has_no_actions(stack: Stack, stored: bytes) -> None:
    fresh = {"oid": sha256(b"not yet stored"), "size": 14}
    existing = {"oid": sha256(stored), "size": len(stored)}
    objects = {
        obj["oid"]: obj
        for obj in batch_objects(
            stack.batch(REPO, {"operation": "upload", "objects": [existing, fresh]}), stack
        )
    }
    assert "actions" not in objects[existing["oid"]], objects[existing["oid"]]
    assert "error" not in objects[existing["oid"]], objects[existing["oid"]]
    assert objects[existing["oid"]]["size"] == len(stored)
    assert set(objects[fresh["oid"]]["actions"]) == {"upload"}  # the PUT commits: no verify
    # The same object in another repository still has to be uploaded there.
    elsewhere = only_object(
        stack.batch("neg/other", {"operation": "upload", "objects": [existing]}), stack
    )
    assert "upload" in elsewhere["actions"]


def test_error_responses_never_leak(stack: Stack) -> None:
    """Odd requests across the public URL space: JSON errors, never HTML."""
    cases = [
        ("GET", "/"),
        ("GET", "/nothing/here"),
        ("DELETE", f"/{REPO}.git/info/lfs/objects/batch"),
        ("GET", "/.lfs/"),
        ("GET", "/.lfs/download/" + "A" * 64),
        ("GET", "/.lfs/download/../../etc/passwd"),
        ("PUT", "/.lfs/upload/" + VALID_OID[:63]),
        ("GET", "/.lfs/upload/" + VALID_OID),
        ("GET", "/.lfs/verify"),
        ("POST", "/.lfs-internal/upload-commit"),
        ("GET", "/.lfs-internal/upload-auth"),
        ("GET", "/.lfs-internal/objects/neg/proj.git/"),
    ]
    for method, path in cases:
        status, headers, body = raw_request(stack, method, path)
        assert 400 <= status < 500, (method, path, status, body[:300])
        assert_raw_lfs_error(status, headers, body, status, stack)


# ------------------------------------------------- errors nginx raises itself


def raw_status(stack: Stack, request: bytes) -> tuple[int, dict[str, str], bytes]:
    return parse_raw_response(raw_exchange(stack, request))


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        pytest.param(b"GARBAGE\r\n\r\n", 400, id="bad-request-line"),
        pytest.param(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n", 400, id="no-host"),
        pytest.param(
            b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            414,
            id="uri-20k",
        ),
        pytest.param(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
            + b"a" * 20000
            + b"\r\nConnection: close\r\n\r\n",
            (400, 431),
            id="header-20k",
        ),
        pytest.param(
            b"PUT /.lfs/upload/" + VALID_OID.encode() + b" HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: gzip\r\nConnection: close\r\n\r\n",
            (400, 501),
            id="unknown-transfer-encoding",
        ),
        pytest.param(b"GET /healthz HTTP/2.5\r\nHost: x\r\n\r\n", (400, 505), id="http-version"),
    ],
)
def test_nginx_errors_are_json(stack: Stack, request_bytes: bytes, expected: Any) -> None:
    status, headers, body = raw_status(stack, request_bytes)
    assert_raw_lfs_error(status, headers, body, expected, stack)


@pytest.mark.parametrize("length", [4000, 4093, 4094, 4095, 4096, 4100, 6000, 8200])
def test_long_request_lines_are_json(stack: Stack, length: int) -> None:
    """Whichever server refuses a long URI (nginx or the app server behind
    it), the client gets LFS JSON, not an HTML page."""
    for method in ("GET", "POST"):
        line = f"{method} /{'a' * (length - len(method) - 11)} HTTP/1.1"
        assert len(line) == length
        request = f"{line}\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        status, headers, body = raw_status(stack, request.encode())
        assert_raw_lfs_error(status, headers, body, (404, 414), stack)


def test_many_request_headers_are_json(stack: Stack) -> None:
    """120 small headers (16k buffers hold them easily) must not reach the app
    server's header-count limit as an HTML page."""
    extra = "".join(f"X-Header-{n}: {n}\r\n" for n in range(120))
    request = f"GET /healthz HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n"
    status, headers, body = raw_status(stack, request.encode())
    if status != 200:
        assert_raw_lfs_error(status, headers, body, (400, 431), stack)


def test_conditional_download_errors_are_json(stack: Stack, stored: bytes) -> None:
    action = download_action(stack, REPO, stored)
    for extra in (
        {"If-Match": '"no-such-etag"'},
        {"If-Unmodified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"},
    ):
        response = requests.get(action["href"], headers={**action["header"], **extra}, timeout=30)
        assert_lfs_error(response, 412, stack)


def test_healthz(stack: Stack) -> None:
    response = requests.get(f"{stack.url}/healthz", timeout=10)
    assert response.status_code == 200
    assert media_type(response) in (LFS_MEDIA_TYPE, "application/json")
    assert_no_leak(response.text, stack)
