"""Rights per user per repository pattern.

A pattern is `*` (every repository), `team/*` (every repository under
`team/`, at any depth) or an exact repository name. A user's right on a
repository is the highest of: what anonymous callers get, their grants
whose pattern matches, and `admin` for server admins.
"""

from __future__ import annotations

from collections.abc import Sequence

from lfs_server.db import Database, User
from lfs_server.repos import normalize_repo

RIGHTS = ("none", "read", "write", "admin")


def level(right: str) -> int:
    return RIGHTS.index(right)


def normalize_pattern(pattern: str) -> str | None:
    """The canonical spelling of a grant pattern, or None when it is invalid."""
    if pattern == "*":
        return pattern
    if pattern.endswith("/*"):
        prefix = normalize_repo(pattern[:-2])
        return f"{prefix}/*" if prefix is not None and not pattern[:-2].endswith(".git") else None
    return normalize_repo(pattern)


def matches(pattern: str, repo: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith("/*"):
        return repo.startswith(pattern[:-1])
    return pattern == repo


def right_for(
    db: Database,
    user: User | None,
    repo: str,
    anonymous: str,
    grants: Sequence[tuple[str, str]] | None = None,
) -> str:
    """`grants` are the user's (pattern, right) pairs when already read."""
    best = level(anonymous)
    if user is not None:
        if user.is_admin:
            return "admin"
        for pattern, right in db.user_grants(user.id) if grants is None else grants:
            if matches(pattern, repo):
                best = max(best, level(right))
    return RIGHTS[best]
