"""`/healthz`: 200 only when the app answers and the store can take objects."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from lfs_server.errors import error_response, lfs_json

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    try:
        current_app.extensions["lfs_store"].check_writable()
    except OSError:
        return error_response(503, "object store is not writable")
    return lfs_json({"status": "ok"})
