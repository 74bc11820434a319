"""The store interface the HTTP layer talks to.

The batch and transfer code ask a store what exists and hand it finished
uploads; they never build a filesystem path. Another backend (say one that
speaks S3) slots in by implementing the same few methods.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

_OID_RE = re.compile(r"[0-9a-f]{64}")
# What a client hears when the store has no room for an object.
INSUFFICIENT_STORAGE = "insufficient storage on the server: the disk is full"


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


class ObjectStore(Protocol):
    def size(self, repo: str, oid: str) -> int | None:
        """Size of a stored object, or None when the repository lacks it."""

    def commit(self, repo: str, oid: str, size: int, upload: Path) -> bool:
        """Check an uploaded temp file and make it the object, atomically.

        Raises CommitError when the size or hash is wrong or storage fails;
        the object is then not visible. Committing an oid that already exists
        succeeds without change (first verified writer wins). True when this
        call stored the object, False when it already existed.
        """

    def internal_uri(self, repo: str, oid: str) -> str:
        """The internal nginx URI that serves the object's bytes."""

    def health(self) -> dict[str, str]:
        """Checks by name, each "ok" or a short reason; they must write nothing."""

    def free_space(self) -> int | None:
        """Bytes new uploads may still fill, or None when the backend cannot tell."""
