"""Presigned download URLs kept for reuse, a bounded number per process.

A presigned GET of an object's key grants that object to whoever holds the
URL, and it is the same URL whoever asks (the oid names the bytes; who may
see them was decided before a URL is handed out). So one URL can go to every
caller while it is young: reused while its remaining validity is at least
the expiry asked for less a small slice (`reuse_slice`), so every caller gets
a URL valid for about as long as if it were signed for them, and is told its
true expiry. Signing is what a direct-mode download batch spends its time on;
a repeated fetch of the same objects signs nothing.

A URL signed with credentials that have since changed (a role's credentials
refreshed, keys rotated) is never handed out again: the cache is emptied
when the signing credentials differ from those its URLs were signed with.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

from lfs_server.store.s3_signing import SignedURL

# Enough for the largest batch (1000 objects) several times over; a URL is
# under 1 KiB (more with a session token), so a few MiB per process at most.
CAPACITY = 4096
# The longest a URL is reused: the expiry asked for loses at most this much.
MAX_SLICE = 60.0


def reuse_slice(expires: int) -> float:
    """How much younger than `expires` seconds a reused URL may be: a tenth of
    it, at most a minute."""
    return min(MAX_SLICE, expires / 10)


class URLCache:
    """Thread-safe LRU of SignedURLs by (key, expiry asked for)."""

    def __init__(self, capacity: int = CAPACITY, clock: Callable[[], float] = time.time) -> None:
        self.capacity = capacity
        self._clock = clock
        self._lock = threading.Lock()
        self._urls: OrderedDict[tuple[str, int], SignedURL] = OrderedDict()
        self._signed_by: Hashable = None

    def get(
        self, key: str, expires: int, signer: Hashable, sign: Callable[[], SignedURL]
    ) -> SignedURL:
        """A URL for `key` valid for at least `expires` less reuse_slice(expires)
        seconds, signed by `signer` (the credentials' identity): a kept one, or
        a new one from `sign`, then kept."""
        entry = (key, expires)
        fresh_until = self._clock() + expires - reuse_slice(expires)
        with self._lock:
            if signer != self._signed_by:
                self._urls.clear()
                self._signed_by = signer
            kept = self._urls.get(entry)
            if kept is not None and kept.expires_at >= fresh_until:
                self._urls.move_to_end(entry)
                return kept
        signed = sign()  # outside the lock: signing is the slow part
        with self._lock:
            if signer == self._signed_by:
                self._urls[entry] = signed
                self._urls.move_to_end(entry)
                while len(self._urls) > self.capacity:
                    self._urls.popitem(last=False)
        return signed

    def __len__(self) -> int:
        return len(self._urls)
