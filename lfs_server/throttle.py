"""Brute-force brake: too many failed logins get 429 with Retry-After.

Counted per client address and per (user, client address), in the shared
database so every worker sees them. A client that has not failed is never
slowed, so an attacker cannot lock the real user out by failing on purpose.
"""

from __future__ import annotations

import time

from lfs_server.db import Database
from lfs_server.errors import LFSError

WINDOW_SECONDS = 300.0
MAX_PER_CLIENT = 30
MAX_PER_USER_AND_CLIENT = 10


def _keys(client: str, name: str) -> dict[str, int]:
    return {f"client:{client}": MAX_PER_CLIENT, f"user:{name}@{client}": MAX_PER_USER_AND_CLIENT}


def check(db: Database, client: str, name: str) -> None:
    limits = _keys(client, name)
    counts = db.failures(list(limits), time.time())
    if any(counts.get(key, 0) >= limit for key, limit in limits.items()):
        raise LFSError(
            429,
            "too many failed logins; try again later",
            {"Retry-After": str(int(WINDOW_SECONDS))},
        )


def record_failure(db: Database, client: str, name: str) -> None:
    db.add_failure(list(_keys(client, name)), time.time(), WINDOW_SECONDS)
