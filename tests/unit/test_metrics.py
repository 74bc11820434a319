"""Metrics in one process: who may read /metrics (LFS_METRICS), and what is counted.

The multi-worker behaviour is tested on the real stack in
tests/integration/test_metrics.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from werkzeug.http import parse_range_header

from lfs_server import metrics
from lfs_server.accounts import hash_password, new_token
from lfs_server.app import create_app
from lfs_server.db import SQLiteDatabase
from lfs_server.services import services
from lfs_server.settings import SettingsError
from lfs_server.tokens import Grant
from tests.lfsapi import assert_lfs_error, basic
from tests.unit.conftest import make_settings, nginx_commit

PASSWORD = "metrics password 42"
PASSWORD_HASH = hash_password(PASSWORD)
REMOTE = "10.0.0.7"


def make_app(tmp_path: Path, **env: str) -> Flask:
    app = create_app(make_settings(tmp_path / "data", **env))
    db: SQLiteDatabase = services(app).db
    db.add_user("boss", PASSWORD_HASH, is_admin=True)
    db.add_user("alice", PASSWORD_HASH, is_admin=False)
    db.set_grant("alice", "*", "write")
    return app


def scrape(client: FlaskClient, headers: dict[str, str] | None = None, ip: str = REMOTE):
    """GET /metrics as nginx forwards it: X-Forwarded-For is the peer address."""
    return client.get("/metrics", headers={**(headers or {}), "X-Forwarded-For": ip})


# ------------------------------------------------------------- the setting


def test_setting_defaults_to_admin(tmp_path: Path) -> None:
    assert make_settings(tmp_path).metrics == "admin"


@pytest.mark.parametrize("mode", ["off", "admin", "local", "public", " Public "])
def test_setting_accepts_the_modes(tmp_path: Path, mode: str) -> None:
    assert make_settings(tmp_path, LFS_METRICS=mode).metrics == mode.strip().lower()


def test_setting_refuses_other_values(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^LFS_METRICS: "):
        make_settings(tmp_path, LFS_METRICS="everyone")


# ------------------------------------------------------------- the access rule


def test_admin_mode_needs_a_server_admin(tmp_path: Path) -> None:
    client = make_app(tmp_path).test_client()
    anonymous = scrape(client)
    assert_lfs_error(anonymous, 401)
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic ")
    wrong = scrape(client, basic("boss", "not the password"))
    assert_lfs_error(wrong, 401)
    assert "WWW-Authenticate" in wrong.headers
    assert_lfs_error(scrape(client, basic("alice", PASSWORD)), 403)
    # Loopback is no exception in admin mode (a proxy on the same host).
    assert_lfs_error(scrape(client, ip="127.0.0.1"), 401)
    allowed = scrape(client, basic("boss", PASSWORD))
    assert allowed.status_code == 200
    assert allowed.mimetype == "text/plain"
    assert "lfs_http_requests_total" in allowed.get_data(as_text=True)


def test_admin_mode_accepts_an_admin_access_token(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    token_id, token, secret_hash = new_token()
    services(app).db.add_token("boss", token_id, secret_hash, "prometheus", None)
    assert scrape(app.test_client(), basic("boss", token)).status_code == 200


def test_local_mode_lets_loopback_peers_in(tmp_path: Path) -> None:
    client = make_app(tmp_path, LFS_METRICS="local").test_client()
    assert scrape(client, ip="127.0.0.1").status_code == 200
    assert scrape(client, ip="::1").status_code == 200
    assert_lfs_error(scrape(client, ip=REMOTE), 401)
    assert_lfs_error(scrape(client, ip="not an address"), 401)
    assert_lfs_error(scrape(client, basic("alice", PASSWORD)), 403)
    assert scrape(client, basic("boss", PASSWORD)).status_code == 200


def test_public_mode_needs_nothing(tmp_path: Path) -> None:
    client = make_app(tmp_path, LFS_METRICS="public").test_client()
    assert scrape(client).status_code == 200


def test_off_mode_is_not_found_even_for_admins(tmp_path: Path) -> None:
    client = make_app(tmp_path, LFS_METRICS="off").test_client()
    assert_lfs_error(scrape(client, basic("boss", PASSWORD)), 404)
    assert_lfs_error(scrape(client, ip="127.0.0.1"), 404)


# ------------------------------------------------------------- what is counted


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_requests_are_counted_by_endpoint_and_status(tmp_path: Path) -> None:
    client = make_app(tmp_path, LFS_ANONYMOUS="write").test_client()
    ok = sample("lfs_http_requests_total", endpoint="batch.batch", status="200")
    bad = sample("lfs_http_requests_total", endpoint="batch.batch", status="422")
    unmatched = sample("lfs_http_requests_total", endpoint="unmatched", status="404")
    timed = sample("lfs_batch_duration_seconds_count")
    body = {"operation": "download", "objects": [{"oid": "0" * 64, "size": 1}]}
    for _ in range(3):
        assert client.post("/t/r.git/info/lfs/objects/batch", json=body).status_code == 200
    assert client.post("/t/r.git/info/lfs/objects/batch", json=[]).status_code == 422
    assert client.get("/no/such/thing?secret=1").status_code == 404
    assert sample("lfs_http_requests_total", endpoint="batch.batch", status="200") == ok + 3
    assert sample("lfs_http_requests_total", endpoint="batch.batch", status="422") == bad + 1
    assert sample("lfs_http_requests_total", endpoint="unmatched", status="404") == unmatched + 1
    assert sample("lfs_batch_duration_seconds_count") == timed + 4
    assert sample("lfs_batch_duration_seconds_bucket", le="+Inf") >= timed + 4


def test_verify_failures_and_commits_are_counted(tmp_path: Path) -> None:
    app = make_app(tmp_path, LFS_ANONYMOUS="write")
    tmp_dir = app.config["LFS_SETTINGS"].upload_tmp_dir
    data = b"hello metrics"
    oid = hashlib.sha256(data).hexdigest()
    signer = services(app).signer

    def commit(payload: bytes, size: int) -> int:
        upload = tmp_dir / "upload-1"
        upload.write_bytes(payload)
        token = signer.sign(
            Grant("t/r", oid, size, "upload", "anonymous", "anonymous", "write"), 2**31
        )
        header = {"Authorization": f"Bearer {token}"}
        return nginx_commit(app.test_client(), header, oid, upload, size).status_code

    sha = sample("lfs_upload_verify_failures_total", reason="sha256")
    size = sample("lfs_upload_verify_failures_total", reason="size")
    stored = sample("lfs_objects_stored_total")
    received = sample("lfs_upload_bytes_total")
    assert commit(b"x" * len(data), len(data)) == 422
    assert commit(data[:-1], len(data)) == 422
    assert commit(data, len(data)) == 200
    assert commit(data, len(data)) == 200  # already stored: accepted, not stored again
    assert services(app).objects.size("t/r", oid) == len(data)
    assert sample("lfs_upload_verify_failures_total", reason="sha256") == sha + 1
    assert sample("lfs_upload_verify_failures_total", reason="size") == size + 1
    assert sample("lfs_objects_stored_total") == stored + 1
    assert sample("lfs_upload_bytes_total") == received + 2 * len(data)


@pytest.mark.parametrize(
    ("method", "range_header", "expected"),
    [
        ("GET", None, 100),
        ("HEAD", None, 0),
        ("GET", "bytes=0-9", 10),
        ("GET", "bytes=90-", 10),
        ("GET", "bytes=-5", 5),
        ("GET", "bytes=-500", 100),  # a suffix longer than the object: all of it
        ("GET", "bytes=50-1000", 50),
        ("GET", "bytes=200-300", 0),  # unsatisfiable: nginx answers 416
        ("GET", "bytes=0-1,5-6", 0),  # multi-range: not counted
        ("GET", "lines=1-2", 100),  # not bytes: nginx sends the whole object
        ("GET", "garbage", 100),
    ],
)
def test_download_bytes(method: str, range_header: str | None, expected: int) -> None:
    requested = parse_range_header(range_header) if range_header else None
    assert metrics.download_bytes(100, method, requested) == expected
