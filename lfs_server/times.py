"""Times as the LFS APIs write them."""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(timestamp: int) -> str:
    """Unix seconds as RFC 3339 in UTC, e.g. 2026-01-31T12:00:00Z."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
