"""Sizes as people read them: binary units, as the size settings use."""

from __future__ import annotations


def human_bytes(count: int, smallest: str = "B") -> str:
    """1536 -> '1.5 KiB'; below 1 KiB the exact count, followed by `smallest`."""
    value = float(count)
    for unit in (smallest, "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{count} {unit}" if unit == smallest else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
