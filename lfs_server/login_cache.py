"""A worker's short memory of good logins, so a busy client skips the login reads.

A request with Basic credentials reads the brake's counts, the user, the
network's last good login and the user's grants before it reads anything it
asked for: four database round trips, most of a batch's cost on PostgreSQL.
A git client sends the same credentials on every request, so a login that
passed all of those checks is remembered for LOGIN_CACHE_SECONDS counted
from the moment its check began, keyed by an HMAC of the name, the secret
and the client network (a key of this process, never stored). An entry is
never renewed by use: a password changed, a token revoked, a user removed or
a grant changed anywhere, on this server or any replica on the same
database, is in force everywhere at most LOGIN_CACHE_SECONDS later, and at
once in the worker whose web page made the change (a check that was under
way then stores nothing). An entry never outlives its token either.

The brake still sees every guess: a wrong secret never matches an entry, so
it takes the full path, where the brake counts or refuses it. While a full
check of another secret for a name runs, no entry of that name is used (the
user's own refills of an entry do not hold it back), and a login refused
for a name in this process (wrong secret, brake, or any error) turns off
that name's entries here for the brake's whole window, so a correct password
guessed from a remembered network while the brake is shut is refused as
before. What is left: at most one guess per process and window is checked
against an entry instead of the brake, and only from a network the user
itself logged in from within the last LOGIN_CACHE_SECONDS. Names that are
not valid user names are never remembered.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from lfs_server.accounts import valid_user_name
from lfs_server.db import User
from lfs_server.throttle import WINDOW_SECONDS

LOGIN_CACHE_SECONDS = 1.0
ENTRIES = 4096


@dataclass(frozen=True)
class CachedLogin:
    user: User
    grants: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Ticket:
    """A full check under way: whose, since when, in which generation of
    this process's account changes it began, and the entry it may fill."""

    name: str
    started: float
    generation: int
    secret_tag: bytes
    key: bytes


class LoginCache:
    """Good logins of the last LOGIN_CACHE_SECONDS, per (name, secret, network)."""

    def __init__(
        self,
        ttl: float = LOGIN_CACHE_SECONDS,
        entries: int = ENTRIES,
        refusal_window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._entries = entries
        self._refusal_window = refusal_window
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._logins: OrderedDict[bytes, tuple[float, CachedLogin]] = OrderedDict()
        # Names refused here lately, and until when; full means "trust no entry".
        self._refused: dict[str, float] = {}
        self._all_refused_until = 0.0
        # Full checks under way: per name, how many of each secret (by tag).
        self._checking: dict[str, Counter[bytes]] = {}
        self._generation = 0

    def _digest(self, *parts: str) -> bytes:
        text = json.dumps(parts).encode()  # unambiguous, NULs and all
        return hmac.new(self._key, text, hashlib.sha256).digest()

    def lookup(self, name: str, secret: str, network: str) -> CachedLogin | Ticket:
        """The remembered login, or a Ticket for the full check the caller
        must now make and then hand to `done` (and to `put` on success).

        A check of another secret for the name (a guess, until the brake has
        answered it) holds its entries back; the user's own refill does not."""
        key = self._digest(name, secret, network)
        tag = self._digest(name, secret)
        now = self._clock()
        with self._lock:
            found = self._logins.get(key)
            if found is not None:
                until, login = found
                if until <= now or self._is_refused(name, now):
                    del self._logins[key]
                elif not any(other != tag for other in self._checking.get(name, ())):
                    return login
            self._checking.setdefault(name, Counter())[tag] += 1
            return Ticket(name, now, self._generation, tag, key)

    def done(self, ticket: Ticket) -> None:
        with self._lock:
            checks = self._checking[ticket.name]
            checks[ticket.secret_tag] -= 1
            if not checks[ticket.secret_tag]:
                del checks[ticket.secret_tag]
            if not checks:
                del self._checking[ticket.name]

    def put(self, ticket: Ticket, login: CachedLogin, seconds_left: float | None = None) -> None:
        """Remember a login whose full check (`ticket`) just passed; `seconds_left`
        is how long its credential itself stayed valid (a token's expiry)."""
        ttl = self._ttl if seconds_left is None else min(self._ttl, seconds_left)
        until = ticket.started + ttl
        name = ticket.name
        if not valid_user_name(name):
            return
        now = self._clock()
        with self._lock:
            if until <= now or ticket.generation != self._generation:
                return
            if self._is_refused(name, now):
                return
            self._logins[ticket.key] = (until, login)
            self._logins.move_to_end(ticket.key)
            while len(self._logins) > self._entries:
                self._logins.popitem(last=False)

    def forget_all(self) -> None:
        """This process changed an account: its own answers follow at once,
        and no full check that began before stores what it read."""
        with self._lock:
            self._logins.clear()
            self._generation += 1

    def refused(self, name: str) -> None:
        """A login as `name` was refused here: trust none of its entries for a while."""
        if not valid_user_name(name):
            return  # never remembered, so nothing to turn off
        now = self._clock()
        with self._lock:
            self._refused[name] = now + self._refusal_window
            if len(self._refused) > self._entries:
                self._refused = {n: t for n, t in self._refused.items() if t > now}
            if len(self._refused) > self._entries:
                # Too many names to track: trust no entry until they age out,
                # rather than forget one (an attacker could flush a name out).
                self._all_refused_until = now + self._refusal_window
                self._refused.clear()

    def _is_refused(self, name: str, now: float) -> bool:
        if self._all_refused_until > now:
            return True
        until = self._refused.get(name)
        if until is None:
            return False
        if until <= now:
            del self._refused[name]
            return False
        return True
