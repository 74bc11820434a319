"""Signed transfer tokens on the real stack: forged, tampered, expired,
missing, and tokens used for another repository, oid or operation.

Every refusal must be LFS JSON: 401 without a token, 403 with a bad one. Where
a test needs a validly signed token the batch API would not hand out, it signs
one with the server's own key (data_dir/secret.key) and the claims of a real
token, so the server's checks, not a broken signature, decide the outcome.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from tests.integration.helpers import (
    actions_for,
    assert_lfs_error,
    assert_object_error,
    assert_raw_lfs_error,
    batch_for,
    bearer,
    claims_of,
    download_action,
    forge,
    lfs_headers,
    only_object,
    raw_request,
    read_response_head,
    secret_key,
    send_upload_head,
    sha256,
    stored_copies,
    tamper,
    unsigned_token,
    upload,
    verify_action,
)
from tests.lfsapi import basic
from tests.stack import LFS_MEDIA_TYPE, Stack
from tests.stores import LOCAL, S3_PROXY
from tests.waiting import wait_until

# Transfer tokens guard the server's own hrefs, which proxy mode uses for both.
STORES = (LOCAL, S3_PROXY)

REPO_A = "tok/a"
REPO_B = "tok/b"
LARGE = 2 << 20


@dataclass
class World:
    x: bytes  # stored in REPO_A only
    y: bytes  # stored in REPO_B only
    download_x: str  # a real download token for x in REPO_A
    upload_template: str  # a real upload token (REPO_A, an object never uploaded)
    verify_template: str  # the verify token of that upload


@pytest.fixture(scope="module")
def world(stack: Stack) -> World:
    x, y = os.urandom(65536), os.urandom(70000)
    upload(stack, REPO_A, x)
    upload(stack, REPO_B, y)
    actions = actions_for(stack, REPO_A, "upload", b"template object, never uploaded")
    return World(
        x=x,
        y=y,
        download_x=bearer(download_action(stack, REPO_A, x)),
        upload_template=bearer(actions["upload"]),
        verify_template=bearer(verify_action(stack, actions["upload"])),
    )


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def get_download(stack: Stack, oid: str, headers: dict[str, str]) -> requests.Response:
    return requests.get(f"{stack.url}/.lfs/download/{oid}", headers=headers, timeout=30)


def put_upload(
    stack: Stack, data: bytes, headers: dict[str, str], oid: str | None = None
) -> requests.Response:
    return requests.put(
        f"{stack.url}/.lfs/upload/{oid or sha256(data)}", data=data, headers=headers, timeout=30
    )


def post_verify(stack: Stack, data: bytes, headers: dict[str, str]) -> requests.Response:
    return requests.post(
        f"{stack.url}/.lfs/verify",
        data=json.dumps({"oid": sha256(data), "size": len(data)}),
        headers={**headers, "Content-Type": LFS_MEDIA_TYPE},
        timeout=30,
    )


def assert_not_stored(stack: Stack, data: bytes) -> None:
    oid = sha256(data)
    assert stored_copies(stack, oid) == []
    for repo in (REPO_A, REPO_B):
        obj = only_object(batch_for(stack, repo, "download", data), stack)
        assert_object_error(obj, 404)
    # nginx removes a refused body's temp file as the request ends.
    assert wait_until(lambda: stack.upload_tmp_files() == []), stack.upload_tmp_files()


def refused_before_the_body(stack: Stack, token: str, status: int) -> dict[str, Any]:
    """The answer to the head of a 2 MiB upload (from 1 MB on, the token is
    checked before nginx reads a body byte): no body is ever sent."""
    with send_upload_head(stack, sha256(b"never sent"), token, LARGE) as sock:
        answer = read_response_head(sock, timeout=5)
    assert stack.upload_tmp_files() == []
    return assert_raw_lfs_error(*answer, status, stack)


def as_op(stack: Stack, world: World, op: str, data: bytes, repo: str = REPO_A) -> str:
    """A validly signed token for `op` on `data` in `repo`, as batch would mint it."""
    return forge(stack, world.download_x, repo=repo, oid=sha256(data), size=len(data), op=op)


# ----------------------------------------------------------- positive controls


def test_forged_token_with_the_real_key_works(stack: Stack, world: World) -> None:
    """Control: the forging helper makes tokens the server accepts, so the
    refusals below come from the server's checks."""
    response = get_download(stack, sha256(world.x), auth(as_op(stack, world, "download", world.x)))
    assert response.status_code == 200
    assert response.content == world.x
    fresh = os.urandom(3000)
    response = put_upload(stack, fresh, auth(as_op(stack, world, "upload", fresh)))
    assert response.status_code == 200, response.text
    response = post_verify(stack, fresh, auth(as_op(stack, world, "verify", fresh)))
    assert response.status_code == 200, response.text


