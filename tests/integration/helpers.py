"""Shared helpers of the integration tests: LFS assertions, tokens, raw HTTP, web sign-in."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jwt
import requests

from tests import lfsapi
from tests.lfsapi import lfs_headers as lfs_headers  # integration tests import it from here
from tests.stack import LFS_MEDIA_TYPE, Stack
from tests.waiting import wait_until as wait_until  # integration tests import it from here

# Text that must never reach a client: server-side tracebacks, HTML error
# pages, Python internals, or paths of the server's own files. (Each marker
# holds a character or length that base64url tokens in a body cannot match.)
LEAK_MARKERS = (
    "Traceback",
    "<html",
    "<!doctype",
    "<title>",
    'File "',
    "site-packages",
    "werkzeug",
    "gunicorn",
    '.py"',
    "/work/",
    "/usr/",
    "secret.key",
)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def media_type(response: requests.Response | http.client.HTTPResponse) -> str:
    value = response.headers.get("Content-Type", "") or ""
    return value.split(";")[0].strip().lower()


def assert_no_leak(text: str, stack: Stack) -> None:
    """No traceback, HTML page or server-side path in a body."""
    lowered = text.lower()
    for marker in LEAK_MARKERS:
        assert marker.lower() not in lowered, f"{marker!r} leaked in {text[:500]!r}"
    for path in (stack.root, stack.data_dir, stack.data_dir.resolve()):
        assert str(path) not in text, f"server path leaked in {text[:500]!r}"


def assert_lfs_error(
    response: requests.Response, status: int | Iterable[int], stack: Stack
) -> dict[str, Any]:
    """A whole-request error (status, LFS media type, a message) that leaks nothing."""
    body = lfsapi.assert_lfs_error(response, status)
    assert_no_leak(response.text, stack)
    return body


def batch_objects(response: requests.Response, stack: Stack) -> list[dict[str, Any]]:
    """The objects of a successful batch answer, checked for its shape."""
    assert response.status_code == 200, response.text[:500]
    assert media_type(response) == LFS_MEDIA_TYPE, response.headers.get("Content-Type")
    assert_no_leak(response.text, stack)
    body = response.json()
    assert body.get("transfer", "basic") == "basic", body
    objects = body["objects"]
    assert isinstance(objects, list), body
    return objects


def only_object(response: requests.Response, stack: Stack) -> dict[str, Any]:
    objects = batch_objects(response, stack)
    assert len(objects) == 1, objects
    return objects[0]


def assert_object_error(obj: dict[str, Any], code: int) -> None:
    """A per-object error with `code`, a message and no actions."""
    assert "actions" not in obj, obj
    error = obj.get("error")
    assert isinstance(error, dict), obj
    assert error.get("code") == code, obj
    assert type(error["code"]) is int, obj
    assert isinstance(error.get("message"), str), obj
    assert error["message"].strip(), obj


def batch_for(
    stack: Stack, repo: str, operation: str, data: bytes, **kwargs: Any
) -> requests.Response:
    """The batch request for one object of `data` (`kwargs` such as auth go to requests)."""
    body = {"operation": operation, "objects": [{"oid": sha256(data), "size": len(data)}]}
    return stack.batch(repo, body, **kwargs)


def actions_for(
    stack: Stack, repo: str, operation: str, data: bytes, **kwargs: Any
) -> dict[str, Any]:
    """The actions a batch grants for one object of `data` (must have actions)."""
    obj = only_object(batch_for(stack, repo, operation, data, **kwargs), stack)
    assert obj["oid"] == sha256(data), obj
    assert "error" not in obj, obj
    assert "actions" in obj, obj
    return obj["actions"]


def put_action(action: dict[str, Any], data: bytes, **headers: str) -> requests.Response:
    return requests.put(
        action["href"], data=data, headers={**action["header"], **headers}, timeout=60
    )


def upload(stack: Stack, repo: str, data: bytes, **kwargs: Any) -> None:
    """Store `data` in `repo` through batch, PUT and (when offered) verify, as the client does."""
    put_and_verify(actions_for(stack, repo, "upload", data, **kwargs), data)


def put_and_verify(actions: dict[str, Any], data: bytes) -> None:
    """The PUT and (when offered) verify steps of an upload batch's `actions`, as the client takes them."""
    response = put_action(actions["upload"], data)
    assert response.status_code == 200, response.text[:500]
    verify = actions.get("verify")
    if verify is None:
        return
    response = requests.post(
        verify["href"],
        json={"oid": sha256(data), "size": len(data)},
        headers={**verify["header"], "Content-Type": LFS_MEDIA_TYPE},
        timeout=30,
    )
    assert response.status_code == 200, response.text[:500]


def verify_action(stack: Stack, upload: dict[str, Any]) -> dict[str, Any]:
    """The verify action for an upload through the server, which batch answers no
    longer offer (the PUT commits): the upload's own token with op `verify`, as
    the server would mint it, and the server's verify href. The endpoint still
    answers such tokens (clients holding older answers, direct S3 uploads)."""
    token = forge(stack, bearer(upload), op="verify")
    base = upload["href"].partition("/.lfs/upload/")[0]
    return {"href": f"{base}/.lfs/verify", "header": {"Authorization": f"Bearer {token}"}}


def download_action(stack: Stack, repo: str, data: bytes, **kwargs: Any) -> dict[str, Any]:
    return actions_for(stack, repo, "download", data, **kwargs)["download"]


