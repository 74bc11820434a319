"""The web pages' app on a temp data dir (Flask test client, no nginx)."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from tests.web.pages import make_app


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return make_app(tmp_path / "data")
