"""LFS JSON errors: the only error shape a client ever sees from Flask."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, json
from werkzeug.exceptions import HTTPException

LFS_MEDIA_TYPE = "application/vnd.git-lfs+json"
DOCS_URL = "https://github.com/git-lfs/git-lfs/tree/main/docs/api"


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

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        app.logger.exception("unhandled error")
        return error_response(500, "internal server error")
