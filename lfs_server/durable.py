"""New names on disk that survive a power loss.

A file's data is durable after fsync(file); the name that leads to it only
after fsync of the directory holding the name, and a new directory's own
name only after fsync of its parent. Each such step is here, once.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a new directory entry (a link, a rename, a mkdir) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path) -> list[Path]:
    """`mkdir -p path`; the directories that may be new, top first.

    That includes one a concurrent caller created first: its creator may not
    have fsynced the parent yet. Their parents are what the caller must fsync.
    """
    missing: list[Path] = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory)
        except FileExistsError:
            if not directory.is_dir():
                raise
    return missing[::-1]


def fsync_new_dirs(new_dirs: list[Path]) -> None:
    """Make the names of directories from make_dirs durable, deepest first."""
    for directory in reversed(new_dirs):
        fsync_dir(directory.parent)
