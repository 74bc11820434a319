"""Repository names: which URL paths name a repository, and how to spell them.

A name is 1 to 8 segments of [A-Za-z0-9._-], none of them `.`/`..` or
starting with a dot; a trailing `.git` is dropped so `team/proj.git` and
`team/proj` are one repository. The dot rule also keeps repository URLs apart
from the server's own `/.lfs/...` paths.
"""

from __future__ import annotations

import re

MAX_SEGMENTS = 8
_SEGMENT_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")


def normalize_repo(raw: str) -> str | None:
    """The canonical name of a repository path, or None when it is not valid."""
    name = raw[:-4] if raw.endswith(".git") else raw
    segments = name.split("/")
    if not 1 <= len(segments) <= MAX_SEGMENTS:
        return None
    if not all(_SEGMENT_RE.fullmatch(segment) for segment in segments):
        return None
    return name


def repo_from_path(raw: str) -> str:
    """The repository a request URL names, or 404."""
    # Only requests get here: the launcher and the CLI use this module without Flask.
    from lfs_server.errors import LFSError

    repo = normalize_repo(raw)
    if repo is None:
        raise LFSError(404, "repository not found: invalid repository name")
    return repo
