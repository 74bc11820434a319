"""Who is calling, and what they may do on which repository."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from lfs_server.errors import LFSError

RIGHTS = ("none", "read", "write", "admin")
ANONYMOUS = "anonymous"


def right_level(right: str) -> int:
    return RIGHTS.index(right)


@dataclass(frozen=True)
class Caller:
    """An authenticated user, or the anonymous caller (`name` is ANONYMOUS)."""

    name: str
    right: str


def require(repo: str, needed: str) -> Caller:
    """The caller, when they hold `needed` on `repo`; otherwise an LFS error.

    A caller who is not allowed and sent no credentials gets 401, so the
    git-lfs client asks its credential helpers and retries.
    """
    anonymous_right = current_app.config["LFS_SETTINGS"].anonymous
    caller = Caller(ANONYMOUS, anonymous_right)
    if right_level(caller.right) < right_level(needed):
        raise LFSError(
            401,
            "credentials required",
            {"LFS-Authenticate": 'Basic realm="Git LFS"'},
        )
    return caller
