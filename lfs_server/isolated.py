"""Run one start-up step of the launcher in a short-lived child process.

The launcher lives as long as the server, and a Python process keeps what
its imports took for good. The steps that need the backends (checking the S3
bucket: boto3; opening PostgreSQL: psycopg; creating the admin: Werkzeug's
password hash) would leave some 40 MiB in it that it never uses again. A
forked child runs them instead and exits; the launcher gets back what the
step returned, or the exception it raised.

Only for a launcher with no threads yet: a fork copies the calling thread
alone, and locks other threads held would stay held in the child.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class ChildFailed(Exception):
    """The child ended without an answer (killed, or its answer could not be read)."""


def _outcome(task: Callable[[], object]) -> bytes:
    """What the child sends back: (True, result) or (False, exception), pickled."""
    try:
        result: tuple[bool, object] = (True, task())
    except BaseException as exc:  # every outcome goes back, KeyboardInterrupt included
        result = (False, exc)
    try:
        return pickle.dumps(result)
    except Exception as exc:  # an exception that cannot travel: its text can
        problem = result[1] if not result[0] else exc
        return pickle.dumps((False, ChildFailed(f"{type(problem).__name__}: {problem}")))


def in_child(task: Callable[[], T]) -> T:
    """`task()` run in a forked child: its result, or its exception raised here."""
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer, then leave without running the parent's exit code
        code = 0
        try:
            os.close(read_end)
            with os.fdopen(write_end, "wb") as answer:
                answer.write(_outcome(task))
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answer:
        data = answer.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        raise ChildFailed(f"exited with {os.waitstatus_to_exitcode(status)} without an answer")
    ok, value = pickle.loads(data)
    if not ok:
        raise value
    return value
