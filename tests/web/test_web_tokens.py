"""A user's own access tokens on the web pages: create (shown once), list, revoke."""

from __future__ import annotations

import re
import time

import pytest
from flask import Flask

from lfs_server.accounts import new_token
from lfs_server.services import services
from tests.web.pages import UI, add_user, form_tokens, post, session_csrf, sign_in, text

_TOKEN_RE = re.compile(r"lfs_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


def test_a_new_token_is_shown_once_with_ready_snippets_and_works(app: Flask) -> None:
    add_user(app, "alice")
    client = sign_in(app, "alice")
    response = post(client, "/tokens", note="laptop", expires="30d")
    assert response.status_code == 201
    page = text(response)
    tokens = set(_TOKEN_RE.findall(page))
    assert len(tokens) == 1
    token = tokens.pop()
    port = services(app).settings.listen_port
    assert (
        "git credential approve <<'EOF'\nprotocol=http\n"
        f"host=127.0.0.1:{port}\nusername=alice\npassword={token}\nEOF"
    ) in page
    assert f"machine 127.0.0.1 login alice password {token}" in page
    assert services(app).credentials.check("alice", token) is not None
    (stored,) = services(app).db.list_tokens("alice")
    assert stored.note == "laptop"
    assert stored.expires_at is not None
    assert abs(stored.expires_at - (time.time() + 30 * 86400)) < 60
    listing = text(client.get(f"{UI}/tokens"))
    assert token not in listing
    assert "laptop" in listing and stored.id in listing


def test_the_list_shows_note_created_last_used_and_expiry(app: Flask) -> None:
    add_user(app, "alice")
    client = sign_in(app, "alice")
    post(client, "/tokens", note="never ends", expires="never")
    token = _TOKEN_RE.search(text(post(client, "/tokens", note="used", expires="7d")))
    assert token is not None
    assert services(app).credentials.check("alice", token.group(0)) is not None
    page = text(client.get(f"{UI}/tokens"))
    assert "never ends" in page and "used" in page
    assert "not yet" in page  # the first was never used
    assert page.count(time.strftime("%Y-%m-%d", time.gmtime())) >= 3  # created x2, last used


def test_every_form_carries_the_sessions_csrf_token(app: Flask) -> None:
    add_user(app, "alice")
    client = sign_in(app, "alice")
    post(client, "/tokens", note="laptop", expires="7d")
    page = client.get(f"{UI}/tokens")
    assert page.get_data(as_text=True).count("<form") == 3  # sign out, create, revoke
    assert form_tokens(page) == {session_csrf(client)}


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"note": "", "expires": "7d"}, "Note is required."),
        ({"note": "   ", "expires": "7d"}, "Note is required."),
        ({"note": "x" * 201, "expires": "7d"}, "Note is too long: at most 200 characters."),
        ({"note": "bad\x1b[31m", "expires": "7d"}, "Note must not contain control characters."),
        ({"note": "bad\u0085note", "expires": "7d"}, "Note must not contain control characters."),
        ({"note": "laptop", "expires": "1000y"}, "Choose an expiry from the list."),
        ({"note": "laptop"}, "Choose an expiry from the list."),
    ],
)
def test_bad_token_input_says_why_and_creates_nothing(
    app: Flask, form: dict[str, str], message: str
) -> None:
    add_user(app, "alice")
    client = sign_in(app, "alice")
    response = post(client, "/tokens", **form)
    assert response.status_code == 400
    assert message in text(response)
    assert services(app).db.list_tokens() == []


def test_revoking_a_token_ends_it(app: Flask) -> None:
    add_user(app, "alice")
    client = sign_in(app, "alice")
    token = _TOKEN_RE.search(text(post(client, "/tokens", note="laptop", expires="7d")))
    assert token is not None
    (stored,) = services(app).db.list_tokens("alice")
    response = post(client, "/tokens/revoke", token_id=stored.id)
    assert response.status_code == 200
    assert f"Token {stored.id} is revoked." in text(response)
    assert services(app).db.list_tokens() == []
    assert services(app).credentials.check("alice", token.group(0)) is None


@pytest.mark.parametrize("token_id", ["bob", "", "x" * 5000, "abc\x00", "../../etc"])
def test_revoking_another_users_or_no_token_says_so_and_changes_nothing(
    app: Flask, token_id: str
) -> None:
    add_user(app, "alice")
    add_user(app, "bob")
    db = services(app).db
    bob_id, bob_token, secret_hash = new_token()
    db.add_token("bob", bob_id, secret_hash, "bob's", None)
    client = sign_in(app, "alice")
    response = post(client, "/tokens/revoke", token_id=bob_id if token_id == "bob" else token_id)
    assert response.status_code == 404
    assert "You have no such token: nothing was revoked." in text(response)
    assert [t.id for t in db.list_tokens()] == [bob_id]
    assert services(app).credentials.check("bob", bob_token) is not None
    assert bob_id not in text(client.get(f"{UI}/tokens"))


def test_a_user_sees_only_their_own_tokens(app: Flask) -> None:
    add_user(app, "alice")
    add_user(app, "bob")
    bob_id, _, secret_hash = new_token()
    services(app).db.add_token("bob", bob_id, secret_hash, "bob's secret note", None)
    page = text(sign_in(app, "alice").get(f"{UI}/tokens"))
    assert bob_id not in page and "bob's secret note" not in page
    assert "You have no access tokens." in page
