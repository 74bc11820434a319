"""The store interface: what the HTTP layer, fsck and the upgrade ask of a backend.

A store holds objects by oid alone (content-addressed, once per oid); which
repositories may see an oid is the object index's business (index.py, rows
in the database), never the store's. A backend decides how bytes move: the
actions a batch answer offers for an object, where nginx fetches a
download from, how a verified upload is put in place. The local store
(local.py) and an S3 backend implement the same few methods; checks that do
not depend on the backend (the upload's size and SHA-256, verify.py) wrap
around them, as in rudolfs' small `Storage` trait with its wrappers.
"""

from __future__ import annotations

import errno
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from lfs_server.times import rfc3339

_OID_RE = re.compile(r"[0-9a-f]{64}")
# This server's transfer endpoints; a path ending in / takes the oid.
OWN_PATHS = {"upload": "/.lfs/upload/", "verify": "/.lfs/verify", "download": "/.lfs/download/"}
# What a client hears when the store has no room for an object.
INSUFFICIENT_STORAGE = "insufficient storage on the server: the disk is full"
# Kept free for what else lives on the data filesystem: fan-out folders,
# the database and its WAL. Uploads that would eat into it are refused (507).
RESERVED_BYTES = 1 << 20

Action = dict[str, Any]


def is_valid_oid(oid: object) -> bool:
    """An oid is exactly 64 lowercase hex characters: the only thing that nears a path."""
    return isinstance(oid, str) and _OID_RE.fullmatch(oid) is not None


class CommitError(Exception):
    """An upload could not become an object; `status` is the HTTP answer.

    `reason` is "size" or "sha256" when the data did not match (a verify
    failure, counted in the metrics), empty for other failures.
    """

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason


def storage_failure(exc: OSError) -> CommitError:
    """What the client hears of a failed write: 507 for a full disk or quota, else 500.

    The cause (errno, paths) belongs in the server log, never in the answer.
    """
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return CommitError(507, "insufficient storage on the server")
    return CommitError(500, "could not store the object")


class Links:
    """The hrefs of one batch answer, all expiring together.

    `ours` is an action on this server (`/.lfs/upload/<oid>`, `/.lfs/verify`,
    `/.lfs/download/<oid>`) carrying a signed Bearer token; `external` wraps
    a backend's own URL (a presigned bucket URL) with its headers.
    """

    def __init__(
        self, base_url: str, sign: Callable[[str, str, int], str], ttl: int, expires_at: int
    ) -> None:
        self.base_url = base_url
        self.sign = sign
        self.ttl = ttl
        self.expires_at = expires_at
        self.expires_at_text = rfc3339(expires_at)

    def href(self, op: str, oid: str) -> str:
        path = OWN_PATHS[op]
        return f"{self.base_url}{path}{oid}" if path.endswith("/") else f"{self.base_url}{path}"

    def ours(self, op: str, oid: str, size: int) -> Action:
        header = {"Authorization": f"Bearer {self.sign(op, oid, size)}"}
        return self.external(self.href(op, oid), header)

    def external(self, href: str, header: dict[str, str], expires_at: int | None = None) -> Action:
        """`expires_at` (Unix time) for a URL that expires on its own clock (a
        reused presigned URL), stated as is and, in `expires_in`, as the whole
        seconds surely left of it; otherwise the batch's expiry."""
        if expires_at is None:
            expires_in, expires_text = self.ttl, self.expires_at_text
        else:
            expires_in = max(0, expires_at - math.ceil(time.time()))
            expires_text = rfc3339(expires_at)
        return {
            "href": href,
            "header": header,
            "expires_in": expires_in,
            "expires_at": expires_text,
        }


def upload_through_server(links: Links, oid: str, size: int) -> dict[str, Action]:
    """The body goes to nginx, which the server verifies before the store takes it.

    No verify action: the PUT is answered 200 only once the object is
    verified, durable and the repository's, so a verify call could only
    repeat that answer (git-lfs makes one only when the batch offers it).
    """
    return {"upload": links.ours("upload", oid, size)}


