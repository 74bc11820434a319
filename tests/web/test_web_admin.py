"""Admin pages: only server admins; users, grants and status with the CLI's rules;
bad input gives a clear message and changes nothing."""

from __future__ import annotations

import pytest
from flask import Flask

from lfs_server.services import services
from tests.web.pages import PASSWORD, UI, add_user, post, sign_in, text

PAGES = ["/admin/users", "/admin/status"]


@pytest.fixture
def app(app: Flask) -> Flask:
    add_user(app, "root", admin=True)
    add_user(app, "alice", ("team/*", "write"))
    return app


@pytest.mark.parametrize("page", PAGES)
def test_only_server_admins_see_the_admin_pages(app: Flask, page: str) -> None:
    assert app.test_client().get(f"{UI}{page}").status_code == 303
    response = sign_in(app, "alice").get(f"{UI}{page}")
    assert response.status_code == 403
    assert "for server admins only" in text(response)
    assert sign_in(app, "root").get(f"{UI}{page}").status_code == 200


def test_the_admin_links_show_only_to_admins(app: Flask) -> None:
    assert "Users and grants" not in text(sign_in(app, "alice").get(f"{UI}/tokens"))
    assert "Users and grants" in text(sign_in(app, "root").get(f"{UI}/tokens"))


@pytest.mark.parametrize(
    ("path", "form"),
    [
        ("/admin/users", {"action": "add", "name": "mallory", "password": PASSWORD}),
        ("/admin/users", {"action": "make-admin", "name": "alice"}),
        ("/admin/users", {"action": "remove", "name": "root"}),
        ("/admin/grants", {"action": "set", "name": "alice", "pattern": "*", "right": "admin"}),
    ],
)
def test_a_non_admin_changes_nothing(app: Flask, path: str, form: dict[str, str]) -> None:
    client = sign_in(app, "alice")
    assert post(client, path, **form).status_code == 403
    db = services(app).db
    assert sorted(u.name for u in db.list_users()) == ["alice", "root"]
    assert [(g.user, g.pattern, g.right) for g in db.list_grants()] == [
        ("alice", "team/*", "write")
    ]
    alice = db.get_user("alice")
    assert alice is not None and not alice.is_admin


def test_an_admin_adds_resets_promotes_and_removes_users(app: Flask) -> None:
    client = sign_in(app, "root")
    db = services(app).db
    response = post(client, "/admin/users", action="add", name="bob", password="bob's secret")
    assert "User bob is added." in text(response)
    assert services(app).credentials.check("bob", "bob's secret") is not None
    bob = sign_in(app, "bob", "bob's secret")
    response = post(client, "/admin/users", action="password", name="bob", password="new secret!")
    assert "The password of bob is reset" in text(response)
    assert bob.get(f"{UI}/tokens").status_code == 303  # the reset ended bob's session
    post(client, "/admin/users", action="make-admin", name="bob")
    assert db.get_user("bob").is_admin  # type: ignore[union-attr]
    post(client, "/admin/users", action="drop-admin", name="bob")
    assert not db.get_user("bob").is_admin  # type: ignore[union-attr]
    response = post(client, "/admin/users", action="remove", name="bob")
    assert "User bob is removed" in text(response)
    assert db.get_user("bob") is None


def test_an_admin_sets_and_removes_grants(app: Flask) -> None:
    client = sign_in(app, "root")
    db = services(app).db
    response = post(
        client, "/admin/grants", action="set", name="alice", pattern="x/y.git", right="read"
    )
    assert "alice has read on x/y." in text(response)
    assert ("x/y", "read") in [(g.pattern, g.right) for g in db.list_grants("alice")]
    response = post(client, "/admin/grants", action="remove", name="alice", pattern="x/y")
    assert "alice no longer has a grant on x/y." in text(response)
    assert [g.pattern for g in db.list_grants("alice")] == ["team/*"]


@pytest.mark.parametrize(
    ("path", "form", "message"),
    [
        (
            "/admin/users",
            {"action": "add", "name": "", "password": PASSWORD},
            "User name is required.",
        ),
        ("/admin/users", {"action": "add", "name": "x" * 65, "password": PASSWORD}, "too long"),
        (
            "/admin/users",
            {"action": "add", "name": "bad\x07", "password": PASSWORD},
            "control characters",
        ),
        ("/admin/users", {"action": "add", "name": "a b", "password": PASSWORD}, "only letters"),
        (
            "/admin/users",
            {"action": "add", "name": "anonymous", "password": PASSWORD},
            "only letters",
        ),
        ("/admin/users", {"action": "add", "name": "bob", "password": "short"}, "at least 8"),
        ("/admin/users", {"action": "add", "name": "bob", "password": "p" * 1025}, "too long"),
        (
            "/admin/users",
            {"action": "add", "name": "bob", "password": "pass\x00word"},
            "control characters",
        ),
        (
            "/admin/users",
            {"action": "add", "name": "alice", "password": PASSWORD},
            "already a user alice",
        ),
        ("/admin/users", {"action": "remove", "name": "nobody"}, "There is no user nobody"),
        ("/admin/users", {"action": "remove", "name": "root"}, "cannot remove yourself"),
        ("/admin/users", {"action": "drop-admin", "name": "root"}, "cannot drop your own admin"),
        ("/admin/users", {"action": "explode", "name": "alice"}, "Unknown action"),
        (
            "/admin/grants",
            {"action": "set", "name": "alice", "pattern": "", "right": "read"},
            "Pattern is required.",
        ),
        (
            "/admin/grants",
            {"action": "set", "name": "alice", "pattern": "../x", "right": "read"},
            "Pattern must be",
        ),
        (
            "/admin/grants",
            {"action": "set", "name": "alice", "pattern": "a" * 901, "right": "read"},
            "too long",
        ),
        (
            "/admin/grants",
            {"action": "set", "name": "alice", "pattern": "x\ty", "right": "read"},
            "control characters",
        ),
        (
            "/admin/grants",
            {"action": "set", "name": "alice", "pattern": "x", "right": "owner"},
            "Choose a right",
        ),
        (
            "/admin/grants",
            {"action": "set", "name": "nobody", "pattern": "x", "right": "read"},
            "There is no user",
        ),
        (
            "/admin/grants",
            {"action": "remove", "name": "alice", "pattern": "other/*"},
            "has no grant on other/*",
        ),
    ],
)
def test_bad_admin_input_says_why_and_changes_nothing(
    app: Flask, path: str, form: dict[str, str], message: str
) -> None:
    db = services(app).db
    before = (db.list_users(), db.list_grants())
    response = post(sign_in(app, "root"), path, **form)
    assert response.status_code in (400, 404, 409)
    assert message in text(response)
    assert (db.list_users(), db.list_grants()) == before


def test_the_status_page_shows_version_space_totals_and_health(app: Flask) -> None:
    from lfs_server.db import IndexedObject

    services(app).db.add_objects(
        [IndexedObject("a/b", "a" * 64, 2048, 1), IndexedObject("c/d", "a" * 64, 2048, 1)]
    )
    page = text(sign_in(app, "root").get(f"{UI}/admin/status"))
    assert '<dd id="version">0.1.0</dd>' in page
    assert '<dd id="repos">2</dd>' in page
    assert '<dd id="objects">2</dd>' in page
    assert '<dd id="stored">4.0 KiB</dd>' in page
    assert 'id="free"' in page and " of " in page
    assert "database: ok" in page
