"""The Batch API: which objects to send or fetch, and where.

The object index answers what the repository holds (one query per batch);
the store composes the actions for each object (its own hrefs, or a
bucket's presigned URLs).
"""

from __future__ import annotations

import json
import time
from typing import Any

from flask import Blueprint, Response

from lfs_server.auth import Caller, require
from lfs_server.errors import LFS_MEDIA_TYPE, LFSError
from lfs_server.jsonbody import read_json_object
from lfs_server.repos import repo_from_path
from lfs_server.services import services
from lfs_server.store import INSUFFICIENT_STORAGE, Action, Links, ObjectStore, is_valid_oid
from lfs_server.turns import ANSWERS

MAX_OBJECTS = 1000
OPERATION_RIGHTS = {"upload": "write", "download": "read"}

bp = Blueprint("batch", __name__)


@bp.post("/<path:repo_path>/info/lfs/objects/batch")
def batch(repo_path: str) -> Response:
    repo = repo_from_path(repo_path)
    body = read_json_object()
    operation = body.get("operation")
    if not isinstance(operation, str) or operation not in OPERATION_RIGHTS:
        raise LFSError(422, "operation must be 'upload' or 'download'")
    caller = require(repo, OPERATION_RIGHTS[operation])
    objects = _parse_objects(body.get("objects"))
    transfers = body.get("transfers")
    if transfers is not None and (not isinstance(transfers, list) or "basic" not in transfers):
        raise LFSError(422, "only the 'basic' transfer adapter is supported")
    if not isinstance(body.get("ref"), (dict, type(None))):
        raise LFSError(422, "ref must be an object")
    hash_algo = body.get("hash_algo", "sha256")

    first: dict[str, int] = {}  # each oid once, as first sent
    for oid, size in objects:
        first.setdefault(oid, size)
    if hash_algo != "sha256":
        message = "unsupported hash algorithm; use sha256"
        answered = [_json(_error(oid, size, 409, message)) for oid, size in first.items()]
    else:
        builder = _ActionBuilder(repo, caller, operation, list(first))
        with ANSWERS.turn():
            answered = [builder.answer(oid, size) for oid, size in first.items()]
    # The answer is assembled as text: each object is already JSON (see answer()).
    body = f'{{"transfer":"basic","objects":[{",".join(answered)}],"hash_algo":"sha256"}}'
    return Response(body, mimetype=LFS_MEDIA_TYPE)


def _parse_objects(objects: Any) -> list[tuple[str, int]]:
    if not isinstance(objects, list):
        raise LFSError(422, "objects must be a list")
    if len(objects) > MAX_OBJECTS:
        raise LFSError(413, f"too many objects in one batch: at most {MAX_OBJECTS}")
    parsed = []
    for item in objects:
        if not isinstance(item, dict):
            raise LFSError(422, "each object must be a JSON object with oid and size")
        oid, size = item.get("oid"), item.get("size")
        if not isinstance(oid, str):
            raise LFSError(422, "each object needs an oid string")
        if not isinstance(size, int) or isinstance(size, bool):
            raise LFSError(422, f"object {oid[:64]!r}: size must be an integer")
        parsed.append((oid, size))
    return parsed


_ACTION_KEYS = {"href", "header", "expires_in", "expires_at"}
# One encoder for every answer: json.dumps with separators makes a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _json(value: Any) -> str:
    return _ENCODER.encode(value)


def _action_json(action: Action) -> str:
    """An action as JSON text, as _json writes it. The four fields Links
    writes are encoded one by one, which takes a third of the time of
    encoding the dict: a direct-mode download batch encodes one per object."""
    if action.keys() != _ACTION_KEYS:
        return _json(action)
    header = action["header"]
    return (
        f'{{"href":{_json(action["href"])},"header":{_json(header) if header else "{}"},'
        f'"expires_in":{action["expires_in"]:d},"expires_at":{_json(action["expires_at"])}}}'
    )


