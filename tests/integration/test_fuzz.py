"""Fuzzing the running stack (nginx + gunicorn) from the OpenAPI document.

Schemathesis generates requests for every operation of lfs_server/openapi.json,
valid ones (positive) and ones that break the schema (negative), and sends
them with each kind of caller: anonymous (LFS_ANONYMOUS=read), a writer, a
server admin; transfer URLs with no token and with a real signed token. Then
hand-made hostile requests the generators rarely find: huge numbers, deep
nesting, invalid UTF-8, NUL bytes, very long paths, %2F and ../ in repository
paths, null fields.

Every answer must be below 500; every error must be LFS JSON with a
non-empty `message` and leak no traceback, HTML or server path; answers
must match the document (status, media type, body schema, headers).

Reproducible: Hypothesis runs with fixed seeds and keeps no example database.
LFS_FUZZ_SCALE (default 1) multiplies the number of generated cases for a
deeper run by hand.
"""

from __future__ import annotations

import base64
import json
import os
import re
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import unquote

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.helpers import (
    LEAK_MARKERS,
    assert_no_leak,
    raw_request,
    sha256,
    verify_action,
)
from tests.lfsapi import basic
from tests.stack import LFS_MEDIA_TYPE, Stack

REPO = "fuzz/proj"
SCALE = max(1, int(os.environ.get("LFS_FUZZ_SCALE", "1")))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Cases per (operation, caller), split over positive and negative generation.
EXAMPLES = {
    "batch": 260,
    "createLock": 180,
    "listLocks": 180,
    "verifyLocks": 140,
    "unlock": 140,
    "upload": 140,
    "download": 140,
    "downloadHead": 60,
    "verify": 140,
    "healthz": 1,  # no input at all: one case each
    "metrics": 1,
    "openapi": 1,
}
BASIC_CALLERS = ("anonymous", "writer", "admin")
BEARER_CALLERS = ("no-token", "token")
OPERATIONS = {
    "batch": BASIC_CALLERS,
    "createLock": BASIC_CALLERS,
    "listLocks": BASIC_CALLERS,
    "verifyLocks": BASIC_CALLERS,
    "unlock": BASIC_CALLERS,
    "metrics": BASIC_CALLERS,
    "upload": BEARER_CALLERS,
    "download": BEARER_CALLERS,
    "downloadHead": BEARER_CALLERS,
    "verify": BEARER_CALLERS,
    "healthz": ("anonymous",),
    "openapi": ("anonymous",),
}
PASSWORDS = {"writer": "writer-password-1", "admin": "admin-password-1"}
STORED = b"an object the fuzzed repository holds\n"
UPLOADABLE = b"u"  # not stored before the fuzzing: its upload token stays useful
HOSTILE_UPLOAD = b"v"  # never stored: hostile uploads of it must all fail
CASES: Counter[str] = Counter()


@dataclass
class Fuzzed:
    """The fuzzed server, its callers' credentials and real transfer tokens."""

    stack: Stack
    session: requests.Session
    tokens: dict[str, str]  # operation -> bearer token
    oids: dict[str, str]  # operation -> the oid its token is for
    lock_ids: dict[str, str]  # owner -> id of a lock they hold


def lfs_post(fuzzed: Fuzzed, url: str, body: Any, caller: str) -> requests.Response:
    headers = {
        "Accept": LFS_MEDIA_TYPE,
        "Content-Type": LFS_MEDIA_TYPE,
        **basic(caller, PASSWORDS[caller]),
    }
    return fuzzed.session.post(url, data=json.dumps(body), headers=headers, timeout=30)


def batch_actions(fuzzed: Fuzzed, operation: str, data: bytes) -> dict[str, Any]:
    response = lfs_post(
        fuzzed,
        f"{fuzzed.stack.lfs_base(REPO)}/objects/batch",
        {"operation": operation, "objects": [{"oid": sha256(data), "size": len(data)}]},
        "writer",
    )
    assert response.status_code == 200, response.text
    return response.json()["objects"][0].get("actions", {})


