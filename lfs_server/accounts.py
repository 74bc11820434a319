"""Credentials: password hashes, personal access tokens, and a cheap check.

Passwords get Werkzeug's salted scrypt hash: slow on purpose, so a request
that had to verify one on every batch call would cap throughput. Successful
checks are therefore cached per worker, keyed by an HMAC of the name, the
secret and the *current* stored hash, read from the database on every
check: a password changed or a user removed, through this server or any
other on the same database, stops matching at the next check (which the
login cache in front, login_cache.py, makes at least once a second). Entries
live CACHE_SECONDS after their last use, and concurrent first checks of one
credential share a single scrypt.

Access tokens (`lfs_<id>_<secret>`) are random and long, so a SHA-256 of the
secret is a safe and fast way to store them; the id finds the row.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

from lfs_server.db import AccessToken, Database, User
from lfs_server.settings import SettingsError

CACHE_SECONDS = 30.0
CACHE_ENTRIES = 4096
TOKEN_PREFIX = "lfs_"
_TOKEN_RE = re.compile(r"lfs_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


RESERVED_NAMES = frozenset({"anonymous"})


def valid_user_name(name: str) -> bool:
    """Letters, digits and `._@-`; `anonymous` is taken by callers without credentials."""
    return _NAME_RE.fullmatch(name) is not None and name.lower() not in RESERVED_NAMES


def looks_like_token(secret: str) -> bool:
    """Shaped like an access token (`lfs_<id>_<secret>`), valid or not (such a
    secret is only ever checked as a token, never as a password)."""
    return _TOKEN_RE.fullmatch(secret) is not None


# Werkzeug is imported where a password is hashed or checked, not with this
# module: the launcher and the CLI use the rest of it without the web stack.


def hash_password(password: str) -> str:
    from werkzeug.security import generate_password_hash

    return generate_password_hash(password)


def password_matches(password_hash: str | None, password: str) -> bool:
    from werkzeug.security import check_password_hash

    return password_hash is not None and check_password_hash(password_hash, password)


def new_token() -> tuple[str, str, str]:
    """(token id, full token shown once, stored hash of its secret)."""
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return token_id, f"{TOKEN_PREFIX}{token_id}_{secret}", _hash_secret(secret)


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Login(NamedTuple):
    user: User
    expires_at: int | None  # a token's expiry (epoch seconds); None for a password


class CredentialChecker:
    """Answers "is this name + password (or token) valid?", cheaply when repeated."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache_key = secrets.token_bytes(32)
        self._cache: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()
        self._in_flight: dict[bytes, threading.Lock] = {}

    def check(
        self, name: str, secret: str, before_hash: Callable[[], None] = lambda: None
    ) -> User | None:
        """The user these credentials are valid for, or None.

        `before_hash` runs just before a password is hashed (never for a
        cached success or a token): the login brake counts the attempt there,
        and refuses it by raising.
        """
        login = self.check_login(name, secret, before_hash)
        return None if login is None else login.user

    def check_login(
        self, name: str, secret: str, before_hash: Callable[[], None] = lambda: None
    ) -> Login | None:
        """As check, and until when the credential itself is valid (a token's expiry)."""
        user = self.db.get_user(name)
        if user is None:
            return None
        token = _TOKEN_RE.fullmatch(secret)
        if token:
            stored = self._check_token(user, token.group(1), token.group(2))
            return None if stored is None else Login(user, stored.expires_at)
        if user.password_hash is None:
            return None
        key = hmac.new(
            self._cache_key, f"{name}\0{secret}\0{user.password_hash}".encode(), hashlib.sha256
        ).digest()
        if self._cached(key):
            return Login(user, None)
        # One slow hash per credential at a time: when a cached check ends, the
        # requests of a busy client wait for one scrypt instead of each running one.
        with self._lock:
            flight = self._in_flight.setdefault(key, threading.Lock())
        try:
            with flight:
                if not self._cached(key):
                    before_hash()
                    if not password_matches(user.password_hash, secret):
                        return None
                    self._remember(key)
        finally:
            with self._lock:
                self._in_flight.pop(key, None)
        return Login(user, None)

    def _cached(self, key: bytes) -> bool:
        """A hit also renews the entry, so an active user never waits for scrypt again."""
        now = time.monotonic()
        with self._lock:
            expires = self._cache.get(key)
            if expires is None or expires <= now:
                return False
            self._cache[key] = now + CACHE_SECONDS
            self._cache.move_to_end(key)
            return True

    def _remember(self, key: bytes) -> None:
        with self._lock:
            self._cache[key] = time.monotonic() + CACHE_SECONDS
            self._cache.move_to_end(key)
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)

    def _check_token(self, user: User, token_id: str, secret: str) -> AccessToken | None:
        """The user's stored token these credentials match, or None."""
        stored = self.db.get_token(token_id)
        if stored is None or stored.user != user.name:
            return None
        now = int(time.time())
        if stored.expires_at is not None and stored.expires_at <= now:
            return None
        if not hmac.compare_digest(stored.secret_hash, _hash_secret(secret)):
            return None
        if stored.last_used_at is None or now - stored.last_used_at >= 60:
            self.db.touch_token(token_id, now)
        return stored


def ensure_admin(db: Database, name: str, password: str) -> None:
    """Create or update an admin from LFS_ADMIN_USER/LFS_ADMIN_PASSWORD at start."""
    if not valid_user_name(name):
        raise SettingsError(f"LFS_ADMIN_USER: invalid user name {name!r}")
    if len(password) < 8:
        raise SettingsError("LFS_ADMIN_PASSWORD: needs at least 8 characters")
    user = db.get_user(name)
    if user is None:
        db.add_user(name, hash_password(password), is_admin=True)
        return
    db.set_admin(name, True)
    if not password_matches(user.password_hash, password):
        db.set_password(name, hash_password(password))