def _error(oid: str, size: int, code: int, message: str) -> dict[str, Any]:
    return {"oid": oid, "size": size, "error": {"code": code, "message": message}}


class _ActionBuilder:
    """Answers one object of a batch: an error, nothing to do, or the store's actions.

    What the repository holds comes from the object index in one query for
    the whole batch, before any object is answered; the store itself is
    never asked per object.
    """

    def __init__(self, repo: str, caller: Caller, operation: str, oids: list[str]) -> None:
        app = services()
        settings = app.settings
        self.operation = operation
        self.store: ObjectStore = app.store
        self.max_size: int = settings.max_object_size
        self.ttl: int = settings.token_ttl
        expires_at = int(time.time()) + self.ttl
        self.tokens = app.signer.for_batch(repo, caller.name, caller.uid, caller.right, expires_at)
        self.links = Links(settings.public_url, self.tokens.sign, self.ttl, expires_at)
        self.stored = app.objects.sizes(repo, [oid for oid in oids if is_valid_oid(oid)])
        # `"<base>/.lfs/download/` as a JSON string opening, escaped once.
        self.download_href = _json(self.links.href("download", ""))[:-1]
        self.fast_downloads = self.store.downloads_through_server
        self.room: int | None = None  # free bytes left for this batch's uploads
        self.room_known = False

    def reserve_room(self, size: int) -> bool:
        """Whether the store's free space still holds `size` more bytes.

        Asked (one statvfs) only when a batch has something to upload; each
        object granted an upload counts against the rest of the batch, so the
        client learns in the batch answer which objects cannot be stored,
        instead of from a failed transfer.
        """
        if not self.room_known:
            self.room = self.store.free_space()
            self.room_known = True
        if self.room is None:
            return True
        if size > self.room:
            return False
        self.room -= size
        return True

    def answer(self, oid: str, size: int) -> str:
        """One object of the answer, as JSON text."""
        if not is_valid_oid(oid):
            return _json(
                _error(oid, size, 422, "invalid oid: expected 64 lowercase hex characters")
            )
        if size < 0:
            return _json(_error(oid, size, 422, "invalid size: must not be negative"))
        stored = self.stored.get(oid)
        if stored is not None and stored != size:
            return _json(
                _error(oid, size, 422, f"size mismatch: the stored object has {stored} bytes")
            )
        if self.operation == "download":
            if stored is None:
                return _json(_error(oid, size, 404, "object does not exist"))
            return self.download(oid, size)
        return _json(self.upload(oid, size, stored))

    def download(self, oid: str, size: int) -> str:
        """The hot path (every object of every fetch), written out directly when
        the download goes through this server: the oid is validated hex, the
        size an int, the token base64url."""
        if not self.fast_downloads:
            action = _action_json(self.store.download_action(self.links, oid, size))
            return (
                f'{{"oid":"{oid}","size":{size:d},"authenticated":true,'
                f'"actions":{{"download":{action}}}}}'
            )
        token = self.tokens.sign("download", oid, size)
        return (
            f'{{"oid":"{oid}","size":{size:d},"authenticated":true,"actions":{{"download":'
            f'{{"href":{self.download_href}{oid}","header":{{"Authorization":"Bearer {token}"}},'
            f'"expires_in":{self.ttl:d},"expires_at":"{self.links.expires_at_text}"}}}}}}'
        )

    def upload(self, oid: str, size: int, stored: int | None) -> dict[str, Any]:
        if stored is not None:
            return {"oid": oid, "size": size}
        if size > self.max_size:
            return _error(oid, size, 422, f"object too large: the limit is {self.max_size} bytes")
        if not self.reserve_room(size):
            return _error(oid, size, 507, INSUFFICIENT_STORAGE)
        actions = self.store.upload_actions(self.links, oid, size)
        return {"oid": oid, "size": size, "authenticated": True, "actions": actions}
