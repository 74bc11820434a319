"""Basic credentials that are not ASCII base64 are a 401 in LFS JSON, never a 500."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from lfs_server.app import create_app
from tests.lfsapi import assert_lfs_error
from tests.stack import LFS_MEDIA_TYPE
from tests.unit.conftest import make_settings

NOT_ASCII = [
    "Basic \xff\xfe",  # the bytes a raw client sent, as WSGI hands them over (latin-1)
    "Basic dXNlcjpw\xe9",  # valid base64, then a character outside ASCII
    "Basic \u00e9\u00e9\u00e9\u00e9",
]
REQUESTS = [
    ("POST", "/team/proj.git/info/lfs/objects/batch", {"operation": "download", "objects": []}),
    ("GET", "/team/proj.git/info/lfs/locks", None),
    ("GET", "/metrics", None),
]


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return create_app(make_settings(tmp_path / "data", LFS_ANONYMOUS="read"))


@pytest.mark.parametrize("header", NOT_ASCII)
@pytest.mark.parametrize(("method", "path", "body"), REQUESTS)
def test_non_ascii_basic_credentials_are_malformed(
    app: Flask, header: str, method: str, path: str, body: object
) -> None:
    response = app.test_client().open(
        path,
        method=method,
        json=body,
        headers={"Authorization": header, "Accept": LFS_MEDIA_TYPE},
        content_type=LFS_MEDIA_TYPE if body is not None else None,
    )
    assert assert_lfs_error(response, 401)["message"] == "malformed Basic credentials"
    assert response.headers["LFS-Authenticate"].startswith("Basic realm=")
