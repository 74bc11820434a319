"""JSON request bodies: the media type every public POST must carry, and reading them.

A page on another site can make the browser POST here with the credentials
it has cached for this server, but without a CORS preflight (which this
server never grants) only as a form or a no-cors fetch: `text/plain`,
`application/x-www-form-urlencoded`, `multipart/form-data` or no type at
all. Refusing every public POST that is not declared JSON, before any
handler runs, makes such requests inert: they cannot create, verify or
force-unlock locks, or ask for transfers. git-lfs sends its media type on
every POST.

The web pages (lfs_server/web, under WEB_PREFIX) are the exception: their
forms are meant to be posted, as application/x-www-form-urlencoded, and each
carries a CSRF token that a page on another site cannot know. Every other
route, including any added later, stays under the JSON rule.
"""

from __future__ import annotations

from typing import Any

from flask import request

from lfs_server.errors import LFS_MEDIA_TYPE, LFSError

JSON_MEDIA_TYPES = (LFS_MEDIA_TYPE, "application/json")
# nginx's own calls to the app (upload commit): never reachable from outside.
INTERNAL_PREFIX = "/.lfs-internal/"
# The web pages' blueprint (see lfs_server/web): CSRF tokens instead.
WEB_BLUEPRINT = "web"


def require_json_post() -> None:
    """before_request: 415 for an API POST whose Content-Type is not JSON.

    The type is compared case-insensitively and without its parameters
    (`; charset=utf-8`). Requests nothing routes keep their 404 or 405.
    """
    if request.method != "POST" or request.url_rule is None:
        return
    if request.path.startswith(INTERNAL_PREFIX) or request.blueprint == WEB_BLUEPRINT:
        return
    if request.mimetype not in JSON_MEDIA_TYPES:
        raise LFSError(415, f"Content-Type must be {' or '.join(JSON_MEDIA_TYPES)}")


def read_json_object(message: str = "request body must be a JSON object") -> dict[str, Any]:
    """The body as a JSON object, or 422 with `message`."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise LFSError(422, message)
    return body
