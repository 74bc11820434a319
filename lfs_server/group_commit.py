"""Group commit: concurrent callers share one durable write.

Each upload ends with a durable write (an index row: one transaction, one
WAL fsync). Done one by one, concurrent uploads queue behind each other's
fsync (SQLite has one writer at a time). Here the first caller writes
everything waiting, while the next ones gather; when it is done, one of
them writes all that arrived meanwhile. Nobody returns before their own
item is durable, and nobody waits for more than the write in progress plus
their own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class _Waiter(Generic[T]):
    __slots__ = ("done", "error", "item")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.error: BaseException | None = None


class GroupCommit(Generic[T]):
    """Calls `write` with every item added while the previous call ran.

    `write` must be all-or-nothing for its items: when it raises, every
    caller of that group gets the error.
    """

    def __init__(self, write: Callable[[Sequence[T]], None]) -> None:
        self._write = write
        self._cond = threading.Condition()
        self._pending: list[_Waiter[T]] = []
        self._writing = False

    def add(self, item: T) -> None:
        """Return once `item` is written (durably, as `write` promises), or raise its error."""
        waiter = _Waiter(item)
        with self._cond:
            self._pending.append(waiter)
            while self._writing and not waiter.done:
                self._cond.wait()
            if not waiter.done:
                self._writing = True
                group, self._pending = self._pending, []
        if not waiter.done:
            error: BaseException | None = None
            try:
                self._write([each.item for each in group])
            except BaseException as exc:
                error = exc
            with self._cond:
                for each in group:
                    each.done, each.error = True, error
                self._writing = False
                self._cond.notify_all()
        if waiter.error is not None:
            raise waiter.error
