"""Signing in and out of the web pages: cookie, CSRF, idle time, the login brake,
and sessions ending when the password changes or the user goes."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from lfs_server import throttle
from lfs_server.accounts import hash_password
from lfs_server.services import services
from lfs_server.web import session as web_session
from tests.web.pages import PASSWORD, UI, add_user, csrf, make_app, post, sign_in, text

PAGES = ["/", "/tokens"]


@pytest.mark.parametrize("page", PAGES)
def test_a_stranger_is_sent_to_sign_in(app: Flask, page: str) -> None:
    response = app.test_client().get(f"{UI}{page}")
    assert response.status_code == 303
    assert response.headers["Location"] == f"{UI}/signin"


def test_a_stranger_cannot_post_a_form_even_with_a_valid_csrf_token(app: Flask) -> None:
    client = app.test_client()
    response = post(client, "/tokens", note="mine", expires="7d")
    assert response.status_code == 303
    assert response.headers["Location"] == f"{UI}/signin"
    assert services(app).db.list_tokens() == []


def test_signing_in_with_the_right_password_opens_the_pages(app: Flask) -> None:
    add_user(app, "alice")
    client = sign_in(app, "alice")
    page = client.get(f"{UI}/tokens")
    assert page.status_code == 200
    assert "Signed in as" in text(page) and "alice" in text(page)


def test_the_session_cookie_is_httponly_samesite_strict_and_scoped(app: Flask) -> None:
    cookie = app.test_client().get(f"{UI}/signin").headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert f"Path={UI}/" in cookie
    assert "Secure" not in cookie  # plain http: a Secure cookie would never come back


def test_the_session_cookie_is_secure_behind_https(tmp_path: Path) -> None:
    app = make_app(tmp_path / "data", LFS_PUBLIC_URL="https://lfs.example.com")
    assert "Secure" in app.test_client().get(f"{UI}/signin").headers["Set-Cookie"]


@pytest.mark.parametrize(
    ("name", "password", "message"),
    [
        ("alice", "wrong password", "Wrong user name or password."),
        ("nobody", PASSWORD, "Wrong user name or password."),
        ("", PASSWORD, "Enter your user name."),
        ("alice", "", "Enter your password."),
        ("a" * 65, PASSWORD, "Wrong user name or password."),
        ("alice", "x" * 1025, "Wrong user name or password."),
        ("ali\x00ce", PASSWORD, "Wrong user name or password."),
        ("alice", f"lfs_{'0' * 12}_{'a' * 43}", "access tokens are for git only"),
    ],
)
def test_a_failed_sign_in_says_why_and_opens_nothing(
    app: Flask, name: str, password: str, message: str
) -> None:
    add_user(app, "alice")
    client = app.test_client()
    response = post(client, "/signin", name=name, password=password)
    assert response.status_code in (400, 401)
    assert message in text(response)
    assert client.get(f"{UI}/tokens").status_code == 303


def test_the_login_brake_stops_sign_ins_before_the_password_is_checked(app: Flask) -> None:
    add_user(app, "alice")
    client = app.test_client()
    for _ in range(throttle.MAX_PER_USER_AND_CLIENT):
        assert post(client, "/signin", name="alice", password="guess").status_code == 401
    response = post(client, "/signin", name="alice", password=PASSWORD)
    assert response.status_code == 429
    assert "Too many failed sign-ins" in text(response)
    assert client.get(f"{UI}/tokens").status_code == 303


def test_failed_sign_ins_count_towards_the_same_brake_as_basic_auth(app: Flask) -> None:
    add_user(app, "alice")
    client = app.test_client()
    for _ in range(throttle.MAX_PER_USER_AND_CLIENT):
        post(client, "/signin", name="alice", password="guess")
    with pytest.raises(Exception, match="too many failed logins"):
        throttle.Attempt(services(app).db, "127.0.0.1", "alice", False).check()


@pytest.mark.parametrize("token", [None, "", "forged"])
def test_a_post_without_the_sessions_csrf_token_is_refused_and_changes_nothing(
    app: Flask, token: str | None
) -> None:
    add_user(app, "alice")
    client = sign_in(app, "alice")
    data = {"note": "laptop", "expires": "7d"}
    if token is not None:
        data["csrf"] = token
    response = client.post(f"{UI}/tokens", data=data)
    assert response.status_code == 403
    assert "did not come from this site: nothing was changed" in text(response)
    assert services(app).db.list_tokens() == []


def test_sign_in_itself_needs_the_csrf_token(app: Flask) -> None:
    add_user(app, "alice")
    client = app.test_client()
    response = client.post(f"{UI}/signin", data={"name": "alice", "password": PASSWORD})
    assert response.status_code == 403
    assert client.get(f"{UI}/tokens").status_code == 303


def test_signing_in_makes_a_new_csrf_token(app: Flask) -> None:
    add_user(app, "alice")
    client = app.test_client()
    before = csrf(client)
    post(client, "/signin", name="alice", password=PASSWORD)
    assert csrf(client) != before


def test_a_session_ends_after_the_idle_time(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    add_user(app, "alice")
    clock = [1_000_000.0]
    monkeypatch.setattr(web_session, "now", lambda: clock[0])
    client = sign_in(app, "alice")
    idle = services(app).settings.session_idle
    assert idle == 8 * 3600
    clock[0] += idle - 1
    assert client.get(f"{UI}/tokens").status_code == 200  # a request renews the session
    clock[0] += idle - 1
    assert client.get(f"{UI}/tokens").status_code == 200
    clock[0] += idle + 1
    response = client.get(f"{UI}/tokens")
    assert response.status_code == 303
    assert response.headers["Location"] == f"{UI}/signin?ended=1"
    assert "Your session has ended" in text(client.get(response.headers["Location"]))
    assert client.get(f"{UI}/tokens").status_code == 303


def test_the_idle_time_is_a_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(tmp_path / "data", LFS_SESSION_IDLE="600")
    add_user(app, "alice")
    clock = [1_000_000.0]
    monkeypatch.setattr(web_session, "now", lambda: clock[0])
    client = sign_in(app, "alice")
    clock[0] += 601
    assert client.get(f"{UI}/tokens").status_code == 303


def test_a_changed_password_ends_the_session(app: Flask) -> None:
    add_user(app, "alice")
    client = sign_in(app, "alice")
    services(app).db.set_password("alice", hash_password("another password"))
    assert client.get(f"{UI}/tokens").status_code == 303


def test_the_same_password_set_again_ends_the_session_too(app: Flask) -> None:
    """A reset always ends sessions: the hash is salted anew."""
    add_user(app, "alice")
    client = sign_in(app, "alice")
    services(app).db.set_password("alice", hash_password(PASSWORD))
    assert client.get(f"{UI}/tokens").status_code == 303


def test_a_removed_user_is_signed_out(app: Flask) -> None:
    add_user(app, "alice")
    client = sign_in(app, "alice")
    services(app).db.remove_user("alice")
    assert client.get(f"{UI}/tokens").status_code == 303


def test_a_user_added_again_under_the_same_name_is_someone_else(app: Flask) -> None:
    add_user(app, "alice")
    client = sign_in(app, "alice")
    with client.session_transaction(f"{UI}/") as session:
        kept = dict(session)
    db = services(app).db
    db.remove_user("alice")
    add_user(app, "alice")
    # Even a copy of the old cookie (same name, same password) opens nothing.
    with client.session_transaction(f"{UI}/") as session:
        session.update(kept)
    assert client.get(f"{UI}/tokens").status_code == 303


def test_signing_out_ends_the_session(app: Flask) -> None:
    add_user(app, "alice")
    client = sign_in(app, "alice")
    response = post(client, "/signout")
    assert response.status_code == 303
    assert client.get(f"{UI}/tokens").status_code == 303


def test_an_api_post_as_a_form_is_still_refused(app: Flask) -> None:
    """The JSON rule still covers the API: only the web pages take forms."""
    response = app.test_client().post("/team/proj.git/info/lfs/locks", data={"path": "a.bin"})
    assert response.status_code == 415
