"""Sign in and out, and a user's own access tokens."""

from __future__ import annotations

import re
import time
from urllib.parse import urlsplit

from flask import Response, redirect, render_template, request, url_for

from lfs_server import throttle
from lfs_server.accounts import looks_like_token, new_token
from lfs_server.auth import client_address
from lfs_server.db import User
from lfs_server.errors import LFSError
from lfs_server.services import services
from lfs_server.web import session as web_session
from lfs_server.web.blueprint import bp
from lfs_server.web.forms import field
from lfs_server.web.session import WebError, need_user

MAX_NAME = 64
MAX_PASSWORD = 1024
MAX_NOTE = 200
# The expiry choices of the token form: label -> seconds (None: never).
EXPIRIES: dict[str, int | None] = {
    "7d": 7 * 86400,
    "30d": 30 * 86400,
    "90d": 90 * 86400,
    "365d": 365 * 86400,
    "never": None,
}
_TOKEN_ID_RE = re.compile(r"[0-9a-f]{12}")


def _page(template: str, status: int = 200, **context: object) -> tuple[str, int]:
    return render_template(template, **context), status


@bp.get("/")
def home() -> Response:
    need_user()
    return redirect(url_for("web.repositories"), 303)  # type: ignore[return-value]


@bp.get("/signin")
def signin() -> tuple[str, int] | Response:
    if web_session.signed_in_user() is not None:
        return redirect(url_for("web.home"), 303)  # type: ignore[return-value]
    ended = request.args.get("ended") == "1"
    return _page("signin.html", ended=ended, name="")


@bp.post("/signin")
def signin_post() -> tuple[str, int] | Response:
    name = request.form.get("name", "").strip()
    password = request.form.get("password", "")
    try:
        user = _check_password(name, password)
    except WebError as exc:
        return _page("signin.html", exc.status, error=exc.message, name=name[:MAX_NAME])
    web_session.sign_in(user)
    return redirect(url_for("web.home"), 303)  # type: ignore[return-value]


def _check_password(name: str, password: str) -> User:
    """The same brake as Basic auth, checked before the password is hashed."""
    if not name:
        raise WebError(400, "Enter your user name.")
    if not password:
        raise WebError(400, "Enter your password.")
    if len(name) > MAX_NAME or len(password) > MAX_PASSWORD:
        raise WebError(400, "Wrong user name or password.")
    if looks_like_token(password):
        raise WebError(400, "Sign in with your password: access tokens are for git only.")
    app = services()
    attempt = throttle.Attempt(app.db, client_address(), name, False)
    try:
        attempt.check()
        user = app.credentials.check(name, password, before_hash=attempt.count)
    except LFSError as exc:
        app.logins.refused(name)
        raise WebError(
            exc.status, "Too many failed sign-ins: try again in a few minutes."
        ) from None
    if user is None:
        attempt.failed()
        app.logins.refused(name)
        raise WebError(401, "Wrong user name or password.")
    attempt.succeeded(user)
    return user


@bp.post("/signout")
def signout() -> Response:
    web_session.sign_out()
    return redirect(url_for("web.signin"), 303)  # type: ignore[return-value]


@bp.get("/tokens")
def tokens() -> tuple[str, int]:
    return _tokens_page(need_user())


def _tokens_page(user: User, status: int = 200, **context: object) -> tuple[str, int]:
    mine = services().db.list_tokens(user.name)
    return _page("tokens.html", status, tokens=mine, expiries=EXPIRIES, **context)


@bp.post("/tokens")
def create_token() -> tuple[str, int]:
    user = need_user()
    try:
        note = field("note", "Note", max_length=MAX_NOTE)
        expiry = request.form.get("expires", "")
        if expiry not in EXPIRIES:
            raise WebError(400, "Choose an expiry from the list.")
    except WebError as exc:
        return _tokens_page(user, exc.status, error=exc.message)
    seconds = EXPIRIES[expiry]
    expires_at = None if seconds is None else int(time.time()) + seconds
    token_id, token, secret_hash = new_token()
    services().db.add_token(user.name, token_id, secret_hash, note, expires_at)
    # Shown in this response only: nothing keeps the token (nginx sends no-store).
    return _tokens_page(user, 201, created=token, snippets=_snippets(user.name, token))


def _snippets(name: str, token: str) -> dict[str, str]:
    url = urlsplit(services().settings.public_url)
    host = url.netloc
    approve = (
        f"git credential approve <<'EOF'\nprotocol={url.scheme}\nhost={host}\n"
        f"username={name}\npassword={token}\nEOF"
    )
    netrc = f"machine {url.hostname} login {name} password {token}"
    return {"approve": approve, "netrc": netrc}


@bp.post("/tokens/revoke")
def revoke_token() -> tuple[str, int]:
    user = need_user()
    token_id = request.form.get("token_id", "")
    db = services().db
    stored = db.get_token(token_id) if _TOKEN_ID_RE.fullmatch(token_id) else None
    if stored is None or stored.user != user.name:
        message = "You have no such token: nothing was revoked."
        return _tokens_page(user, 404, error=message)
    db.revoke_token(token_id)
    services().logins.forget_all()
    return _tokens_page(user, message=f"Token {token_id} is revoked.")
