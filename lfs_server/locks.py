"""The File Locking API, per repository, under the repo's LFS base URL.

    POST <repo>/info/lfs/locks               create      needs write   201 / 409
    GET  <repo>/info/lfs/locks               list        needs read    200
    POST <repo>/info/lfs/locks/verify        ours/theirs needs write   200
    POST <repo>/info/lfs/locks/<id>/unlock   unlock      needs write   200 / 403 / 404
                                             (someone else's lock: `force` and admin)

Locks belong to one repository (`team/proj` and `team/proj.git` are one
repository; `other/proj` sees none of them) and are unique per path: a second
lock on a path answers 409 with the existing lock. The owner is the
authenticated user, or ANONYMOUS for anonymous writers where LFS_ANONYMOUS
allows writing. Ownership ("ours", unlocking without force) follows the
owner's identity (uid), not the name shown: a user removed and added again
under the same name does not own the old user's locks. Paths are stored and returned exactly as sent, after
refusing (422) anything that is not a plain repository-relative path: empty,
absolute (`/x`, `\\x`, `C:x`), with a `..` segment, with empty or `.`
segments (`a//b`, `a/./b`, `dir/`: one file must have one spelling), with
control characters, or longer than MAX_PATH_LENGTH.

Pages: a list or verify answers at most DEFAULT_LIMIT (100) locks unless the
client asks for `limit`; a limit above MAX_LIMIT (1000) is served as
MAX_LIMIT. Locks come in creation order; the cursor is opaque to clients
(it is the last lock's sequence number, which is never reused), so every
lock present for the whole walk appears exactly once even when others are
deleted between pages. The last page has no `next_cursor`. Empty query
parameters (`?path=&cursor=`) count as not given.

`ref` (create, verify, unlock) and `refspec` (list) are accepted and
ignored: a lock covers its path on every branch.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

from flask import Blueprint, Response, request

from lfs_server.access import level
from lfs_server.auth import Caller, require
from lfs_server.db import Database, DatabaseError, Lock
from lfs_server.errors import LFSError, lfs_json
from lfs_server.jsonbody import read_json_object
from lfs_server.repos import repo_from_path
from lfs_server.services import services
from lfs_server.times import rfc3339

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_PATH_LENGTH = 4096
BASE = "/<path:repo_path>/info/lfs/locks"

_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")  # JSON can carry them; UTF-8 (the database) cannot
_CURSOR_RE = re.compile(r"[0-9]{1,18}")
_LIMIT_RE = re.compile(r"[0-9]{1,9}")

bp = Blueprint("locks", __name__)


def _db() -> Database:
    return services().db


def new_lock_id() -> str:
    """128 random bits in hex: URL-safe, and never mistaken for a CLI option."""
    return secrets.token_hex(16)


def lock_json(lock: Lock) -> dict[str, Any]:
    return {
        "id": lock.id,
        "path": lock.path,
        "locked_at": rfc3339(lock.locked_at),
        "owner": {"name": lock.owner},
    }


def check_lock_path(path: Any) -> str:
    """The path unchanged when it is a plain repository-relative path; else 422."""
    if path is None:
        raise LFSError(422, "path is required")
    if not isinstance(path, str):
        raise LFSError(422, "path must be a string")
    if not path:
        raise LFSError(422, "path must not be empty")
    if len(path) > MAX_PATH_LENGTH:
        raise LFSError(422, f"path is too long: at most {MAX_PATH_LENGTH} characters")
    if _CONTROL_RE.search(path):
        raise LFSError(422, "path must not contain control characters")
    if _SURROGATE_RE.search(path):
        raise LFSError(422, "path must be valid Unicode: no unpaired surrogates")
    if path.startswith(("/", "\\")) or _DRIVE_RE.match(path):
        raise LFSError(422, "path must be relative to the repository root, not absolute")
    if ".." in re.split(r"[/\\]", path):
        raise LFSError(422, "path must not contain a '..' segment")
    if any(segment in ("", ".") for segment in path.split("/")):
        raise LFSError(422, "path must not contain empty or '.' segments (nor end with /)")
    return path


def _json_body() -> dict[str, Any]:
    """The request's JSON object; an empty body counts as {}."""
    if not request.get_data(cache=True).strip():
        return {}
    body = read_json_object()
    ref = body.get("ref")
    if ref is not None and not (isinstance(ref, dict) and isinstance(ref.get("name", ""), str)):
        raise LFSError(422, "ref must be an object with a string name")
    return body


