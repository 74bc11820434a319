"""Brute-force brake: too many failed logins get 429 with Retry-After.

Counted in the shared database, so every worker sees them, per client
network (an IPv4 address, or the /64 of an IPv6 one: one host or site holds a
whole /64), per (user, client network), and per user across all networks
(a botnet guessing one password). A client that has not failed is never
slowed by the first two, so an attacker cannot lock the real user out by
failing on purpose. The per-user cap would do that, so it spares what the
attacker cannot use: networks that logged in as that user within
GOOD_LOGIN_SECONDS, and access tokens (unguessable, so failed tokens do not
count towards it either). The check runs before any password is hashed,
and a password is counted as a failure before it is hashed (Attempt).
"""

from __future__ import annotations

import ipaddress
import time

from lfs_server.db import Database, User
from lfs_server.errors import LFSError

WINDOW_SECONDS = 300.0
MAX_PER_CLIENT = 30
MAX_PER_USER_AND_CLIENT = 10
MAX_PER_USER = 50
GOOD_LOGIN_SECONDS = 30 * 86400.0
# A network's last good login is written again at most this often, so a busy
# client does not make a database write out of every request.
GOOD_LOGIN_REFRESH = 86400.0
IPV6_GROUP = 64


def network(client: str) -> str:
    """The key of a client address: itself for IPv4, its /64 for IPv6."""
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return client
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/{IPV6_GROUP}", strict=False))
    return str(address)


def _account_key(name: str) -> str:
    return f"account:{name}"


def _keys(net: str, name: str, token: bool) -> dict[str, int]:
    keys = {f"client:{net}": MAX_PER_CLIENT, f"user:{name}@{net}": MAX_PER_USER_AND_CLIENT}
    if not token:
        keys[_account_key(name)] = MAX_PER_USER
    return keys


class Attempt:
    """One login attempt, as the brake sees it.

    `check` refuses (429) an attempt over a limit before anything else.
    A password about to be hashed is first counted as a failure (`count`),
    atomically with a second check in the database, so parallel guesses
    cannot all pass a check that none of them has yet counted against: at
    most a limit's worth of guesses is ever hashed per window. A success
    takes its count back. Attempts that hash nothing (access tokens, unknown
    users) are counted once they failed.
    """

    def __init__(self, db: Database, client: str, name: str, token: bool) -> None:
        self.db = db
        self.name = name
        self.net = network(client)
        self.limits = _keys(self.net, name, token)
        self.counted = False

    def check(self) -> None:
        now = time.time()
        counts = self.db.failures(list(self.limits), now)
        over = {key for key, limit in self.limits.items() if counts.get(key, 0) >= limit}
        if over and not self._spared(over, now):
            raise _too_many()

    def count(self) -> None:
        now = time.time()
        over = self.db.reserve_failure(self.limits, now, WINDOW_SECONDS, frozenset())
        if over:
            # Nothing was counted. Spared from the per-user cap, the attempt
            # is counted unless another limit filled meanwhile.
            if not self._spared(over, now):
                raise _too_many()
            waived = frozenset({_account_key(self.name)})
            if self.db.reserve_failure(self.limits, now, WINDOW_SECONDS, waived) - waived:
                raise _too_many()
        self.counted = True

    def failed(self) -> None:
        if not self.counted:
            self.db.add_failure(list(self.limits), time.time(), WINDOW_SECONDS)

    def succeeded(self, user: User) -> None:
        """Take back the count, and remember that `user` logged in from this
        network (which exempts it from the per-user cap)."""
        now = time.time()
        if self.counted:
            self.db.forgive_failure(list(self.limits), now)
        seen = self.db.last_login(user.id, self.net)
        if seen is None or now - seen >= GOOD_LOGIN_REFRESH:
            self.db.remember_login(user.id, self.net, now, now - GOOD_LOGIN_SECONDS)

    def _spared(self, over: set[str], now: float) -> bool:
        """Only the per-user cap is hit, and this network logged in as the user lately."""
        return over == {_account_key(self.name)} and _logged_in_lately(
            self.db, self.name, self.net, now
        )


def _too_many() -> LFSError:
    return LFSError(
        429,
        "too many failed logins; try again later",
        {"Retry-After": str(int(WINDOW_SECONDS))},
    )


def _logged_in_lately(db: Database, name: str, net: str, now: float) -> bool:
    user = db.get_user(name)
    if user is None:
        return False
    seen = db.last_login(user.id, net)
    return seen is not None and now - seen < GOOD_LOGIN_SECONDS