def stored_copies(stack: Stack, oid: str) -> list[Path] | list[str]:
    """Every file named `oid` under the object store (any repository), or
    every key naming it in the stack's bucket."""
    if stack.bucket is not None:
        return stack.bucket.keys_named(oid)
    return sorted((stack.data_dir / "objects").rglob(oid))


# ---------------------------------------------------------------- tokens


def bearer(action: dict[str, Any]) -> str:
    value = action["header"]["Authorization"]
    scheme, _, token = value.partition(" ")
    assert scheme == "Bearer", value
    return token


def claims_of(token: str) -> dict[str, Any]:
    """The payload of a token, unverified (what the server signed)."""
    return jwt.decode(token, options={"verify_signature": False})


def secret_key(stack: Stack) -> bytes:
    return (stack.data_dir / "secret.key").read_text().strip().encode()


def forge(
    stack: Stack,
    template: str,
    key: bytes | None = None,
    algorithm: str = "HS256",
    **changes: Any,
) -> str:
    """A token like `template` with its claims changed, signed with `key`
    (the server's own key by default) and the template's key id."""
    claims = {**claims_of(template), **changes}
    claims = {name: value for name, value in claims.items() if value is not None}
    kid = jwt.get_unverified_header(template)["kid"]
    return jwt.encode(claims, key or secret_key(stack), algorithm=algorithm, headers={"kid": kid})


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(template: str, **changes: Any) -> str:
    """`alg: none` version of a token: no signature at all."""
    header = {**jwt.get_unverified_header(template), "alg": "none"}
    claims = {**claims_of(template), **changes}
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}."


def tamper(token: str, **changes: Any) -> str:
    """The token with its payload changed but the original signature kept."""
    header, _, rest = token.partition(".")
    _, _, signature = rest.partition(".")
    claims = {**claims_of(token), **changes}
    return f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"


# ---------------------------------------------------------------- raw HTTP


def raw_request(
    stack: Stack,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request with the path sent byte for byte (no client normalisation)."""
    connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=30)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            connection.putheader(name, value)
        connection.endheaders(body or None)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def raw_exchange(stack: Stack, request: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes or `timeout` of silence."""
    with socket.create_connection(("127.0.0.1", stack.port), timeout=timeout) as sock:
        sock.sendall(request)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return received


def parse_raw_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, lower-cased headers and body of one raw HTTP/1.x response."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    match = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
    assert match, data[:300]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(match.group(1)), headers, body


def send_upload_head(
    stack: Stack, oid: str, token: str, length: int, extra: str = ""
) -> socket.socket:
    """A socket that has sent an upload's request head, none of its body."""
    sock = socket.create_connection(("127.0.0.1", stack.port), timeout=10)
    sock.sendall(
        (
            f"PUT /.lfs/upload/{oid} HTTP/1.1\r\nHost: 127.0.0.1:{stack.port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {length}\r\n{extra}\r\n"
        ).encode()
    )
    return sock


def read_response_head(sock: socket.socket, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """One response read from a raw socket whose request may be unfinished
    (the caller has not sent the body): a timeout here means no answer."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    status, headers, body = parse_raw_response(data)
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def assert_raw_lfs_error(
    status: int, headers: dict[str, str], body: bytes, expected: int | Iterable[int], stack: Stack
) -> dict[str, Any]:
    """assert_lfs_error of a raw response (lower-cased header names)."""
    text = body.decode("utf-8", "replace")
    parsed = lfsapi.assert_lfs_json_error(status, headers.get("content-type", ""), text, expected)
    assert_no_leak(text, stack)
    return parsed


# ---------------------------------------------------------------- web pages

UI = "/.lfs/ui"
_CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: str) -> str:
    """The CSRF token a page's form carries."""
    match = _CSRF_RE.search(page)
    assert match, page[:500]
    return match.group(1)


def web_sign_in(
    stack: Stack, name: str, password: str, session: requests.Session | None = None
) -> requests.Session:
    """Sign in on the web pages through the sign-in form (in `session`, or a new one)."""
    session = session or requests.Session()
    form = session.get(f"{stack.url}{UI}/signin", timeout=30).text
    done = session.post(
        f"{stack.url}{UI}/signin",
        data={"csrf": csrf_of(form), "name": name, "password": password},
        allow_redirects=False,
        timeout=30,
    )
    assert done.status_code == 303, done.text[:500]
    return session


def web_signed_in(stack: Stack, session: requests.Session) -> bool:
    """Whether `session` is signed in: the tokens page answers, not a redirect to sign in."""
    page = session.get(f"{stack.url}{UI}/tokens", allow_redirects=False, timeout=30)
    assert page.status_code in (200, 303), page.status_code
    return page.status_code == 200


# ---------------------------------------------------------------- access log

_LOG_RE = re.compile(r'"(?P<method>[A-Z]+) (?P<uri>\S+) HTTP/[\d.]+" (?P<status>\d{3}) ')


def access_log(stack: Stack, since: int = 0) -> list[tuple[str, str, int]]:
    """(method, uri, status) of the requests nginx logged after byte `since`."""
    with open(stack.log, "rb") as log:
        log.seek(since)
        text = log.read().decode("utf-8", "replace")
    entries = []
    for line in text.splitlines():
        match = _LOG_RE.search(line)
        if match:
            entries.append((match["method"], match["uri"], int(match["status"])))
    return entries


def log_size(stack: Stack) -> int:
    return os.path.getsize(stack.log)