@pytest.fixture(scope="module", autouse=True)
def hypothesis_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Hypothesis caches (unicode tables, constants) in a temp dir, not the work tree."""
    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))
    yield
    set_hypothesis_home_dir(None)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    stack = Stack(tmp_path_factory.mktemp("fuzz"), LFS_ANONYMOUS="read").start()
    try:
        stack.add_user("writer", PASSWORDS["writer"], ("*", "write"))
        done = stack.cli(
            "user", "add", "admin", "--admin", "--password-stdin", stdin=PASSWORDS["admin"] + "\n"
        )
        assert done.returncode == 0, done.stderr
        session = requests.Session()
        fuzzed = Fuzzed(stack, session, {}, {}, {})
        actions = batch_actions(fuzzed, "upload", STORED)
        headers = {**actions["upload"]["header"]}
        assert session.put(actions["upload"]["href"], data=STORED, headers=headers).ok
        verify = verify_action(stack, actions["upload"])  # batch offers none: the PUT commits
        fuzzed.tokens["verify"] = verify["header"]["Authorization"]
        fuzzed.oids["verify"] = sha256(STORED)
        download = batch_actions(fuzzed, "download", STORED)["download"]
        fuzzed.tokens["download"] = fuzzed.tokens["downloadHead"] = download["header"][
            "Authorization"
        ]
        fuzzed.oids["download"] = fuzzed.oids["downloadHead"] = sha256(STORED)
        upload = batch_actions(fuzzed, "upload", UPLOADABLE)["upload"]
        fuzzed.tokens["upload"] = upload["header"]["Authorization"]
        fuzzed.oids["upload"] = sha256(UPLOADABLE)
        upload = batch_actions(fuzzed, "upload", HOSTILE_UPLOAD)["upload"]
        fuzzed.tokens["hostile-upload"] = upload["header"]["Authorization"]
        fuzzed.oids["hostile-upload"] = sha256(HOSTILE_UPLOAD)
        for owner in ("writer", "admin"):
            response = lfs_post(
                fuzzed, f"{stack.lfs_base(REPO)}/locks", {"path": f"held/by/{owner}"}, owner
            )
            assert response.status_code == 201, response.text
            fuzzed.lock_ids[owner] = response.json()["lock"]["id"]
        yield fuzzed
        session.close()
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def schema() -> schemathesis.BaseSchema:
    document = json.loads(resources.files("lfs_server").joinpath("openapi.json").read_text())
    return schemathesis.openapi.from_dict(document)


# ------------------------------------------------------------------ checks


def sent_text(request: requests.PreparedRequest | None) -> str:
    """What the client sent, as the server may echo it back in a message."""
    if request is None:
        return ""
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")
    return unquote(request.url or "") + body.decode("utf-8", "replace")


def assert_no_server_leak(text: str, stack: Stack, sent: str = "") -> None:
    """assert_no_leak, except for markers the request itself carried (echoed input)."""
    for marker in LEAK_MARKERS:
        if marker.lower() in sent.lower():
            text = re.sub(re.escape(marker), "", text, flags=re.IGNORECASE)
    assert_no_leak(text, stack)


def assert_lfs_answer(
    status: int, content_type: str, body: bytes, stack: Stack, method: str = "GET", sent: str = ""
) -> None:
    """Below 500; an error is LFS JSON with a message; nothing leaks."""
    text = body.decode("utf-8", "replace")
    assert status < 500, f"{status}: {text[:500]!r}"
    content_type = content_type.lower()
    kind = content_type.split(";")[0].strip()
    if kind == LFS_MEDIA_TYPE or status >= 400:
        assert_no_server_leak(text, stack, sent)
    if status < 400 or method == "HEAD":
        return
    assert kind == LFS_MEDIA_TYPE, f"{status} with Content-Type {content_type!r}: {text[:300]!r}"
    parsed = json.loads(text)
    assert isinstance(parsed, dict), parsed
    assert isinstance(parsed.get("message"), str), parsed
    assert parsed["message"].strip(), parsed


# ------------------------------------------------------- generated cases


def find_operation(schema: schemathesis.BaseSchema, operation_id: str) -> Any:
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.definition.raw.get("operationId") == operation_id:
            return operation
    raise LookupError(operation_id)


def caller_headers(fuzzed: Fuzzed, operation_id: str, caller: str) -> dict[str, str]:
    if caller in PASSWORDS:
        return basic(caller, PASSWORDS[caller])
    if caller == "token":
        return {"Authorization": fuzzed.tokens[operation_id]}
    return {}


FUZZ_PARAMS = [
    pytest.param(operation_id, caller, id=f"{operation_id}-{caller}")
    for operation_id, callers in OPERATIONS.items()
    for caller in callers
]


@pytest.mark.parametrize(("operation_id", "caller"), FUZZ_PARAMS)
def test_generated_requests(
    fuzzed: Fuzzed, schema: schemathesis.BaseSchema, operation_id: str, caller: str
) -> None:
    operation = find_operation(schema, operation_id)
    headers = caller_headers(fuzzed, operation_id, caller)
    fixed: dict[str, Any] = {}
    if caller == "token":  # the token's own oid, or every request stops at 403
        fixed["path_parameters"] = {"oid": fuzzed.oids[operation_id]}
    statuses: Counter[int] = Counter()
    budget = EXAMPLES[operation_id] * SCALE
    modes = [GenerationMode.POSITIVE]
    if operation_id not in ("healthz", "openapi", "metrics"):  # nothing to break: no input
        modes.append(GenerationMode.NEGATIVE)

    def fuzz(mode: GenerationMode, max_examples: int) -> None:
        # A negative case the server accepts may answer in a shape the schema
        # describes for valid input only: then only the 5xx check applies.
        strict = mode is GenerationMode.POSITIVE

        # A fixed seed per operation, caller and mode: reproducible, yet each
        # caller gets different cases (derandomize would repeat one sequence).
        @seed(zlib.crc32(f"{operation_id}/{caller}/{mode.value}".encode()))
        @settings(
            max_examples=max_examples,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )
        @given(case=operation.as_strategy(generation_mode=mode, **fixed))
        def run(case: schemathesis.Case) -> None:
            response = case.call(
                base_url=fuzzed.stack.url, session=fuzzed.session, headers=headers, timeout=30
            )
            CASES[operation_id] += 1
            statuses[response.status_code] += 1
            assert_lfs_answer(
                response.status_code,
                response.headers.get("content-type", [""])[0],
                response.content,
                fuzzed.stack,
                case.method.upper(),
                sent_text(response.request),
            )
            checks = CHECKS if strict or response.status_code >= 400 else [not_a_server_error]
            case.validate_response(response, checks=checks, headers=headers)

        run()

    for mode in modes:
        fuzz(mode, max(1, budget // len(modes)))
    print(f"\n{operation_id} as {caller}: {sum(statuses.values())} cases, {dict(statuses)}")
    assert sum(statuses.values()) >= 1


# ------------------------------------------------------- hand-made hostile

OID = sha256(b"hostile")
BATCH = f"/{REPO}.git/info/lfs/objects/batch"
LOCKS = f"/{REPO}.git/info/lfs/locks"
DEEP = 100_000


def batch_body(**fields: Any) -> bytes:
    return json.dumps({"operation": "upload", "objects": [], **fields}).encode()


def size_body(raw_size: bytes) -> bytes:
    return (
        b'{"operation":"upload","objects":[{"oid":"'
        + OID.encode()
        + b'","size":'
        + raw_size
        + b"}]}"
    )


# (name, method, path, body, caller, allowed statuses or None for "any below 500")
HOSTILE: list[tuple[str, str, str, bytes, str, set[int] | None]] = [
    # deep nesting
    ("nested arrays", "POST", BATCH, b"[" * DEEP + b"]" * DEEP, "writer", {422}),
    ("nested objects", "POST", BATCH, b'{"a":' * DEEP + b"1" + b"}" * DEEP, "writer", {422}),
    ("unclosed nesting", "POST", BATCH, b"[" * DEEP, "writer", {422}),
    (
        "nested in objects",
        "POST",
        BATCH,
        batch_body()[:-2] + b"[" * DEEP + b"]" * DEEP + b"}",
        "writer",
        {422},
    ),
    ("nested lock body", "POST", LOCKS, b"[" * DEEP, "writer", {422}),
    ("nested lock verify", "POST", f"{LOCKS}/verify", b'{"ref":' * DEEP, "writer", {422}),
    ("nested unlock", "POST", f"{LOCKS}/{'0' * 32}/unlock", b"[" * DEEP, "writer", {422}),
    ("nested verify", "POST", "/.lfs/verify", b"[" * DEEP, "no-token", {422}),
    # huge and odd numbers
    ("size 4000 digits", "POST", BATCH, size_body(b"9" * 4000), "writer", {200}),
    ("size 5000 digits", "POST", BATCH, size_body(b"9" * 5000), "writer", {422}),
    ("size -4000 digits", "POST", BATCH, size_body(b"-" + b"9" * 4000), "writer", {200}),
    ("size 2**64", "POST", BATCH, size_body(str(2**64).encode()), "writer", {200}),
    ("size 1e999", "POST", BATCH, size_body(b"1e999"), "writer", {422}),
    ("size -1e999", "POST", BATCH, size_body(b"-1e999"), "writer", {422}),
    ("size NaN", "POST", BATCH, size_body(b"NaN"), "writer", {422}),
    ("size Infinity", "POST", BATCH, size_body(b"Infinity"), "writer", {422}),
    ("size 1.5", "POST", BATCH, size_body(b"1.5"), "writer", {422}),
    ("size -0", "POST", BATCH, size_body(b"-0"), "writer", {200}),
    ("size true", "POST", BATCH, size_body(b"true"), "writer", {422}),
    ("size string", "POST", BATCH, size_body(b'"12"'), "writer", {422}),
    ("limit 10**30", "POST", f"{LOCKS}/verify", b'{"limit":' + b"9" * 30 + b"}", "writer", {200}),
    (
        "limit 10**5000",
        "POST",
        f"{LOCKS}/verify",
        b'{"limit":' + b"9" * 5000 + b"}",
        "writer",
        {422},
    ),
    ("limit 1e999", "POST", f"{LOCKS}/verify", b'{"limit":1e999}', "writer", {422}),
    ("limit -1", "POST", f"{LOCKS}/verify", b'{"limit":-1}', "writer", {422}),
    ("cursor int", "POST", f"{LOCKS}/verify", b'{"cursor":12}', "writer", {422}),
    (
        "cursor 19 digits",
        "POST",
        f"{LOCKS}/verify",
        b'{"cursor":"' + b"9" * 19 + b'"}',
        "writer",
        {422},
    ),
    ("query limit huge", "GET", f"{LOCKS}?limit={'9' * 40}", b"", "writer", {422}),
    ("query limit negative", "GET", f"{LOCKS}?limit=-5", b"", "writer", {422}),
    ("query cursor huge", "GET", f"{LOCKS}?cursor={'9' * 40}", b"", "writer", {422}),
    (
        "query repeated",
        "GET",
        f"{LOCKS}?limit=1&limit=x&cursor=1&cursor=",
        b"",
        "writer",
        {200, 422},
    ),
    (
        "verify size huge",
        "POST",
        "/.lfs/verify",
        b'{"oid":"' + OID.encode() + b'","size":' + b"9" * 4000 + b"}",
        "no-token",
        {401},
    ),
    # invalid UTF-8, encodings, NUL
    (
        "invalid utf-8 body",
        "POST",
        BATCH,
        b'{"operation":"upl\xff\xfeoad","objects":[]}',
        "writer",
        {422},
    ),
    (
        "invalid utf-8 oid",
        "POST",
        BATCH,
        b'{"operation":"download","objects":[{"oid":"\xc3\x28","size":1}]}',
        "writer",
        {422},
    ),
    ("utf-16 body", "POST", BATCH, batch_body().decode().encode("utf-16"), "writer", {200, 422}),
    ("utf-32 body", "POST", BATCH, batch_body().decode().encode("utf-32"), "writer", {200, 422}),
    (
        "lone surrogate oid",
        "POST",
        BATCH,
        b'{"operation":"download","objects":[{"oid":"\\ud800","size":1}]}',
        "writer",
        {200},
    ),
    (
        "escaped NUL oid",
        "POST",
        BATCH,
        b'{"operation":"download","objects":[{"oid":"\\u0000","size":1}]}',
        "writer",
        {200},
    ),
    (
        "raw NUL in body",
        "POST",
        BATCH,
        b'{"operation":"download",\x00"objects":[]}',
        "writer",
        {422},
    ),
    ("NUL lock path", "POST", LOCKS, b'{"path":"a\\u0000b"}', "writer", {422}),
    ("surrogate lock path", "POST", LOCKS, b'{"path":"a/\\udc80"}', "writer", {201, 422}),
    (
        "surrogate lock ref",
        "POST",
        f"{LOCKS}/verify",
        b'{"ref":{"name":"\\ud800"}}',
        "writer",
        {200, 422},
    ),
    ("NUL cursor", "POST", f"{LOCKS}/verify", b'{"cursor":"1\\u0000"}', "writer", {422}),
    ("NUL query path", "GET", f"{LOCKS}?path=a%00b&id=%00", b"", "writer", {200, 400}),
    (
        "invalid utf-8 query",
        "GET",
        f"{LOCKS}?path=%ff%fe&id=%c3%28&refspec=%ed%a0%80",
        b"",
        "writer",
        {200},
    ),
    (
        "NUL in URL path",
        "POST",
        "/fuzz/pr%00oj/info/lfs/objects/batch",
        batch_body(),
        "writer",
        {400, 404},
    ),
    ("invalid utf-8 lock id", "POST", f"{LOCKS}/%ff%fe/unlock", b"{}", "writer", {404}),
    ("surrogate lock id", "POST", f"{LOCKS}/%ed%a0%80/unlock", b"{}", "writer", {404}),
    (
        "invalid utf-8 repo",
        "POST",
        "/fuzz/%ff%fe/info/lfs/objects/batch",
        batch_body(),
        "writer",
        {404},
    ),
    ("empty body", "POST", BATCH, b"", "writer", {422}),
    ("body null", "POST", BATCH, b"null", "writer", {422}),
    ("body string", "POST", BATCH, b'"upload"', "writer", {422}),
    ("body array", "POST", LOCKS, b"[]", "writer", {422}),
    (
        "duplicate keys",
        "POST",
        BATCH,
        b'{"operation":"upload","operation":"download","objects":[]}',
        "writer",
        {200},
    ),
    # null fields
    ("null operation", "POST", BATCH, batch_body(operation=None), "writer", {422}),
    ("null objects", "POST", BATCH, batch_body(objects=None), "writer", {422}),
    ("null object", "POST", BATCH, batch_body(objects=[None]), "writer", {422}),
    ("null oid", "POST", BATCH, batch_body(objects=[{"oid": None, "size": 1}]), "writer", {422}),
    ("null size", "POST", BATCH, batch_body(objects=[{"oid": OID, "size": None}]), "writer", {422}),
    (
        "null ref etc",
        "POST",
        BATCH,
        batch_body(ref=None, transfers=None, hash_algo=None),
        "writer",
        {200},
    ),
    ("null transfer", "POST", BATCH, batch_body(transfers=[None]), "writer", {422}),
    ("unhashable transfer", "POST", BATCH, batch_body(transfers=[{}, []]), "writer", {422}),
    (
        "list hash_algo",
        "POST",
        BATCH,
        batch_body(objects=[{"oid": OID, "size": 1}], hash_algo=["sha256"]),
        "writer",
        {200},
    ),
    ("object hash_algo", "POST", BATCH, batch_body(hash_algo={"a": 1}), "writer", {200}),
    ("null lock path", "POST", LOCKS, b'{"path":null}', "writer", {422}),
    ("null ref name", "POST", LOCKS, b'{"path":"x","ref":{"name":null}}', "writer", {422}),
    ("null force", "POST", f"{LOCKS}/{'0' * 32}/unlock", b'{"force":null}', "writer", {422}),
    (
        "null limit and cursor",
        "POST",
        f"{LOCKS}/verify",
        b'{"limit":null,"cursor":null,"ref":null}',
        "writer",
        {200},
    ),
    ("null verify fields", "POST", "/.lfs/verify", b'{"oid":null,"size":null}', "no-token", {401}),
    # big bodies and lists
    (
        "1000 objects",
        "POST",
        BATCH,
        batch_body(objects=[{"oid": OID, "size": i} for i in range(1000)]),
        "writer",
        {200},
    ),
    (
        "1001 objects",
        "POST",
        BATCH,
        batch_body(objects=[{"oid": OID, "size": 1}] * 1001),
        "writer",
        {413},
    ),
    (
        "1 MB oid",
        "POST",
        BATCH,
        batch_body(objects=[{"oid": "a" * 1_000_000, "size": 1}]),
        "writer",
        {200},
    ),
    ("5 MB body", "POST", BATCH, b" " * 5_000_000, "writer", {413}),
    (
        "long lock path",
        "POST",
        LOCKS,
        json.dumps({"path": "a/" * 3000 + "b"}).encode(),
        "writer",
        {422},
    ),
    ("traversal lock path", "POST", LOCKS, b'{"path":"a/../../etc/passwd"}', "writer", {422}),
    ("absolute lock path", "POST", LOCKS, b'{"path":"C:\\\\Windows"}', "writer", {422}),
    # repository paths: %2F, ../, long, odd
    ("%2F repo", "POST", "/fuzz%2Fproj.git/info/lfs/objects/batch", batch_body(), "writer", {200}),
    ("%2f repo lowercase", "POST", "/fuzz%2fproj/info/lfs/locks/verify", b"{}", "writer", {200}),
    (
        "../ in repo",
        "POST",
        "/fuzz/../../etc/info/lfs/objects/batch",
        batch_body(),
        "writer",
        {200, 400, 404},
    ),
    (
        "..%2F in repo",
        "POST",
        "/fuzz/..%2F..%2Fetc/info/lfs/objects/batch",
        batch_body(),
        "writer",
        {400, 404},
    ),
    (
        "%2e%2e in repo",
        "POST",
        "/fuzz/%2e%2e/%2e%2e/etc/info/lfs/objects/batch",
        batch_body(),
        "writer",
        {200, 400, 404},
    ),
    (
        "%2e%2e%2f in repo",
        "POST",
        "/fuzz/%2e%2e%2f%2e%2e%2fetc/info/lfs/locks",
        b'{"path":"x"}',
        "writer",
        {400, 404},
    ),
    ("dot repo", "POST", "/.hidden/info/lfs/objects/batch", batch_body(), "writer", {404}),
    ("dot-git only", "POST", "/.git/info/lfs/objects/batch", batch_body(), "writer", {404}),
    (".lfs as repo", "POST", "/.lfs/info/lfs/objects/batch", batch_body(), "writer", {404}),
    (
        "backslash repo",
        "POST",
        "/fuzz%5C..%5Cproj/info/lfs/objects/batch",
        batch_body(),
        "writer",
        {404},
    ),
    (
        "double slash repo",
        "POST",
        "/fuzz//proj/info/lfs/objects/batch",
        batch_body(),
        "writer",
        {200, 404},
    ),
    (
        "9 segments",
        "POST",
        "/a/b/c/d/e/f/g/h/i/info/lfs/objects/batch",
        batch_body(),
        "writer",
        {404},
    ),
    (
        "unicode repo",
        "POST",
        "/f%C3%BCzz/proj/info/lfs/objects/batch",
        batch_body(),
        "writer",
        {404},
    ),
    (
        "long segment",
        "POST",
        f"/{'a' * 2000}/info/lfs/objects/batch",
        batch_body(),
        "writer",
        {404},
    ),
    (
        "very long path",
        "POST",
        f"/{'a/' * 5000}info/lfs/objects/batch",
        batch_body(),
        "writer",
        {400, 414},
    ),
    ("very long lock id", "POST", f"{LOCKS}/{'a' * 3000}/unlock", b"{}", "writer", {404}),
    ("%2F lock id", "POST", f"{LOCKS}/a%2Fb/unlock", b"{}", "writer", {404}),
    ("../ lock id", "POST", f"{LOCKS}/../unlock", b"{}", "writer", {400, 404, 405, 422}),
    ("%2e%2e lock id", "POST", f"{LOCKS}/%2e%2e/unlock", b"{}", "writer", {400, 404}),
    ("traversal transfer", "GET", "/.lfs/download/../../etc/passwd", b"", "no-token", {400, 404}),
    (
        "encoded traversal transfer",
        "GET",
        "/.lfs/download/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        b"",
        "no-token",
        {400, 404},
    ),
    ("internal path", "GET", "/.lfs-internal/upload-auth", b"", "no-token", {404}),
    ("internal objects", "GET", f"/.lfs-internal/objects/{REPO}.git/", b"", "no-token", {404}),
    ("encoded internal", "GET", "/%2Elfs-internal/upload-auth", b"", "no-token", {404}),
    ("upper-case oid", "GET", f"/.lfs/download/{OID.upper()}", b"", "no-token", {404}),
    ("long oid", "GET", f"/.lfs/download/{OID}{OID}", b"", "no-token", {404}),
    # methods nothing serves
    ("DELETE batch", "DELETE", BATCH, b"", "writer", {405}),
    ("PUT locks", "PUT", LOCKS, b"{}", "writer", {405}),
    ("PROPFIND", "PROPFIND", "/", b"", "writer", {404, 405}),
    ("TRACE", "TRACE", BATCH, b"", "writer", {405}),
    ("GET upload", "GET", f"/.lfs/upload/{OID}", b"", "no-token", {405}),
    ("POST download", "POST", f"/.lfs/download/{OID}", b"", "no-token", {401, 405}),
]


def run_raw(fuzzed: Fuzzed, method: str, path: str, body: bytes, caller: str, **extra: str):
    headers = {"Content-Type": f"{LFS_MEDIA_TYPE}; charset=utf-8", "Accept": LFS_MEDIA_TYPE}
    headers.update(caller_headers(fuzzed, "verify", caller) if caller != "token" else {})
    headers.update(extra)
    return raw_request(fuzzed.stack, method, path, body, headers)


@pytest.mark.parametrize(
    ("method", "path", "body", "caller", "allowed"),
    [pytest.param(*case[1:], id=case[0]) for case in HOSTILE],
)
def test_hostile_request(
    fuzzed: Fuzzed, method: str, path: str, body: bytes, caller: str, allowed: set[int] | None
) -> None:
    status, headers, answer = run_raw(fuzzed, method, path, body, caller)
    CASES["hostile"] += 1
    sent = unquote(path) + body[:20000].decode("utf-8", "replace")
    assert_lfs_answer(status, headers.get("content-type", ""), answer, fuzzed.stack, method, sent)
    if allowed is not None:
        assert status in allowed, (status, answer[:300])


def token_for(fuzzed: Fuzzed, operation: str) -> dict[str, str]:
    return {"Authorization": fuzzed.tokens[operation]}


# (name, method, path-or-None for the token's own URL, body, extra headers, allowed)
HOSTILE_TRANSFERS: list[tuple[str, str, str, bytes, dict[str, str], set[int]]] = [
    ("range beyond", "download", "GET", b"", {"Range": "bytes=999999999999999999999-"}, {416}),
    ("range huge end", "download", "GET", b"", {"Range": f"bytes=0-{'9' * 40}"}, {206, 416}),
    ("range suffix zero", "download", "GET", b"", {"Range": "bytes=-0"}, {200, 206, 416}),
    ("multi range", "download", "GET", b"", {"Range": "bytes=0-1,3-4,0-1"}, {200, 206}),
    ("garbage range", "download", "GET", b"", {"Range": "bytes=\x01-\x02"}, {200, 400, 416}),
    ("range with NUL", "download", "GET", b"", {"Range": "bytes=0-%00"}, {200, 206, 416}),
    ("token NUL", "download", "GET", b"", {"Authorization": "Bearer a\x00b"}, {400}),
    ("token 3 KB junk", "download", "GET", b"", {"Authorization": "Bearer " + "x" * 3000}, {403}),
    (
        "token header too big",
        "download",
        "GET",
        b"",
        {"Authorization": "Bearer " + "x" * 20000},
        {400},
    ),
    ("token dots", "download", "GET", b"", {"Authorization": "Bearer ..."}, {403}),
    (
        "token alg none",
        "download",
        "GET",
        b"",
        {"Authorization": "Bearer eyJhbGciOiJub25lIn0.e30."},
        {403},
    ),
    (
        "token bad base64",
        "download",
        "GET",
        b"",
        {"Authorization": "Bearer eyJ!!!.eyJ!!!.sig"},
        {403},
    ),
    (
        "token huge kid",
        "download",
        "GET",
        b"",
        {
            "Authorization": "Bearer "
            + base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "kid": "k" * 2000}).encode())
            .decode()
            .rstrip("=")
            + ".e30.x"
        },
        {403},
    ),
    ("token non-utf8", "download", "GET", b"", {"Authorization": "Bearer \xff\xfe"}, {400, 403}),
    ("verify nested", "verify", "POST", b"[" * DEEP, {}, {422}),
    (
        "verify size huge",
        "verify",
        "POST",
        b'{"oid":"%s","size":%s}' % (b"0" * 64, b"9" * 4000),
        {},
        {403, 422},
    ),
    (
        "verify own oid huge size",
        "verify",
        "POST",
        b'{"oid":"OWN","size":' + b"9" * 4000 + b"}",
        {},
        {422},
    ),
    ("verify size null", "verify", "POST", b'{"oid":"OWN","size":null}', {}, {422}),
    ("verify oid list", "verify", "POST", b'{"oid":["OWN"],"size":1}', {}, {403}),
    ("verify invalid utf-8", "verify", "POST", b'{"oid":"\xff","size":1}', {}, {422}),
    ("upload wrong length", "upload", "PUT", b"too long", {}, {403}),
    ("upload wrong bytes", "upload", "PUT", b"x", {}, {422}),
    (
        "upload chunked",
        "upload",
        "PUT",
        b"1\r\nx\r\n0\r\n\r\n",
        {"Transfer-Encoding": "chunked", "Content-Length": ""},
        {400, 403, 411, 422},
    ),
    ("upload negative length", "upload", "PUT", b"", {"Content-Length": "-1"}, {400}),
    ("upload huge length", "upload", "PUT", b"", {"Content-Length": "9" * 30}, {400, 413}),
    ("upload two lengths", "upload", "PUT", b"u", {"Content-Length": "1, 1"}, {400}),
]


@pytest.mark.parametrize(
    ("operation", "method", "body", "headers", "allowed"),
    [pytest.param(*case[1:], id=case[0]) for case in HOSTILE_TRANSFERS],
)
def test_hostile_transfer(
    fuzzed: Fuzzed,
    operation: str,
    method: str,
    body: bytes,
    headers: dict[str, str],
    allowed: set[int],
) -> None:
    if operation == "upload":
        operation = "hostile-upload"
    oid = fuzzed.oids[operation]
    path = {"verify": "/.lfs/verify", "download": f"/.lfs/download/{oid}"}.get(
        operation, f"/.lfs/upload/{oid}"
    )
    body = body.replace(b"OWN", oid.encode())
    sent_headers = {
        "Content-Type": LFS_MEDIA_TYPE,
        **token_for(fuzzed, operation),
        "Content-Length": str(len(body)),
        **headers,
    }
    try:
        status, answer_headers, answer = raw_request(fuzzed.stack, method, path, body, sent_headers)
    except (ConnectionError, OSError) as exc:  # nginx may close on a broken request
        pytest.fail(f"connection dropped without an answer: {exc!r}")
    CASES["hostile"] += 1
    content_type = answer_headers.get("content-type", "")
    assert_lfs_answer(status, content_type, answer, fuzzed.stack, method, path)
    assert status in allowed, (status, answer[:300])
    if operation == "hostile-upload":  # nothing was stored from a hostile upload
        assert not list((fuzzed.stack.data_dir / "objects").rglob(oid))


# (name, caller, lock owner, repo, id suffix, body, allowed): real lock ids, hostile use
HOSTILE_UNLOCKS: list[tuple[str, str, str, str, str, bytes, set[int]]] = [
    ("others' lock", "writer", "admin", REPO, "", b"{}", {403}),
    ("others' lock, force", "writer", "admin", REPO, "", b'{"force":true}', {403}),
    ("force as string", "admin", "writer", REPO, "", b'{"force":"true"}', {422}),
    ("force as number", "admin", "writer", REPO, "", b'{"force":1}', {422}),
    ("force null", "admin", "writer", REPO, "", b'{"force":null}', {422}),
    ("nested body", "admin", "writer", REPO, "", b'{"force":' * DEEP, {422}),
    ("body null", "writer", "writer", REPO, "", b"null", {422}),
    ("ref not an object", "writer", "writer", REPO, "", b'{"ref":"main"}', {422}),
    ("anonymous", "no-token", "writer", REPO, "", b"{}", {401}),
    ("other repository", "admin", "writer", "fuzz/other", "", b'{"force":true}', {404}),
    ("repository with .git", "writer", "admin", f"{REPO}.git", "", b"{}", {403}),
    ("id with suffix", "admin", "writer", REPO, "x", b'{"force":true}', {404}),
    ("id with NUL", "admin", "writer", REPO, "%00", b'{"force":true}', {400, 404}),
    ("id with %2F", "admin", "writer", REPO, "%2F..", b'{"force":true}', {400, 404}),
]


@pytest.mark.parametrize(
    ("caller", "owner", "repo", "suffix", "body", "allowed"),
    [pytest.param(*case[1:], id=case[0]) for case in HOSTILE_UNLOCKS],
)
def test_hostile_unlock(
    fuzzed: Fuzzed,
    caller: str,
    owner: str,
    repo: str,
    suffix: str,
    body: bytes,
    allowed: set[int],
) -> None:
    """Unlock requests on real locks with hostile bodies, ids and callers: none unlocks."""
    path = f"/{repo}/info/lfs/locks/{fuzzed.lock_ids[owner]}{suffix}/unlock"
    status, headers, answer = run_raw(fuzzed, "POST", path, body, caller)
    CASES["hostile"] += 1
    sent = unquote(path) + body[:20000].decode("utf-8", "replace")
    assert_lfs_answer(status, headers.get("content-type", ""), answer, fuzzed.stack, "POST", sent)
    assert status in allowed, (status, answer[:300])
    listed = fuzzed.session.get(
        f"{fuzzed.stack.lfs_base(REPO)}/locks",
        params={"id": fuzzed.lock_ids[owner]},
        headers=basic("writer", PASSWORDS["writer"]),
        timeout=30,
    )
    assert len(listed.json()["locks"]) == 1, listed.text


BAD_CREDENTIALS = [
    ("not base64", "Basic ###"),
    ("no colon", "Basic " + base64.b64encode(b"writer").decode()),
    ("latin-1 credentials", "Basic " + base64.b64encode(b"wr\xffter:\xfe").decode()),
    ("NUL in credentials", "Basic " + base64.b64encode(b"writer\x00:pass\x00word").decode()),
    ("empty credentials", "Basic "),
    ("unknown scheme", "Negotiate abc"),
    ("bearer on batch", "Bearer abc.def.ghi"),
    ("2 KB user", "Basic " + base64.b64encode(b"u" * 2000 + b":p").decode()),
    ("wrong password", "Basic " + base64.b64encode(b"writer:wrong").decode()),
    ("unknown user", "Basic " + base64.b64encode(b"nobody:wrong").decode()),
    ("token-shaped password", "Basic " + base64.b64encode(b"writer:lfs_0_" + b"x" * 40).decode()),
]


@pytest.mark.parametrize("endpoint", ["batch", "locks", "metrics"])
def test_bad_credentials(fuzzed: Fuzzed, endpoint: str) -> None:
    """Last: wrong passwords count as failed logins, and enough of them give 429."""
    path, body, method = {
        "batch": (BATCH, batch_body(objects=[{"oid": OID, "size": 1}]), "POST"),
        "locks": (LOCKS, b'{"path":"a"}', "POST"),
        "metrics": ("/metrics", b"", "GET"),
    }[endpoint]
    for name, value in BAD_CREDENTIALS:
        status, headers, answer = raw_request(
            fuzzed.stack,
            method,
            path,
            body,
            {"Content-Type": LFS_MEDIA_TYPE, "Authorization": value},
        )
        CASES["hostile"] += 1
        assert_lfs_answer(status, headers.get("content-type", ""), answer, fuzzed.stack, method)
        assert status in ({401, 429} if "Basic" in value else {401, 403}), (name, status, answer)


def test_case_count_and_health(fuzzed: Fuzzed) -> None:
    """Several thousand cases ran, and the server is still healthy and clean."""
    total = sum(CASES.values())
    print(f"\nfuzz cases: {total} {dict(CASES)}")
    if len(CASES) > 1:  # the whole module ran, not a single test picked by hand
        assert total >= 3000 * SCALE, dict(CASES)
    assert fuzzed.session.get(f"{fuzzed.stack.url}/healthz", timeout=10).status_code == 200
    assert fuzzed.stack.proc is not None and fuzzed.stack.proc.poll() is None
    log = fuzzed.stack.log.read_text(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 :][:6000]
