"""Turns (turns.py): one thread at a time, in arrival order, and a turn is
handed on even when its holder fails; and the worker hook that shortens the
interpreter's switch interval (gunicorn_conf.post_fork)."""

from __future__ import annotations

import sys
import threading
import time

import pytest

from lfs_server import gunicorn_conf
from lfs_server.turns import Turns


def test_threads_take_their_turns_one_at_a_time_in_arrival_order() -> None:
    turns = Turns()
    order: list[int] = []
    inside = 0
    most_inside = 0
    guard = threading.Lock()
    first_in = threading.Event()
    release_first = threading.Event()

    def work(n: int) -> None:
        nonlocal inside, most_inside
        with turns.turn():
            with guard:
                inside += 1
                most_inside = max(most_inside, inside)
            order.append(n)
            if n == 0:
                first_in.set()
                release_first.wait(10)
            with guard:
                inside -= 1

    threads = [threading.Thread(target=work, args=(0,))]
    threads[0].start()
    assert first_in.wait(10)
    for n in range(1, 20):
        thread = threading.Thread(target=work, args=(n,))
        thread.start()
        threads.append(thread)
        deadline = time.monotonic() + 10
        while len(turns._waiting) < n and time.monotonic() < deadline:
            time.sleep(0.001)  # queued before the next one arrives
        assert len(turns._waiting) == n
    release_first.set()
    for thread in threads:
        thread.join(10)
    assert order == list(range(20))
    assert most_inside == 1


def test_a_turn_that_fails_is_handed_on() -> None:
    turns = Turns()
    with pytest.raises(RuntimeError), turns.turn():
        raise RuntimeError("boom")
    passed = threading.Event()

    def next_one() -> None:
        with turns.turn():
            passed.set()

    thread = threading.Thread(target=next_one)
    thread.start()
    thread.join(10)
    assert passed.is_set()


def test_a_worker_hands_the_interpreter_lock_on_after_1_ms() -> None:
    before = sys.getswitchinterval()
    try:
        gunicorn_conf.post_fork(None, None)
        assert sys.getswitchinterval() == pytest.approx(0.001)
    finally:
        sys.setswitchinterval(before)
