"""The LFS API as tests speak it, over real HTTP (requests) or Flask's test client.

What an error answer must be, Basic credentials, and the File Locking API as
one caller. The checks that also need a running server (nothing of it leaks
into a body) are in tests/integration/helpers.py.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import requests
from flask.testing import FlaskClient

from tests.stack import LFS_MEDIA_TYPE, Stack


def lfs_headers() -> dict[str, str]:
    """What git-lfs sends on every API request."""
    return {"Accept": LFS_MEDIA_TYPE, "Content-Type": f"{LFS_MEDIA_TYPE}; charset=utf-8"}


def basic(name: str, secret: str) -> dict[str, str]:
    """The Authorization header of HTTP Basic credentials."""
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{secret}".encode()).decode()}


# ---------------------------------------------------------------- error answers


def assert_lfs_json_error(
    status: int, content_type: str, text: str, expected: int | Iterable[int]
) -> dict[str, Any]:
    """A whole-request error: the status, the LFS media type and a message."""
    allowed = {expected} if isinstance(expected, int) else set(expected)
    assert status in allowed, f"expected {sorted(allowed)}, got {status}: {text[:500]!r}"
    assert content_type.split(";")[0].strip() == LFS_MEDIA_TYPE, content_type
    body = json.loads(text)
    assert isinstance(body, dict), body
    assert isinstance(body.get("message"), str), body
    assert body["message"].strip(), body
    return body


def assert_lfs_error(response: Any, expected: int | Iterable[int]) -> dict[str, Any]:
    """assert_lfs_json_error of a requests or a Flask test client response."""
    text = (
        response.text
        if isinstance(response, requests.Response)
        else response.get_data(as_text=True)
    )
    return assert_lfs_json_error(
        response.status_code, response.headers.get("Content-Type", ""), text, expected
    )


# ---------------------------------------------------------------- the Locking API

Send = Callable[..., Any]  # (method, url, json=, data=, params=) -> response


class LockApi:
    """One repository's locking endpoints as one caller, over `send`."""

    def __init__(self, send: Send, base: str) -> None:
        self.send = send
        self.base = base

    @classmethod
    def over_http(cls, stack: Stack, repo: str, auth: tuple[str, str] | None) -> LockApi:
        """Real requests to a running server, as git-lfs sends them."""
        session = requests.Session()
        session.headers.update(lfs_headers())
        session.auth = auth
        return cls(partial(session.request, timeout=30), f"{stack.lfs_base(repo)}/locks")

    @classmethod
    def over_flask(cls, client: FlaskClient, repo: str, auth: tuple[str, str] | None) -> LockApi:
        """The app through Flask's test client (no nginx)."""
        headers = {"Accept": LFS_MEDIA_TYPE, **(basic(*auth) if auth else {})}

        def send(method: str, url: str, json: Any = None, data: Any = None, params: Any = None):
            content_type = LFS_MEDIA_TYPE if data is not None else None
            return client.open(
                url,
                method=method,
                json=json,
                data=data,
                query_string=params,
                headers=headers,
                content_type=content_type,
            )

        return cls(send, f"/{repo}.git/info/lfs/locks")

    def post(self, suffix: str, body: Any = None, raw: str | None = None) -> Any:
        """POST `body` as JSON, or `raw` text as it is."""
        if raw is not None:
            return self.send("POST", self.base + suffix, data=raw)
        return self.send("POST", self.base + suffix, json=body)

    def create(self, path: Any, **extra: Any) -> Any:
        return self.post("", {"path": path, **extra})

    def list(self, **query: Any) -> Any:
        return self.send("GET", self.base, params=query)

    def verify(self, **body: Any) -> Any:
        return self.post("/verify", body)

    def unlock(self, lock_id: str, **body: Any) -> Any:
        return self.post(f"/{lock_id}/unlock", body)
