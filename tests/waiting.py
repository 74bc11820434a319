"""Waiting in a test: on the event itself, polled until a deadline, never a bare sleep."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(predicate: Callable[[], object], timeout: float = 5.0, step: float = 0.05) -> bool:
    """Whether `predicate()` turned true within `timeout` seconds.

    The caller asserts the result with a message that names the event, so a
    wait that runs out fails there and says what never happened.
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
