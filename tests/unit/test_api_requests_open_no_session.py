"""Only the web pages open the signed cookie session; transfer and batch requests do not."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from lfs_server.web.session import PagesOnlySessions

LFS = "application/vnd.git-lfs+json"


def test_api_requests_never_build_the_session_serializer(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(app.session_interface, PagesOnlySessions)
    opened: list[str] = []
    real = PagesOnlySessions.get_signing_serializer

    def counting(self: PagesOnlySessions, app: Flask):  # type: ignore[no-untyped-def]
        from flask import request

        opened.append(request.path)
        return real(self, app)

    monkeypatch.setattr(PagesOnlySessions, "get_signing_serializer", counting)
    body = {"operation": "download", "objects": [{"oid": "a" * 64, "size": 1}]}
    response = client.post(
        "/team/proj.git/info/lfs/objects/batch", json=body, headers={"Accept": LFS}
    )
    assert response.status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get(f"/.lfs/download/{'a' * 64}").status_code == 401
    assert opened == []
    # The pages still have theirs: the sign-in page opens (and sets) the session.
    assert client.get("/.lfs/ui/signin").status_code == 200
    assert opened and all(path.startswith("/.lfs/ui/") for path in opened)
