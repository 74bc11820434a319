"""Driving the web pages with Flask's test client: users, sign-in, forms with their CSRF token."""

from __future__ import annotations

import html
import re
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from lfs_server.accounts import hash_password
from lfs_server.app import create_app
from lfs_server.db import User
from lfs_server.services import services
from lfs_server.settings import Settings

UI = "/.lfs/ui"
PASSWORD = "correct horse battery"
_CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


def make_app(data_dir: Path, **env: str) -> Flask:
    return create_app(Settings.from_env({"LFS_DATA_DIR": str(data_dir), **env}))


def add_user(app: Flask, name: str, *grants: tuple[str, str], admin: bool = False) -> User:
    db = services(app).db
    user = db.add_user(name, hash_password(PASSWORD), admin)
    for pattern, right in grants:
        db.set_grant(name, pattern, right)
    return user


def session_csrf(client: FlaskClient) -> str | None:
    with client.session_transaction(f"{UI}/") as session:
        return session.get("csrf")


def csrf(client: FlaskClient) -> str:
    """The session's CSRF token (a visitor gets one from the sign-in page)."""
    token = session_csrf(client)
    if token is None:
        client.get(f"{UI}/signin")
        token = session_csrf(client)
    assert token is not None
    return token


def form_tokens(response: TestResponse) -> set[str]:
    """The CSRF tokens the page's forms carry."""
    return set(_CSRF_RE.findall(response.get_data(as_text=True)))


def post(client: FlaskClient, page: str, token: str | None = None, **form: str) -> TestResponse:
    """POST a form of `page` with this session's CSRF token (or `token` when given)."""
    fields = {**form, "csrf": csrf(client) if token is None else token}
    return client.post(f"{UI}{page}", data=fields)


def sign_in(app: Flask, name: str, password: str = PASSWORD) -> FlaskClient:
    client = app.test_client()
    response = post(client, "/signin", name=name, password=password)
    assert response.status_code == 303, text(response)
    return client


def text(response: TestResponse) -> str:
    """The page's text, entities decoded (messages are compared as people read them)."""
    return html.unescape(response.get_data(as_text=True))
