"""Unit fixtures: the Flask app on a temp data dir, no nginx."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from lfs_server.app import create_app
from lfs_server.db import Database, open_database
from lfs_server.login_cache import LOGIN_CACHE_SECONDS
from lfs_server.services import services
from lfs_server.settings import Settings


def wait_out_login_cache() -> None:
    """An account change made outside this worker (the CLI, another replica:
    here, the database directly) is in force once the login cache's bound passed."""
    time.sleep(LOGIN_CACHE_SECONDS)


def nginx_commit(
    client: FlaskClient, header: dict[str, str], oid: str, upload: Path, size: int
) -> TestResponse:
    """upload-commit as nginx calls it once it wrote a PUT's body (Content-Length
    `size`) to `upload`."""
    headers = {
        **header,
        "X-LFS-Oid": oid,
        "X-LFS-Content-Length": str(size),
        "X-LFS-Upload-File": str(upload),
    }
    return client.post("/.lfs-internal/upload-commit", headers=headers)


def make_settings(data_dir: Path, **env: str) -> Settings:
    return Settings.from_env({"LFS_DATA_DIR": str(data_dir), **env})


def direct_s3_app(data_dir: Path, **env: str) -> Flask:
    """An app on the S3 store in direct mode, its bucket on a port nothing
    listens on: a direct-mode batch signs its URLs without calling the bucket."""
    app = create_app(
        make_settings(
            data_dir,
            LFS_ANONYMOUS="write",
            LFS_STORE="s3",
            LFS_S3_BUCKET="lfs-objects",
            LFS_S3_ENDPOINT="http://127.0.0.1:9",
            LFS_S3_TRANSFER="direct",
            **env,
        )
    )
    assert services(app).store.takes_direct_uploads
    return app


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return create_app(make_settings(tmp_path / "data", LFS_ANONYMOUS="write"))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def db(tmp_path: Path, database_env: dict[str, str]) -> Iterator[Database]:
    """The database contract's subject: each test runs on SQLite and on PostgreSQL."""
    database = open_database(make_settings(tmp_path / "data", **database_env))
    yield database
    database.close()
