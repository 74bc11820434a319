"""Unit fixtures: the Flask app on a temp data dir, no nginx."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from lfs_server.app import create_app
from lfs_server.settings import Settings


def make_settings(data_dir: Path, **env: str) -> Settings:
    return Settings.from_env({"LFS_DATA_DIR": str(data_dir), **env})


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return create_app(make_settings(tmp_path / "data", LFS_ANONYMOUS="write"))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
