"""New names on disk that survive a power loss.

A file's data is durable after fsync(file); the name that leads to it only
after fsync of the directory holding the name, and a new directory's own
name only after fsync of its parent. Each such step is here, once.

Each fsync waits for the disk (a journal commit, a cache flush). Issued one
after the other, a file and the folders of its new name wait several times;
issued together (fsync_together), they share one commit and one flush.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

# fsyncs in flight at once for fsync_together, across all callers of a process.
FSYNC_THREADS = 16
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def fsync_dir(path: Path) -> None:
    """Make a new directory entry (a link, a rename, a mkdir) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
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


def _fsync_pool() -> ThreadPoolExecutor:
    """Made on first use, in the process that uses it (never inherited across a fork)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(FSYNC_THREADS, thread_name_prefix="fsync")
        return _pool


def fsync_together(fd: int | None, folders: Sequence[Path]) -> None:
    """fsync the open file `fd` (if any) and `folders`, all at once.

    Returns when every one is durable; raises the first error otherwise.
    """
    steps: list[tuple[Callable[[Any], None], Any]] = [(fsync_dir, folder) for folder in folders]
    if fd is not None:
        steps.append((os.fsync, fd))
    if not steps:
        return
    # All but the last go to the pool; this thread does the last one itself.
    pool = _fsync_pool()
    calls: list[Future[None]] = [pool.submit(step, arg) for step, arg in steps[:-1]]
    failure: BaseException | None = None
    step, arg = steps[-1]
    try:
        step(arg)
    except OSError as exc:
        failure = exc
    errors = [call.exception() for call in calls]
    for error in (failure, *errors):
        if error is not None:
            raise error
