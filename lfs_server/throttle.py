"""Brute-force brake: too many failed logins get 429 with Retry-After.

Counted in the shared database, so every worker sees them, per client
network (an IPv4 address, or the /64 of an IPv6 one: one host or site holds a
whole /64), per (user, client network), and per user across all networks
(a botnet guessing one password). A client that has not failed is never
slowed by the first two, so an attacker cannot lock the real user out by
failing on purpose. The per-user cap would do that, so it spares what the
attacker cannot use: networks that logged in as that user within
GOOD_LOGIN_SECONDS, and access tokens (unguessable, so failed tokens do not
count towards it either). The check runs before any password is hashed.
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


def check(db: Database, client: str, name: str, token: bool) -> None:
    """Refuse (429) a login attempt over a limit; `token`: the secret is token-shaped."""
    net = network(client)
    limits = _keys(net, name, token)
    now = time.time()
    counts = db.failures(list(limits), now)
    over = {key for key, limit in limits.items() if counts.get(key, 0) >= limit}
    if not over or (over == {_account_key(name)} and _logged_in_lately(db, name, net, now)):
        return
    raise LFSError(
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


def record_failure(db: Database, client: str, name: str, token: bool) -> None:
    db.add_failure(list(_keys(network(client), name, token)), time.time(), WINDOW_SECONDS)


def record_success(db: Database, client: str, user: User) -> None:
    """Remember that `user` logged in from this network (exempts it from the per-user cap)."""
    net = network(client)
    now = time.time()
    seen = db.last_login(user.id, net)
    if seen is None or now - seen >= GOOD_LOGIN_REFRESH:
        db.remember_login(user.id, net, now, now - GOOD_LOGIN_SECONDS)
