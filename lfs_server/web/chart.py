"""A repository's stored bytes over time as a small SVG, drawn on the server.

No chart library: a step line through (time, total bytes) points scaled into
a fixed view box, with the axes labelled in text. It is inline in the page,
so the page's CSP needs nothing more for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from lfs_server.db import IndexedObject

WIDTH = 640
HEIGHT = 240
MARGIN_LEFT = 80
MARGIN_BOTTOM = 30
MARGIN_TOP = 10
MARGIN_RIGHT = 10
MAX_POINTS = 200


@dataclass(frozen=True)
class Chart:
    """What the template draws: the line's points and the axis labels' values."""

    points: str
    first: int
    last: int
    total: int


def growth(rows: list[IndexedObject]) -> list[tuple[int, int]]:
    """(time, bytes stored up to then), one point per distinct time, oldest first."""
    points: list[tuple[int, int]] = []
    total = 0
    for row in sorted(rows, key=lambda r: r.stored_at):
        total += row.size
        if points and points[-1][0] == row.stored_at:
            points[-1] = (row.stored_at, total)
        else:
            points.append((row.stored_at, total))
    if len(points) > MAX_POINTS:
        step = len(points) / (MAX_POINTS - 1)
        points = [points[int(i * step)] for i in range(MAX_POINTS - 1)] + [points[-1]]
    return points


def chart(rows: list[IndexedObject]) -> Chart | None:
    """The chart of these index rows, or None when there is nothing to draw."""
    points = growth(rows)
    if not points:
        return None
    first, last = points[0][0], points[-1][0]
    total = points[-1][1]
    span = max(last - first, 1)
    inner_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    inner_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM

    def x(when: int) -> float:
        return MARGIN_LEFT + (when - first) / span * inner_w

    def y(size: int) -> float:
        return MARGIN_TOP + inner_h - (size / total * inner_h if total else 0)

    coords = [(float(MARGIN_LEFT), y(0))]
    for when, size in points:
        coords.append((x(when), coords[-1][1]))  # a step: flat until the next upload
        coords.append((x(when), y(size)))
    coords.append((float(MARGIN_LEFT + inner_w), coords[-1][1]))
    return Chart(" ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in coords), first, last, total)