def _cursor(raw: Any) -> int:
    """Opaque to clients: the sequence number of the last lock already sent."""
    if raw is None or raw == "":
        return 0
    if not isinstance(raw, str) or not _CURSOR_RE.fullmatch(raw):
        raise LFSError(422, "invalid cursor: pass back a next_cursor exactly as received")
    return int(raw)


def _limit(raw: Any, from_query: bool) -> int:
    if raw is None or (from_query and raw == ""):
        return DEFAULT_LIMIT
    if from_query:
        value = int(raw) if _LIMIT_RE.fullmatch(raw) else 0
    elif isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    else:
        value = 0
    if value < 1:
        raise LFSError(422, "limit must be a positive integer")
    return min(value, MAX_LIMIT)


def _page(
    repo: str, cursor: int, limit: int, **filters: str | None
) -> tuple[list[Lock], str | None]:
    """One page of locks and the cursor of the next page (None on the last)."""
    rows = _db().list_locks(repo, after_seq=cursor, limit=limit + 1, **filters)
    if len(rows) > limit:
        return rows[:limit], str(rows[limit - 1].seq)
    return rows, None


@bp.post(BASE)
def create(repo_path: str) -> Response:
    repo = repo_from_path(repo_path)
    caller = require(repo, "write")
    path = check_lock_path(_json_body().get("path"))
    try:
        lock, created = _db().create_lock(
            new_lock_id(), repo, path, caller.name, int(time.time()), owner_uid=caller.uid
        )
    except DatabaseError:  # the path was locked and unlocked again and again meanwhile
        raise LFSError(429, "the path is busy: try again", {"Retry-After": "1"}) from None
    if not created:
        message = f"{path} is already locked by {lock.owner}"
        return lfs_json({"lock": lock_json(lock), "message": message}, 409)
    return lfs_json({"lock": lock_json(lock)}, 201)


@bp.get(BASE)
def list_locks(repo_path: str) -> Response:
    repo = repo_from_path(repo_path)
    require(repo, "read")
    args = request.args
    locks, next_cursor = _page(
        repo,
        _cursor(args.get("cursor")),
        _limit(args.get("limit"), from_query=True),
        path=args.get("path") or None,
        lock_id=args.get("id") or None,
    )
    body: dict[str, Any] = {"locks": [lock_json(lock) for lock in locks]}
    if next_cursor is not None:
        body["next_cursor"] = next_cursor
    return lfs_json(body)


@bp.post(f"{BASE}/verify")
def verify(repo_path: str) -> Response:
    repo = repo_from_path(repo_path)
    caller = require(repo, "write")
    body = _json_body()
    locks, next_cursor = _page(
        repo, _cursor(body.get("cursor")), _limit(body.get("limit"), from_query=False)
    )
    answer: dict[str, Any] = {
        "ours": [lock_json(lock) for lock in locks if lock.owner_uid == caller.uid],
        "theirs": [lock_json(lock) for lock in locks if lock.owner_uid != caller.uid],
    }
    if next_cursor is not None:
        answer["next_cursor"] = next_cursor
    return lfs_json(answer)


@bp.post(f"{BASE}/<lock_id>/unlock")
def unlock(repo_path: str, lock_id: str) -> Response:
    repo = repo_from_path(repo_path)
    caller = require(repo, "write")
    force = _json_body().get("force", False)
    if not isinstance(force, bool):
        raise LFSError(422, "force must be true or false")
    return lfs_json({"lock": lock_json(release(repo, lock_id, caller, force))})


def release(repo: str, lock_id: str, caller: Caller, force: bool) -> Lock:
    """Delete a lock under the API's rules (the web pages use them too): the
    owner may; anyone else only with `force` and the admin right; else LFSError."""
    lock = _db().get_lock(repo, lock_id)
    if lock is None:
        raise LFSError(404, f"no lock {lock_id} in {repo}")
    if lock.owner_uid != caller.uid:
        if not force:
            holder = (
                f"a former user named {lock.owner}" if lock.owner == caller.name else lock.owner
            )
            raise LFSError(
                403, f"{lock.path} is locked by {holder}; only an admin may force it open"
            )
        if level(caller.right) < level("admin"):
            raise LFSError(
                403, f"{caller.name} may not force-unlock others' locks: needs admin on {repo}"
            )
    removed = _db().delete_lock(repo, lock_id)
    if removed is None:
        raise LFSError(404, f"no lock {lock_id} in {repo}")
    return removed
