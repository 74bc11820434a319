"""`/.lfs/openapi.json`: the OpenAPI document of the HTTP API, shipped in the package.

tests/unit/test_openapi.py keeps it true: every route of the app is in it
and every operation in it is served (by the app, or by nginx for uploads).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from flask import Blueprint, Response

bp = Blueprint("apidoc", __name__)


@cache
def openapi_document() -> bytes:
    return resources.files("lfs_server").joinpath("openapi.json").read_bytes()


@bp.get("/.lfs/openapi.json")
def openapi() -> Response:
    response = Response(openapi_document(), mimetype="application/json")
    response.headers["Cache-Control"] = "no-cache"
    return response