def test_download_token_claims(stack: Stack, world: World) -> None:
    claims = claims_of(world.download_x)
    assert claims["repo"] == REPO_A
    assert claims["oid"] == sha256(world.x)
    assert claims["size"] == len(world.x)
    assert claims["op"] == "download"
    assert {"sub", "right", "iat", "exp"} <= set(claims)
    assert claims["iat"] <= time.time() + 5 < claims["exp"]
    assert jwt.get_unverified_header(world.download_x)["alg"] == "HS256"
    assert jwt.get_unverified_header(world.download_x).get("kid")


# ---------------------------------------------------------------- no token


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer ", "Bearer    "])
def test_missing_token_is_401(stack: Stack, world: World, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    fresh = os.urandom(1000)
    assert_lfs_error(get_download(stack, sha256(world.x), headers), 401, stack)
    assert_lfs_error(put_upload(stack, fresh, headers), 401, stack)
    assert_lfs_error(post_verify(stack, world.x, headers), 401, stack)
    assert_not_stored(stack, fresh)


def test_missing_token_of_a_large_body_is_401_before_it(stack: Stack) -> None:
    refused_before_the_body(stack, "", 401)


# ---------------------------------------------------------------- bad tokens


def bad_tokens(stack: Stack, template: str) -> dict[str, str]:
    now = int(time.time())
    claims = claims_of(template)
    return {
        "wrong-key": forge(stack, template, key=os.urandom(48)),
        "wrong-key-no-kid": jwt.encode(claims, os.urandom(48), algorithm="HS256"),
        "tampered-exp": tamper(template, exp=now + 10**6),
        "tampered-size": tamper(template, size=claims["size"] + 1),
        "tampered-repo": tamper(template, repo=REPO_B),
        "tampered-sub": tamper(template, sub="admin", right="admin"),
        "alg-none": unsigned_token(template),
        "alg-none-empty-sig": unsigned_token(template).rstrip("."),
        "hs512-real-key": forge(stack, template, algorithm="HS512"),
        "expired": forge(stack, template, iat=now - 7200, exp=now - 60),
        "unknown-kid": jwt.encode(claims, secret_key(stack), "HS256", {"kid": "0" * 16}),
        "no-exp": forge(stack, template, exp=None),
        "no-repo": forge(stack, template, repo=None),
        "no-op": forge(stack, template, op=None),
        "garbage": "abc.def.ghi",
        "not-a-jwt": "x" * 40,
        "truncated": template[:-10],
    }


BAD_KINDS = [
    "wrong-key",
    "wrong-key-no-kid",
    "tampered-exp",
    "tampered-size",
    "tampered-repo",
    "tampered-sub",
    "alg-none",
    "alg-none-empty-sig",
    "hs512-real-key",
    "expired",
    "unknown-kid",
    "no-exp",
    "no-repo",
    "no-op",
    "garbage",
    "not-a-jwt",
    "truncated",
]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_download_token_is_403(stack: Stack, world: World, kind: str) -> None:
    token = bad_tokens(stack, world.download_x)[kind]
    response = get_download(stack, sha256(world.x), auth(token))
    body = assert_lfs_error(response, 403, stack)
    assert world.x[:64] not in response.content
    if kind == "expired":
        assert "expired" in body["message"].lower(), body


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_upload_token_is_403(stack: Stack, world: World, kind: str) -> None:
    data = os.urandom(2000)
    template = as_op(stack, world, "upload", data)
    response = put_upload(stack, data, auth(bad_tokens(stack, template)[kind]))
    body = assert_lfs_error(response, 403, stack)
    if kind == "expired":
        assert "expired" in body["message"].lower(), body
    assert_not_stored(stack, data)


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_upload_token_of_a_large_body_is_403_before_it(
    stack: Stack, world: World, kind: str
) -> None:
    template = forge(stack, world.download_x, oid=sha256(b"never sent"), size=LARGE, op="upload")
    body = refused_before_the_body(stack, bad_tokens(stack, template)[kind], 403)
    if kind == "expired":
        assert "expired" in body["message"].lower(), body


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_verify_token_is_403(stack: Stack, world: World, kind: str) -> None:
    template = as_op(stack, world, "verify", world.x)
    response = post_verify(stack, world.x, auth(bad_tokens(stack, template)[kind]))
    assert_lfs_error(response, 403, stack)


def test_bad_kinds_list_is_complete(stack: Stack, world: World) -> None:
    assert sorted(bad_tokens(stack, world.download_x)) == sorted(BAD_KINDS)


# ---------------------------------------------------------------- cross-repo


def test_download_token_of_repo_a_cannot_read_repo_b(stack: Stack, world: World) -> None:
    y_oid = sha256(world.y)
    # A validly signed download token for y, but minted for REPO_A, which
    # lacks y: the object of REPO_B must not be served.
    response = get_download(stack, y_oid, auth(as_op(stack, world, "download", world.y, REPO_A)))
    assert_lfs_error(response, 404, stack)
    assert world.y[:64] not in response.content
    # Same token for REPO_B (which has y) is served: the repo claim decides.
    response = get_download(stack, y_oid, auth(as_op(stack, world, "download", world.y, REPO_B)))
    assert response.status_code == 200
    assert response.content == world.y
    # And the batch of REPO_A does not hand out y.
    obj = only_object(
        stack.batch(
            REPO_A, {"operation": "download", "objects": [{"oid": y_oid, "size": len(world.y)}]}
        ),
        stack,
    )
    assert_object_error(obj, 404)


def test_verify_token_of_repo_a_does_not_see_repo_b(stack: Stack, world: World) -> None:
    response = post_verify(stack, world.y, auth(as_op(stack, world, "verify", world.y, REPO_A)))
    assert_lfs_error(response, 404, stack)


def test_upload_token_of_repo_a_commits_into_a_only(stack: Stack, world: World) -> None:
    data = os.urandom(5000)
    oid = sha256(data)
    actions = actions_for(stack, REPO_A, "upload", data)
    response = requests.put(
        actions["upload"]["href"], data=data, headers=actions["upload"]["header"], timeout=30
    )
    assert response.status_code == 200, response.text
    copies = stored_copies(stack, oid)
    assert len(copies) == 1, copies
    objects = stack.data_dir / "objects"
    relative = str(copies[0]) if stack.bucket else Path(copies[0]).relative_to(objects).as_posix()
    assert relative == f"{oid[:2]}/{oid[2:4]}/{oid}", relative
    item = {"oid": oid, "size": len(data)}
    in_b = only_object(stack.batch(REPO_B, {"operation": "download", "objects": [item]}), stack)
    assert_object_error(in_b, 404)
    in_a = only_object(stack.batch(REPO_A, {"operation": "download", "objects": [item]}), stack)
    assert "download" in in_a["actions"]
    # The upload is still needed in REPO_B.
    upload_b = only_object(stack.batch(REPO_B, {"operation": "upload", "objects": [item]}), stack)
    assert "upload" in upload_b["actions"]


# ---------------------------------------------------------------- cross-oid


def test_download_token_for_another_oid_is_403(stack: Stack, world: World) -> None:
    # x's token on the URL of y (stored in REPO_B) and of x's twin in REPO_A.
    response = get_download(stack, sha256(world.y), auth(world.download_x))
    assert_lfs_error(response, 403, stack)
    assert world.y[:64] not in response.content
    other = os.urandom(500)
    upload(stack, REPO_A, other)
    response = get_download(stack, sha256(other), auth(world.download_x))
    assert_lfs_error(response, 403, stack)
    assert other not in response.content


def test_upload_token_for_another_oid_is_403(stack: Stack, world: World) -> None:
    first, second = os.urandom(1500), os.urandom(1500)
    token = as_op(stack, world, "upload", first)
    response = put_upload(stack, second, auth(token))
    assert_lfs_error(response, 403, stack)
    # Not even under the token's own oid with the other body.
    response = put_upload(stack, second, auth(token), oid=sha256(first))
    assert_lfs_error(response, 422, stack)
    assert_not_stored(stack, first)
    assert_not_stored(stack, second)


def test_verify_token_for_another_oid_is_403(stack: Stack, world: World) -> None:
    token = as_op(stack, world, "verify", world.x)
    other = os.urandom(10)
    upload(stack, REPO_A, other)
    assert_lfs_error(post_verify(stack, other, auth(token)), 403, stack)
    assert post_verify(stack, world.x, auth(token)).status_code == 200


# ---------------------------------------------------------------- cross-operation


def test_download_token_cannot_upload(stack: Stack, world: World) -> None:
    data = os.urandom(4000)
    response = put_upload(stack, data, auth(as_op(stack, world, "download", data)))
    assert_lfs_error(response, 403, stack)
    assert_not_stored(stack, data)


def test_verify_token_cannot_upload(stack: Stack, world: World) -> None:
    data = os.urandom(4000)
    response = put_upload(stack, data, auth(as_op(stack, world, "verify", data)))
    assert_lfs_error(response, 403, stack)
    assert_not_stored(stack, data)


@pytest.mark.parametrize("op", ["upload", "verify"])
def test_other_tokens_cannot_download(stack: Stack, world: World, op: str) -> None:
    response = get_download(stack, sha256(world.x), auth(as_op(stack, world, op, world.x)))
    assert_lfs_error(response, 403, stack)
    assert world.x[:64] not in response.content


@pytest.mark.parametrize("op", ["upload", "download"])
def test_other_tokens_cannot_verify(stack: Stack, world: World, op: str) -> None:
    response = post_verify(stack, world.x, auth(as_op(stack, world, op, world.x)))
    assert_lfs_error(response, 403, stack)


def test_real_upload_token_on_verify_and_download(stack: Stack, world: World) -> None:
    """The batch's own upload token, not only forged ones, is bound to upload."""
    data = os.urandom(777)
    actions = actions_for(stack, REPO_A, "upload", data)
    upload_headers = actions["upload"]["header"]
    assert_lfs_error(post_verify(stack, data, upload_headers), 403, stack)
    assert_lfs_error(get_download(stack, sha256(data), upload_headers), 403, stack)
    verify_headers = verify_action(stack, actions["upload"])["header"]
    assert_lfs_error(put_upload(stack, data, verify_headers), 403, stack)
    assert_not_stored(stack, data)


# ---------------------------------------------------------------- %2F in the repo


def batch_raw(stack: Stack, path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    return raw_request(
        stack, "POST", f"{path}/info/lfs/objects/batch", json.dumps(body).encode(), lfs_headers()
    )


def granted(status: int, body: bytes) -> list[dict[str, Any]]:
    """Objects a batch answer grants actions for."""
    if status != 200:
        return []
    return [obj for obj in json.loads(body)["objects"] if obj.get("actions")]


@pytest.mark.parametrize(
    "path",
    [
        "/tok%2Fa.git",
        "/tok%2fa",
        "/tok%2Fa%2F..%2Fb.git",
        "/tok/a.git%2F..%2F..%2Ftok%2Fb.git",
        "/tok%2F..%2Ftok%2Fb.git",
        "/tok%2Fa.git%2Finfo%2Flfs%2F..%2F..%2F..%2Fb.git",
        "/tok/a%252Fb.git",
        "/%2Ftok/b.git",
    ],
)
def test_encoded_slash_cannot_reach_another_repository(
    stack: Stack, world: World, path: str
) -> None:
    """Whatever a `%2F` repo path resolves to, it is the repository its decoded
    name names: a download of y (only in tok/b) is never granted except by
    tok/b itself, and every granted token names the repository of the path."""
    x_item = {"oid": sha256(world.x), "size": len(world.x)}
    y_item = {"oid": sha256(world.y), "size": len(world.y)}
    status, headers, body = batch_raw(
        stack, path, {"operation": "download", "objects": [x_item, y_item]}
    )
    if status != 200:
        assert 400 <= status < 500, (status, body)
        assert headers["content-type"].startswith(LFS_MEDIA_TYPE)
    for obj in granted(status, body):
        token = bearer(obj["actions"]["download"])
        repo = claims_of(token)["repo"]
        holder = REPO_A if obj["oid"] == x_item["oid"] else REPO_B
        assert repo == holder, (path, obj["oid"], repo)
        # Only paths that decode to exactly that repository may grant it.
        decoded = path.replace("%2F", "/").replace("%2f", "/").strip("/").removesuffix(".git")
        assert decoded == holder, (path, repo)
        content = get_download(stack, obj["oid"], auth(token)).content
        assert sha256(content) == obj["oid"]


def test_encoded_slash_upload_lands_in_the_decoded_repository(stack: Stack, world: World) -> None:
    data = os.urandom(1234)
    item = {"oid": sha256(data), "size": len(data)}
    status, _, body = batch_raw(stack, "/tok%2Fc.git", {"operation": "upload", "objects": [item]})
    objects = granted(status, body)
    if not objects:  # refusing %2F outright is fine too
        assert status in (400, 404) or json.loads(body)["objects"][0].get("error"), body
        return
    action = objects[0]["actions"]["upload"]
    assert claims_of(bearer(action))["repo"] == "tok/c"
    assert (
        requests.put(action["href"], data=data, headers=action["header"], timeout=30).status_code
        == 200
    )
    assert len(stored_copies(stack, item["oid"])) == 1
    obj = only_object(stack.batch("tok/c", {"operation": "download", "objects": [item]}), stack)
    assert "download" in obj["actions"], obj
    assert not [p for p in (stack.data_dir / "objects").rglob("*") if "%" in p.name]
    for repo in (REPO_A, REPO_B):
        obj = only_object(stack.batch(repo, {"operation": "download", "objects": [item]}), stack)
        assert_object_error(obj, 404)


# ---------------------------------------------------------------- lifetime


def test_token_lifetime_follows_the_setting(tmp_path_factory: pytest.TempPathFactory) -> None:
    server = Stack(
        tmp_path_factory.mktemp("ttl"), LFS_ANONYMOUS="write", LFS_TOKEN_TTL="60"
    ).start()
    try:
        before = int(time.time())
        actions = actions_for(server, REPO_A, "upload", b"short-lived")
        after = int(time.time())
        for action in actions.values():
            assert action["expires_in"] == 60
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", action["expires_at"])
            claims = claims_of(bearer(action))
            assert before + 60 <= claims["exp"] <= after + 60
            expires_at = datetime.strptime(action["expires_at"], "%Y-%m-%dT%H:%M:%SZ")
            assert int(expires_at.replace(tzinfo=UTC).timestamp()) == claims["exp"]
        # The same claims signed with an exp just past are refused as expired.
        stale = forge(server, bearer(actions["upload"]), exp=int(time.time()) - 1)
        response = put_upload(server, b"short-lived", auth(stale))
        assert "expired" in assert_lfs_error(response, 403, server)["message"].lower()
        assert put_action_ok(actions["upload"], b"short-lived")
    finally:
        server.stop()


def put_action_ok(action: dict[str, Any], data: bytes) -> bool:
    response = requests.put(action["href"], data=data, headers=action["header"], timeout=30)
    return response.status_code == 200


# ---------------------------------------------------------------- %2F with grants


def test_encoded_slash_cannot_widen_a_users_grant(tmp_path_factory: pytest.TempPathFactory) -> None:
    """alice may read acl/a and the repositories under it only: no spelling of
    a repo path (encoded slashes, dot segments, doubled slashes) lets her
    batch hand out acl/b's object. (With `acl/a/*` granted, a path such as
    acl/a/../b that reached the store un-normalised would be acl/b.)"""
    password = "pass-word-5678"
    server = Stack(tmp_path_factory.mktemp("acl"), LFS_ANONYMOUS="none")
    server.add_user("writer", password, ("acl/*", "write"))
    server.add_user("alice", password, ("acl/a", "read"), ("acl/a/*", "read"))
    server.start()
    try:
        x, y = os.urandom(3000), os.urandom(3001)
        # acl/a/sub makes the store hold a folder acl/a, which a path acl/a/..
        # would need to reach acl/b on the filesystem.
        for repo, data in (("acl/a", x), ("acl/b", y), ("acl/a/sub", os.urandom(10))):
            item = {"oid": sha256(data), "size": len(data)}
            response = server.batch(
                repo, {"operation": "upload", "objects": [item]}, auth=("writer", password)
            )
            action = only_object(response, server)["actions"]["upload"]
            put = requests.put(action["href"], data=data, headers=action["header"], timeout=30)
            assert put.status_code == 200, put.text
        x_item = {"oid": sha256(x), "size": len(x)}
        y_item = {"oid": sha256(y), "size": len(y)}
        body = json.dumps({"operation": "download", "objects": [x_item, y_item]}).encode()
        # Controls: alice reads acl/a, and is refused acl/b by its plain name.
        plain_a = server.batch("acl/a", json.loads(body), auth=("alice", password))
        assert [o["oid"] for o in batch_objects_granted(plain_a)] == [x_item["oid"]]
        assert_lfs_error(
            server.batch("acl/b", json.loads(body), auth=("alice", password)), 403, server
        )
        paths = [
            "/acl%2Fb.git",
            "/acl%2fb",
            "//acl/b.git",
            "/%2Facl/b.git",
            "/acl/a/../b.git",
            "/acl/a/%2E%2E/b.git",
            "/acl%2Fa%2F..%2Fb.git",
            "/acl/a.git%2F..%2F..%2Facl%2Fb.git",
            "/acl/a%2F..%2Fb.git",
            "/acl/a/..%2Fb.git",
            "/acl/./b.git",
            "/acl/a%00/../b.git",
        ]
        for path in paths:
            status, headers, raw = raw_request(
                server,
                "POST",
                f"{path}/info/lfs/objects/batch",
                body,
                {**lfs_headers(), **basic("alice", password)},
            )
            if status != 200:
                assert 400 <= status < 500, (path, status, raw[:300])
                assert headers["content-type"].startswith(LFS_MEDIA_TYPE), (path, headers)
                continue
            for obj in granted(status, raw):
                assert obj["oid"] == x_item["oid"], (path, "acl/b's object was granted")
                assert claims_of(bearer(obj["actions"]["download"]))["repo"] == "acl/a"
    finally:
        server.stop()


def batch_objects_granted(response: requests.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text[:300]
    return [obj for obj in response.json()["objects"] if obj.get("actions")]
