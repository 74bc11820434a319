"""`/healthz`: 200 only when the database answers, the store can take objects
and the launcher's Prehasher (when there is one) runs.

Every check is read-only, so a probe every few seconds writes nothing.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from lfs_server.db import DatabaseUnavailable
from lfs_server.errors import lfs_json
from lfs_server.services import services

OK = "ok"

bp = Blueprint("health", __name__)


def run_checks() -> dict[str, str]:
    """Each check's name and "ok", or a short fixed reason (never a path)."""
    app = services()
    return {"database": _database(), **app.store.health(), **app.verifier.health()}


def _database() -> str:
    try:
        services().db.schema_version()  # a read of the file's header
    except DatabaseUnavailable as exc:
        current_app.logger.warning("health check: %s", exc)
        return "not answering"
    except Exception:  # whatever the backend raises, it did not answer
        current_app.logger.exception("health check: the database did not answer")
        return "not answering"
    return OK


@bp.get("/healthz")
def healthz() -> Response:
    checks = run_checks()
    failed = [f"{name} {state}" for name, state in checks.items() if state != OK]
    if failed:
        body = {
            "message": f"unhealthy: {', '.join(failed)}",
            "status": "unhealthy",
            "checks": checks,
        }
        return lfs_json(body, 503)
    return lfs_json({"status": OK, "checks": checks})
