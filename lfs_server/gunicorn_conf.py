"""gunicorn server hooks; the launcher loads them with `--config python:lfs_server.gunicorn_conf`.

Only hooks (and gunicorn's error page, as LFS JSON) live here: every other
gunicorn option is on the launcher's command line, next to the settings it
comes from.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from gunicorn import util

from lfs_server.errors import LFS_MEDIA_TYPE


def write_lfs_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's own error answers as LFS JSON instead of its HTML page.

    nginx passes on header values that gunicorn refuses (control characters
    such as \x01 in any header): gunicorn answers those itself, before Flask
    sees the request, with `util.write_error`, which this replaces.
    """
    message = f"{reason.lower()}: {mesg}" if mesg else reason.lower()
    body = json.dumps({"message": message}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: {LFS_MEDIA_TYPE}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


util.write_error = write_lfs_error

SWITCH_INTERVAL = 0.001


def on_starting(server: Any) -> None:
    """Before any worker is forked: the app's modules, shared by every worker."""
    from lfs_server.preload import share_modules

    share_modules()


def post_fork(server: Any, worker: Any) -> None:
    """A worker's threads hand the interpreter lock on after 1 ms instead of 5 ms.

    A thread that waits for the lock (to read the next request, or to answer
    one whose database query just returned) otherwise sits out up to 5 ms of
    another request's CPU work at each step: the batch answer's tail.
    """
    sys.setswitchinterval(SWITCH_INTERVAL)


def child_exit(server: Any, worker: Any) -> None:
    """A worker is gone (exit or crash): tell prometheus_client's multiprocess mode.

    Its counter and histogram files stay and are still summed, so no count is
    lost; only per-process live gauges of that pid are dropped.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
