"""How far `lfs-server migrate-store` is: a bar on a terminal, plain lines in a log.

On a terminal one line is redrawn in place (objects done of all, bytes, the
upload rate, the time left). Anywhere else (a pipe, a log file, a CI job) a
plain line goes out at a bounded rate: every PLAIN_SECONDS, and at each tenth
of the objects, so a log neither floods nor stays silent for long.

Workers report from their threads; the main thread calls `tick()` to draw.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from lfs_server.units import human_bytes

PLAIN_SECONDS = 5.0
PLAIN_STEPS = 10
BAR_WIDTH = 20
MIN_BAR_WIDTH = 5
DEFAULT_COLUMNS = 80
LABEL = "migrate-store"


@dataclass(frozen=True)
class Snapshot:
    """The counts at one moment. `done_bytes` are the sizes of the objects done
    (copied, skipped or failed); `sent` is bytes uploaded, whole objects
    (`copied`) and parts of those in flight: the rate and the time left are
    reckoned from it, so skipping what is there already does not look fast."""

    objects: int
    total_objects: int
    done_bytes: int
    total_bytes: int
    sent: int
    copied: int
    elapsed: float

    @property
    def in_flight(self) -> int:
        return max(self.sent - self.copied, 0)

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def remaining(self) -> float | None:
        """Seconds left at the rate so far; None before anything was sent."""
        left = max(self.total_bytes - self.done_bytes - self.in_flight, 0)
        if left == 0:
            return 0.0
        return left / self.rate if self.rate > 0 else None


def duration(seconds: float) -> str:
    """3 -> '3s', 65 -> '1m05s', 7380 -> '2h03m' (rounded up: never says 0s too early)."""
    whole = math.ceil(max(seconds, 0.0))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def status(snap: Snapshot) -> str:
    """'120/300 objects, 1.2 MiB/3.4 MiB, 45.6 MiB/s, 1m05s left' ('? left'
    until something was sent)."""
    shown = min(snap.done_bytes + snap.in_flight, max(snap.total_bytes, snap.done_bytes))
    left = snap.remaining
    return (
        f"{snap.objects}/{max(snap.total_objects, snap.objects)} objects, "
        f"{human_bytes(shown)}/{human_bytes(snap.total_bytes)}, "
        f"{human_bytes(int(snap.rate))}/s, "
        + ("? left" if left is None else f"{duration(left)} left")
    )


def fraction(snap: Snapshot) -> float:
    """How much is done, by bytes (by objects when there are no bytes)."""
    if snap.total_bytes:
        return min((snap.done_bytes + snap.in_flight) / snap.total_bytes, 1.0)
    if snap.total_objects:
        return min(snap.objects / snap.total_objects, 1.0)
    return 1.0


def widest_status(snap: Snapshot) -> int:
    """How long the status of this run may grow (its counts at their widest), so
    the bar keeps one width from frame to frame."""
    objects = max(snap.total_objects, snap.objects)
    return len(
        f"{objects}/{objects} objects, 1023.9 KiB/{human_bytes(snap.total_bytes)}, "
        "1023.9 KiB/s, 12h59m left"
    )


def bar(snap: Snapshot, columns: int) -> str:
    """The terminal line, '[#####-----]  50% ' and the status, within `columns`
    less one (a line as wide as the terminal wraps, and \r then redraws only
    its second half): on a narrow one the bar narrows, then goes, then the
    line is cut."""
    done = fraction(snap)
    text = f"{done:4.0%} {status(snap)}"
    width = min(BAR_WIDTH, columns - 1 - len("[] 100% ") - widest_status(snap))
    if width < MIN_BAR_WIDTH:
        return text[: max(columns - 1, 1)]
    filled = int(done * width)
    return f"[{'#' * filled}{'-' * (width - filled)}] {text}"


def plain(snap: Snapshot) -> str:
    return f"{LABEL}: {status(snap)}"


class Progress:
    """Counts reported by the workers and drawn by the main thread."""

    def __init__(
        self,
        out: TextIO,
        total_objects: int,
        total_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out = out
        self.tty = out.isatty()
        self.total_objects = total_objects
        self.total_bytes = total_bytes
        self.clock = clock
        self.lock = threading.Lock()
        self.objects = 0
        self.done_bytes = 0
        self.sent = 0
        self.copied = 0
        self.start = clock()
        self.last_plain = self.start
        self.step = max(math.ceil(total_objects / PLAIN_STEPS), 1)
        self.next_step = self.step
        self.drawn = False

    def sent_bytes(self, count: int) -> None:
        """Bytes of an upload in flight went to the bucket (negative: a retry rewound)."""
        with self.lock:
            self.sent += count

    def finished(self, size: int, sent: int, copied: bool) -> None:
        """One object is done (copied, skipped or failed); `sent` is what
        sent_bytes heard for it, replaced by its size when it was copied."""
        with self.lock:
            self.objects += 1
            self.done_bytes += size
            if copied:
                self.sent += size - sent
                self.copied += size
            else:
                self.sent -= sent

    def snapshot(self) -> Snapshot:
        with self.lock:
            return Snapshot(
                objects=self.objects,
                total_objects=self.total_objects,
                done_bytes=self.done_bytes,
                total_bytes=self.total_bytes,
                sent=self.sent,
                copied=self.copied,
                elapsed=self.clock() - self.start,
            )

    def tick(self) -> None:
        """Redraw the bar, or write a plain line when one is due."""
        snap = self.snapshot()
        if self.tty:
            self.out.write(f"\r{bar(snap, self._columns())}\x1b[K")
            self.out.flush()
            self.drawn = True
            return
        now = self.clock()
        if snap.objects >= self.next_step or now - self.last_plain >= PLAIN_SECONDS:
            self.next_step = (snap.objects // self.step + 1) * self.step
            self.last_plain = now
            self.say(plain(snap))

    def say(self, text: str) -> None:
        """A line of its own, above the bar on a terminal (the next tick redraws it)."""
        if self.tty and self.drawn:
            self.out.write("\r\x1b[K")
            self.drawn = False
        self.out.write(text + "\n")
        self.out.flush()

    def close(self) -> None:
        """The last state stays on screen (the bar, with its line ended)."""
        if self.tty:
            self.tick()
            self.out.write("\n")
            self.out.flush()
            self.drawn = False

    def _columns(self) -> int:
        try:
            return os.get_terminal_size(self.out.fileno()).columns or DEFAULT_COLUMNS
        except (OSError, ValueError, AttributeError):
            return DEFAULT_COLUMNS
