"""The web pages through nginx: their own CSP (own stylesheet, own forms), every
other security header once, no-store, and forms that reach the app."""

from __future__ import annotations

import requests

from tests.integration.helpers import web_sign_in
from tests.integration.test_hardening import SECURITY_HEADERS
from tests.stack import Stack

UI_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)


def test_pages_carry_their_own_csp_and_every_other_security_header(stack: Stack) -> None:
    for path in ("/.lfs/ui/signin", "/.lfs/ui/static/style.css", "/.lfs/ui/"):
        response = requests.get(f"{stack.url}{path}", timeout=10, allow_redirects=False)
        assert response.status_code in (200, 303), (path, response.status_code)
        expected = {**SECURITY_HEADERS, "content-security-policy": UI_CSP}
        for name, value in expected.items():
            assert response.headers.get(name) == value, (path, name, response.headers.get(name))
    page = requests.get(f"{stack.url}/.lfs/ui/signin", timeout=10)
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Content-Type"].startswith("text/html")
    css = requests.get(f"{stack.url}/.lfs/ui/static/style.css", timeout=10)
    assert css.headers["Content-Type"].startswith("text/css")


def test_the_api_keeps_the_strict_csp(stack: Stack) -> None:
    response = requests.get(f"{stack.url}/team/proj.git/info/lfs/locks", timeout=10)
    assert (
        response.headers["Content-Security-Policy"] == SECURITY_HEADERS["content-security-policy"]
    )


def test_a_sign_in_form_posted_through_nginx_signs_in(stack: Stack) -> None:
    stack.add_user("webby", "correct horse battery")
    browser = web_sign_in(stack, "webby", "correct horse battery")
    tokens = browser.get(f"{stack.url}/.lfs/ui/tokens", timeout=10, allow_redirects=False)
    assert tokens.status_code == 200
    assert "Signed in as" in tokens.text
