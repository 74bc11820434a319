"""The processes of a server a test started, read from /proc."""

from __future__ import annotations

from pathlib import Path

from tests.stack import Stack


def child_pids(pid: int) -> list[int]:
    """The children of `pid` (none once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(child) for child in text.split()]


def descendants(pid: int) -> list[int]:
    """Every process below `pid`: children, theirs, and so on."""
    found = []
    for child in child_pids(pid):
        found += [child, *descendants(child)]
    return found


def cmdline(pid: int) -> str:
    """The command line of `pid`, "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


def launcher_child(stack: Stack, name: str) -> int:
    """PID of the launcher's `gunicorn` or `nginx` master."""
    assert stack.proc is not None
    return next(pid for pid in child_pids(stack.proc.pid) if name in cmdline(pid))


def gunicorn_workers(stack: Stack) -> list[int]:
    return child_pids(launcher_child(stack, "gunicorn"))
