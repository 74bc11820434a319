"""PostgreSQL stopped under a running app: batch and lock requests answer 429
with Retry-After (git-lfs retries those; a 5xx from batch is fatal to it),
/healthz answers 503, nothing shows the password, and requests succeed again
by themselves once the server is back."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from lfs_server.app import create_app
from lfs_server.services import services
from tests.engines.postgres import PostgresServer
from tests.unit.conftest import make_settings
from tests.waiting import wait_until

LFS = "application/vnd.git-lfs+json"
SECRET = "s3cr3t-never-shown"
OID = hashlib.sha256(b"x").hexdigest()


@pytest.fixture
def app(tmp_path: Path, postgres: PostgresServer) -> Iterator[Flask]:
    # trust authentication: the password is sent nowhere, but it is in the settings
    url = postgres.new_database().replace("postgresql://lfs@", f"postgresql://lfs:{SECRET}@")
    app = create_app(make_settings(tmp_path / "data", LFS_ANONYMOUS="write", LFS_DATABASE_URL=url))
    yield app
    services(app).db.close()


def batch(client: FlaskClient) -> tuple[int, dict[str, str], str]:
    response = client.post(
        "/team/proj.git/info/lfs/objects/batch",
        json={"operation": "download", "objects": [{"oid": OID, "size": 1}]},
        content_type=LFS,
        headers={"Accept": LFS},
    )
    return response.status_code, dict(response.headers), response.get_data(as_text=True)


def test_an_outage_is_retryable_and_heals_by_itself(
    app: Flask, postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = app.test_client()
    assert batch(client)[0] == 200
    postgres.stop()
    try:
        status, headers, body = batch(client)
        assert status == 429 and headers["Retry-After"] == "5", body
        assert headers["Content-Type"] == LFS and "message" in body
        locked = client.post(
            "/team/proj.git/info/lfs/locks",
            json={"path": "a.bin"},
            content_type=LFS,
            headers={"Accept": LFS},
        )
        assert locked.status_code == 429 and locked.headers["Retry-After"] == "5"
        health = client.get("/healthz")
        assert health.status_code == 503
        texts = [body, locked.get_data(as_text=True), health.get_data(as_text=True), caplog.text]
        assert all(SECRET not in text and "Traceback" not in text for text in texts)
    finally:
        postgres.start()
    assert wait_until(lambda: batch(client)[0] == 200, timeout=30, step=0.2), "never healed"
    assert client.get("/healthz").status_code == 200
    created = client.post("/team/proj.git/info/lfs/locks", json={"path": "a.bin"}, content_type=LFS)
    assert created.status_code == 201
