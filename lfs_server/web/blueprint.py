"""The web pages' blueprint: its prefix, cookie settings, CSRF check and error pages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, Response, redirect, render_template, request, url_for

from lfs_server.services import services
from lfs_server.units import human_bytes
from lfs_server.web import session as web_session
from lfs_server.web.session import SignInRequired, WebError

# Names beginning with a dot are never repository names (repos.py): no
# repository can take this path.
PREFIX = "/.lfs/ui"

bp = Blueprint(
    "web",
    __name__,
    url_prefix=PREFIX,
    template_folder="templates",
    static_folder="static",
)


def init_app(app: Flask, secret: bytes) -> None:
    """The session cookie: signed with a key derived from the server's signing
    key `secret` (LFS_SECRET_KEY, the key file, or the one shared in the
    database), scoped to PREFIX."""
    if not secret:
        raise ValueError("the web session needs the server's signing key")
    settings = services(app).settings
    app.secret_key = web_session.session_key(secret)
    app.session_interface = web_session.PagesOnlySessions(PREFIX)
    app.config.update(
        SESSION_COOKIE_NAME="lfs_session",
        SESSION_COOKIE_PATH=f"{PREFIX}/",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=settings.public_url.startswith("https:"),
    )
    app.register_blueprint(bp)


@bp.before_request
def _check_form() -> None:
    if request.method == "POST":
        web_session.check_csrf()


def when(timestamp: int | None) -> str:
    if timestamp is None:
        return "never"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def size(count: int) -> str:
    """Bytes for people: binary units, as in the settings."""
    return human_bytes(count, smallest="bytes")


@bp.context_processor
def _page_context() -> dict[str, Any]:
    return {
        "csrf_token": web_session.csrf_token,
        "csrf_field": web_session.CSRF_FIELD,
        "me": web_session.signed_in_user(),
        "when": when,
        "size": size,
    }


@bp.errorhandler(WebError)
def _web_error(exc: WebError) -> tuple[str, int]:
    return render_template("error.html", status=exc.status, message=exc.message), exc.status


@bp.errorhandler(SignInRequired)
def _sign_in(exc: SignInRequired) -> Response:
    target = url_for("web.signin", ended=1) if exc.ended else url_for("web.signin")
    return redirect(target, 303)  # type: ignore[return-value]
