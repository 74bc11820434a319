"""LFS JSON errors: the only error shape a client ever sees from Flask."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, json
from werkzeug.exceptions import HTTPException

from lfs_server.db import DatabaseUnavailable

LFS_MEDIA_TYPE = "application/vnd.git-lfs+json"
DOCS_URL = "https://github.com/git-lfs/git-lfs/tree/main/docs/api"
# Seconds a client is asked to wait while the database does not answer.
DATABASE_RETRY_AFTER = "5"


class LFSError(Exception):
    """Raised anywhere in a request to answer with an LFS JSON error."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def lfs_json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(json.dumps(body), status=status, mimetype=LFS_MEDIA_TYPE)
    response.headers.update(headers or {})
    return response


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return lfs_json({"message": message, "documentation_url": DOCS_URL}, status, headers)


def register_error_handlers(app: Flask) -> None:
    """Turn every failure into LFS JSON: never HTML, a traceback or a path."""

    @app.errorhandler(LFSError)
    def _lfs_error(exc: LFSError) -> Response:
        return error_response(exc.status, exc.message, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        response = error_response(exc.code or 500, exc.description or exc.name)
        if exc.code == 405 and exc.response is None:
            allowed = exc.get_headers()
            response.headers.update({k: v for k, v in allowed if k == "Allow"})
        return response

    @app.errorhandler(DatabaseUnavailable)
    def _database_unavailable(exc: DatabaseUnavailable) -> Response:
        # 429, not 503: git-lfs retries a 429 after Retry-After, and treats a
        # 5xx from batch as fatal. One line in the log, no traceback.
        app.logger.warning("%s", exc)
        return error_response(
            429,
            "the database is not answering: try again shortly",
            {"Retry-After": DATABASE_RETRY_AFTER},
        )

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        app.logger.exception("unhandled error")
        return error_response(500, "internal server error")
