"""migrate-store's progress: a bar redrawn in place on a terminal, plain lines
at a bounded rate elsewhere, the time left reckoned from the bytes uploaded."""

from __future__ import annotations

import io

import pytest

from lfs_server.migrate_progress import (
    PLAIN_SECONDS,
    Progress,
    Snapshot,
    bar,
    duration,
    plain,
    status,
)

MIB = 1 << 20


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def snap(**counts: float) -> Snapshot:
    base = {
        "objects": 0,
        "total_objects": 10,
        "done_bytes": 0,
        "total_bytes": 100 * MIB,
        "sent": 0,
        "copied": 0,
        "elapsed": 10.0,
    }
    return Snapshot(**{**base, **counts})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.2, "1s"), (59, "59s"), (65, "1m05s"), (3599, "59m59s"), (7380, "2h03m")],
)
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_status_counts_objects_bytes_rate_and_time_left() -> None:
    # 4 of 10 objects, 40 MiB of 100 done, 40 MiB sent in 10 s: 4 MiB/s, 60 MiB left.
    text = status(snap(objects=4, done_bytes=40 * MIB, sent=40 * MIB, copied=40 * MIB))
    assert text == "4/10 objects, 40.0 MiB/100.0 MiB, 4.0 MiB/s, 15s left"


def test_bytes_in_flight_count_before_their_object_is_done() -> None:
    # Nothing finished yet, 20 MiB of a large object sent in 10 s.
    text = status(snap(sent=20 * MIB))
    assert text == "0/10 objects, 20.0 MiB/100.0 MiB, 2.0 MiB/s, 40s left"


def test_skipped_objects_do_not_make_the_rate() -> None:
    # 9 objects (90 MiB) skipped, nothing uploaded yet: no rate, no guess.
    assert status(snap(objects=9, done_bytes=90 * MIB)).endswith("0 B/s, ? left")
    # Then the last 10 MiB goes at 1 MiB/s: the time left is the rest of it.
    text = status(snap(objects=9, done_bytes=90 * MIB, sent=5 * MIB, elapsed=5.0))
    assert text.endswith("1.0 MiB/s, 5s left")


def test_finished_shows_nothing_left() -> None:
    text = status(snap(objects=10, done_bytes=100 * MIB, sent=100 * MIB, copied=100 * MIB))
    assert text == "10/10 objects, 100.0 MiB/100.0 MiB, 10.0 MiB/s, 0s left"


def test_bar_fills_with_the_bytes_and_fits_the_terminal() -> None:
    half = snap(objects=5, done_bytes=50 * MIB, sent=50 * MIB, copied=50 * MIB)
    text = " 50% 5/10 objects, 50.0 MiB/100.0 MiB, 5.0 MiB/s, 10s left"
    assert bar(half, 200) == "[##########----------] " + text
    # Narrower terminals: the bar narrows (leaving room for the widest status
    # of the run), then goes, then the line is cut one short of the width (a
    # full-width line wraps).
    assert bar(half, 81) == "[#####-----] " + text
    assert bar(half, 75) == text
    assert bar(half, 40) == text[:39]
    nothing_to_send = snap(total_bytes=0, total_objects=4, objects=1)
    assert bar(nothing_to_send, 200).startswith("[#####---------------]  25% 1/4 objects")


def test_the_bar_keeps_its_width_as_the_counts_grow() -> None:
    frames = [
        bar(snap(total_objects=1500, objects=n, done_bytes=n * 70_000, sent=n * 70_000), 100)
        for n in (0, 7, 150, 1498)
    ]
    assert len({frame.index("]") for frame in frames}) == 1, frames
    assert all(len(frame) <= 99 for frame in frames), frames


def test_plain_line_is_label_and_status() -> None:
    assert plain(snap()) == "migrate-store: 0/10 objects, 0 B/100.0 MiB, 0 B/s, ? left"


def test_terminal_redraws_one_line_in_place() -> None:
    out, clock = Terminal(), Clock()
    progress = Progress(out, 2, 2 * MIB, clock)
    clock.now += 1
    progress.sent_bytes(MIB // 2)
    progress.tick()
    progress.finished(MIB, MIB // 2, copied=True)
    progress.tick()
    text = out.getvalue()
    assert "\n" not in text
    frames = text.split("\r")[1:]
    assert len(frames) == 2
    assert all(frame.endswith("\x1b[K") for frame in frames)
    assert "0/2 objects, 512.0 KiB/2.0 MiB" in frames[0]
    assert "1/2 objects, 1.0 MiB/2.0 MiB, 1.0 MiB/s, 1s left" in frames[1]
    progress.say("a message")
    progress.close()
    after = out.getvalue()[len(text) :]
    # The message clears the bar's line and takes its own; the bar comes back and ends.
    assert after.startswith("\r\x1b[Ka message\n\r")
    assert after.endswith("\x1b[K\n")


def test_plain_lines_come_at_a_bounded_rate() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress(out, 100, 100 * MIB, clock)
    for _ in range(9):  # under a tenth of the objects, within the interval: silent
        progress.finished(MIB, 0, copied=True)
        clock.now += 0.1
        progress.tick()
    assert out.getvalue() == ""
    progress.finished(MIB, 0, copied=True)
    progress.tick()  # a tenth done
    progress.tick()  # nothing new: no second line
    lines = out.getvalue().splitlines()
    assert lines == ["migrate-store: 10/100 objects, 10.0 MiB/100.0 MiB, 11.1 MiB/s, 9s left"]
    clock.now += PLAIN_SECONDS  # no object done, but the interval passed
    progress.tick()
    assert len(out.getvalue().splitlines()) == 2
    for _ in range(90):  # a tick per object: at most one line per tenth
        progress.finished(MIB, 0, copied=True)
        progress.tick()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 + 9
    assert lines[-1].startswith("migrate-store: 100/100 objects")
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    progress.close()  # no terminal: nothing to end
    assert len(out.getvalue().splitlines()) == 11


def test_a_failed_upload_takes_back_its_bytes_in_flight() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress(out, 2, 2 * MIB, clock)
    progress.sent_bytes(MIB // 2)
    progress.sent_bytes(-(MIB // 4))  # a retried part starts over
    progress.finished(MIB, MIB // 4, copied=False)
    state = progress.snapshot()
    assert (state.objects, state.done_bytes, state.sent, state.in_flight) == (1, MIB, 0, 0)
