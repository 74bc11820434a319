"""Who is calling (HTTP Basic: password or access token; or anonymous) and
whether they may do what they ask on a repository.

401 means "send credentials" (no or wrong ones; carries LFS-Authenticate so
git-lfs asks its credential helpers), 403 means "known, but not allowed".
A repository the caller may not read answers 403 too: repositories are only
names here, so hiding them behind 404 would hide nothing.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

from flask import g, request

from lfs_server import throttle
from lfs_server.access import level, right_for
from lfs_server.accounts import looks_like_token
from lfs_server.db import User
from lfs_server.errors import LFSError
from lfs_server.login_cache import CachedLogin, Ticket
from lfs_server.services import services

ANONYMOUS = "anonymous"
ANONYMOUS_UID = "anonymous"  # a user's uid is 32 hex digits: never this
CHALLENGE = {"LFS-Authenticate": 'Basic realm="Git LFS"'}
NO_GIT_PASSWORDS = (
    "passwords are not accepted for git; use an access token (lfs-server token create)"
)


@dataclass(frozen=True)
class Caller:
    """An authenticated user, or the anonymous caller (`name` is ANONYMOUS).

    `uid` is the identity transfer tokens and locks are bound to; `name` is
    only for people (messages, lock owners shown).
    """

    name: str
    uid: str
    right: str


def _basic_credentials() -> tuple[str, str] | None:
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        name, sep, secret = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except ValueError:
        # Not base64 (binascii.Error), not UTF-8 (UnicodeDecodeError), or a
        # character outside ASCII where base64 was expected (ValueError).
        raise LFSError(401, "malformed Basic credentials", CHALLENGE) from None
    if not sep:
        raise LFSError(401, "malformed Basic credentials", CHALLENGE)
    return name, secret


def client_address() -> str:
    """nginx overwrites X-Forwarded-For with its $remote_addr: the peer, or the
    client a trusted proxy names (LFS_TRUSTED_PROXIES), never a client's header."""
    return request.headers.get("X-Forwarded-For", request.remote_addr or "unknown")


def current_user() -> User | None:
    """The authenticated user of this request, or None for anonymous; once per request.

    A login this worker checked in full within the last second is taken
    from the login cache (see login_cache.py), with its grants.
    """
    if "lfs_user" in g:
        return g.lfs_user
    credentials = _basic_credentials()
    user = None
    if credentials is not None:
        name, secret = credentials
        client = client_address()
        logins = services().logins
        login = logins.lookup(name, secret, throttle.network(client))
        if isinstance(login, Ticket):
            ticket = login
            try:
                login = _full_login(ticket, secret, client)
            except BaseException:
                logins.refused(name)
                raise
            finally:
                logins.done(ticket)
        user = login.user
        g.lfs_grants = login.grants
    g.lfs_user = user
    return user


def _full_login(ticket: Ticket, secret: str, client: str) -> CachedLogin:
    """The brake, the credential and the grants, from the database; remembered."""
    app = services()
    name = ticket.name
    attempt = throttle.Attempt(app.db, client, name, looks_like_token(secret))
    attempt.check()
    checked = app.credentials.check_login(name, secret, before_hash=attempt.count)
    if checked is None:
        attempt.failed()
        raise LFSError(401, "wrong user name, password or token", CHALLENGE)
    user = checked.user
    attempt.succeeded(user)
    grants = () if user.is_admin else tuple(app.db.user_grants(user.id))
    login = CachedLogin(user, grants)
    seconds_left = None if checked.expires_at is None else checked.expires_at - time.time()
    app.logins.put(ticket, login, seconds_left)
    return login


def refuse_git_passwords() -> None:
    """LFS_GIT_PASSWORDS=deny: a Basic password that is not an access token is
    refused before it is checked (no scrypt, no count towards the brake)."""
    credentials = _basic_credentials()
    if credentials is not None and not looks_like_token(credentials[1]):
        raise LFSError(401, NO_GIT_PASSWORDS, CHALLENGE)


def caller_right(repo: str) -> tuple[User | None, str]:
    """The git APIs' caller (Batch, Locking) and their right on `repo`."""
    app = services()
    if app.settings.git_passwords == "deny":
        refuse_git_passwords()
    user = current_user()
    grants = g.get("lfs_grants") if user is not None else None
    return user, right_for(app.db, user, repo, app.settings.anonymous, grants)


def require(repo: str, needed: str) -> Caller:
    """The caller, when they hold `needed` on `repo`; otherwise 401 or 403."""
    user, right = caller_right(repo)
    if level(right) >= level(needed):
        if user is None:
            return Caller(ANONYMOUS, ANONYMOUS_UID, right)
        return Caller(user.name, user.uid, right)
    if user is None:
        raise LFSError(401, "credentials required", CHALLENGE)
    raise LFSError(403, f"{user.name} has no {needed} access to {repo}")


def still_allowed(name: str, uid: str, repo: str, needed: str) -> bool:
    """Re-check a transfer token's user at transfer time: revocations bite at once.

    The user must still be the very one the token was minted for: a user
    removed and added again under the same name has a new uid.
    """
    app = services()
    db = app.db
    user = None
    if uid != ANONYMOUS_UID:
        user = db.get_user(name)
        if user is None or user.uid != uid:
            return False
    return level(right_for(db, user, repo, app.settings.anonymous)) >= level(needed)
