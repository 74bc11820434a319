"""Who is signed in to the web pages, and the CSRF token of their forms.

The session lives in Flask's signed cookie (keyed from the server's secret
key; HttpOnly, SameSite=Strict, Secure behind HTTPS, path /.lfs/ui/). It
holds the user's name and uid, a fingerprint of their password hash, the time
of their last request and a CSRF token. It is checked against the database
on every request: a removed user (or one added again under the same name: a
new uid) or a changed password no longer matches, and neither does a session
idle for longer than LFS_SESSION_IDLE.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from flask import Flask, Request, current_app, g, request, session
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface

from lfs_server.db import User
from lfs_server.services import services

CSRF_FIELD = "csrf"
# The Flask session key is derived from the server's secret, never the secret itself.
_KEY_LABEL = b"lfs-server web session"


class WebError(Exception):
    """Answered as an HTML error page with this status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class SignInRequired(Exception):
    """Answered with a redirect to the sign-in page; `ended`: a session just ran out."""

    def __init__(self, ended: bool) -> None:
        super().__init__("sign in required")
        self.ended = ended


class PagesOnlySessions(SecureCookieSessionInterface):
    """Flask's signed cookie session, opened only for the web pages.

    The cookie is scoped to the pages' path, so no other request carries
    it; opening it anyway (a signing serializer built, cookies parsed) was
    an eighth of every transfer request's time. Elsewhere `session` is
    Flask's null session, which refuses to be written.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if request.path != self.prefix and not request.path.startswith(f"{self.prefix}/"):
            return None
        return super().open_session(app, request)


def session_key(secret: bytes) -> bytes:
    return hmac.new(secret, _KEY_LABEL, hashlib.sha256).digest()


def now() -> float:
    """The clock sessions age by (tests replace it)."""
    return time.time()


def _fingerprint(password_hash: str) -> str:
    key = current_app.secret_key
    assert isinstance(key, bytes)
    return hmac.new(key, password_hash.encode(), hashlib.sha256).hexdigest()[:32]


def sign_in(user: User) -> None:
    """A new session for `user` (a fresh CSRF token too: none carries over)."""
    assert user.password_hash is not None
    session.clear()
    session.update(
        name=user.name,
        uid=user.uid,
        fp=_fingerprint(user.password_hash),
        seen=int(now()),
        csrf=secrets.token_urlsafe(32),
    )


def sign_out() -> None:
    session.clear()


def signed_in_user() -> User | None:
    """The signed-in user, once per request; a session that no longer holds is cleared."""
    if "lfs_web_user" in g:
        return g.lfs_web_user
    user = None
    name = session.get("name")
    if isinstance(name, str):
        user = _still_valid(name)
        g.lfs_web_session_ended = user is None
        if user is None:
            session.clear()
        elif int(now()) != session.get("seen"):
            session["seen"] = int(now())
    g.lfs_web_user = user
    return user


def _still_valid(name: str) -> User | None:
    user = services().db.get_user(name)
    if user is None or user.password_hash is None or user.uid != session.get("uid"):
        return None
    if not hmac.compare_digest(str(session.get("fp", "")), _fingerprint(user.password_hash)):
        return None
    seen = session.get("seen")
    if not isinstance(seen, int) or now() - seen > services().settings.session_idle:
        return None
    return user


def need_user() -> User:
    """The signed-in user; else a redirect to the sign-in page."""
    user = signed_in_user()
    if user is None:
        raise SignInRequired(ended=bool(g.get("lfs_web_session_ended")))
    return user


def csrf_token() -> str:
    """This session's CSRF token (made on first use, e.g. by the sign-in form)."""
    token = session.get(CSRF_FIELD)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[CSRF_FIELD] = token
    return token


def check_csrf() -> None:
    """before_request of every POST: the form's token must be this session's."""
    expected = session.get(CSRF_FIELD)
    sent = request.form.get(CSRF_FIELD, "")
    if not isinstance(expected, str) or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise WebError(
            403,
            "This form has expired or did not come from this site: nothing was changed. "
            "Reload the page and try again.",
        )
