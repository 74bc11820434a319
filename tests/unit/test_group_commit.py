"""Group commit: concurrent callers share one write, and each returns only once its item is in."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from lfs_server.group_commit import GroupCommit
from tests.waiting import wait_until


class HeldWrites:
    """A write that waits to be released, recording each group it was given;
    a group holding an item of `failing` fails as a whole."""

    def __init__(self, failing: frozenset[int] = frozenset()) -> None:
        self.failing = failing
        self.groups: list[list[int]] = []
        self.written: set[int] = set()
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, items: Sequence[int]) -> None:
        self.started.set()
        assert self.release.wait(30)
        self.groups.append(list(items))
        if self.failing & set(items):
            raise OSError("injected: the disk failed")
        self.written.update(items)


def add_in_thread(
    group: GroupCommit[int], item: int, results: dict[int, object]
) -> threading.Thread:
    def run() -> None:
        try:
            group.add(item)
            results[item] = "ok"
        except OSError as exc:
            results[item] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def pending(group: GroupCommit[int]) -> int:
    with group._cond:
        return len(group._pending)


def start_behind_a_write(
    writes: HeldWrites, items: range
) -> tuple[GroupCommit[int], list[threading.Thread], dict[int, object]]:
    """Item 0 is being written (held); `items` arrive meanwhile and wait."""
    group = GroupCommit(writes)
    results: dict[int, object] = {}
    threads = [add_in_thread(group, 0, results)]
    assert writes.started.wait(30)
    threads += [add_in_thread(group, n, results) for n in items]
    assert wait_until(lambda: pending(group) == len(items), 30)
    return group, threads, results


def test_callers_that_arrive_during_a_write_share_the_next_one() -> None:
    writes = HeldWrites()
    _, threads, results = start_behind_a_write(writes, range(1, 9))
    assert results == {}  # nobody returns before their own item is written
    writes.release.set()
    for thread in threads:
        thread.join(30)
    assert results == {n: "ok" for n in range(9)}
    assert writes.groups == [[0], sorted(writes.groups[1])]
    assert sorted(writes.groups[1]) == list(range(1, 9))  # eight callers, one write


def test_a_failed_write_fails_every_caller_of_that_group_and_no_other() -> None:
    writes = HeldWrites(failing=frozenset({1}))
    group, threads, results = start_behind_a_write(writes, range(1, 3))
    writes.release.set()
    for thread in threads:
        thread.join(30)
    assert results[0] == "ok"
    assert isinstance(results[1], OSError) and isinstance(results[2], OSError)
    group.add(3)  # the next caller is unaffected
    assert writes.written == {0, 3}


def test_a_lone_caller_writes_at_once() -> None:
    written: list[list[str]] = []
    group: GroupCommit[str] = GroupCommit(lambda items: written.append(list(items)))
    group.add("a")
    group.add("b")
    assert written == [["a"], ["b"]]


def test_an_error_reaches_the_caller_that_wrote() -> None:
    def broken(items: Sequence[str]) -> None:
        raise OSError("injected")

    with pytest.raises(OSError, match="injected"):
        GroupCommit(broken).add("a")