def upload_room(upload_tmp_dir: Path) -> int | None:
    """Bytes nginx may still write to the upload temp dir, less the reserve;
    None when it cannot be asked, 0 when no inode is left."""
    try:
        info = os.statvfs(upload_tmp_dir)
    except OSError:
        return None
    if info.f_files and not info.f_favail:  # f_files is 0 where inodes are unlimited
        return 0  # no inode left: not even an empty object can be stored
    return max(0, info.f_bavail * info.f_frsize - RESERVED_BYTES)


@dataclass(frozen=True)
class VerifiedUpload:
    """An upload whose size and SHA-256 match its oid, open.

    `file` is the descriptor that was checked: a backend stores those bytes
    (the local store links that very inode), never whatever `path` names now.
    Its position is where the check left it (the end): read from offset 0.
    `synced` tells whether its data is fsynced already; if not, a backend
    that keeps this file must fsync it before put() returns.
    """

    oid: str
    size: int
    path: Path
    file: BinaryIO
    synced: bool = True


@dataclass(frozen=True)
class StoredItem:
    """One thing found in the store by `scan()`.

    `key` says where it is (a path under the store's root, a bucket key);
    `oid` is the oid its place names, or None when it does not belong there
    (`unexpected` then says why). `version` tells whether it was replaced
    since the scan (the local store: device and inode).
    """

    key: str
    oid: str | None
    size: int
    unexpected: str = ""
    version: str = ""


class ObjectStore(Protocol):
    """A backend: objects by oid, written once, never changed."""

    # True when downloads go through this server's own /.lfs/download href:
    # the batch then writes those answers out as text (its hot path).
    downloads_through_server: bool
    # True when clients may upload to the backend itself (presigned URLs):
    # the verify call then checks those bytes and commits them (take_direct).
    takes_direct_uploads: bool
    # True when put() keeps the verified temp file itself as the object (the
    # local store links it): only then must its data reach the disk. A
    # backend that sends the bytes elsewhere (S3) is durable once that
    # elsewhere acknowledged them, and the temp file is gone right after.
    keeps_upload_file: bool

    def upload_actions(self, links: Links, oid: str, size: int) -> dict[str, Action]:
        """The actions a batch answer offers to upload `oid`: upload, and verify
        where the upload does not reach this server (a presigned bucket URL)."""

    def download_action(self, links: Links, oid: str, size: int) -> Action:
        """The action a batch answer offers to download `oid`."""

    def put(self, upload: VerifiedUpload) -> bool:
        """Make a verified upload the object `upload.oid`, durably and atomically.

        Returns only once the object is durable (the index row follows).
        Storing an oid that exists already succeeds without change (first
        writer wins). True when this call stored it, False when it existed.
        Raises CommitError (the cause logged) when the backend fails.
        """

    def take_direct(self, oid: str, size: int, verify_token: str) -> bool:
        """Check and commit bytes a client uploaded to the backend itself.

        `verify_token` is the signed verify token of that upload, which
        names where its bytes went. Returns only once the object is durable
        under its oid; True when this call stored it, False when it existed.
        Raises CommitError (404 when nothing was uploaded, 422 when the bytes
        do not match) and leaves nothing visible.
        """

    def internal_uri(self, oid: str) -> str:
        """Where nginx fetches the object's bytes from (the X-Accel-Redirect target)."""

    def size(self, oid: str) -> int | None:
        """Size of the stored object, or None. Never asked per object of a batch."""

    def scan(self) -> Iterator[StoredItem]:
        """Everything in the store; objects (oid not None) in ascending oid order."""

    def hash_object(self, item: StoredItem, on_bytes: Callable[[int], None]) -> str:
        """SHA-256 (hex) of a scanned object's bytes, calling `on_bytes` as they are read.

        Raises FileNotFoundError when it is gone, another OSError when it
        cannot be read.
        """

    def quarantine(self, item: StoredItem, stamp: str) -> str:
        """Move a scanned item aside, never deleting a byte; says where it went.

        Raises OSError when it cannot, also when the item was replaced since
        the scan (its `version` changed).
        """

    def health(self) -> dict[str, str]:
        """Checks by name, each "ok" or a short reason; they must write nothing."""

    def free_space(self) -> int | None:
        """Bytes new uploads may still fill, or None when the backend cannot tell."""
