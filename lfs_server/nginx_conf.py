"""Render nginx.conf from the template in nginx/ and the settings."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from lfs_server.settings import Settings

_FIELD_RE = re.compile(r"\{\{([A-Z_]+)\}\}")


TEMPLATE_PLACES = (
    Path(__file__).resolve().parent.parent / "nginx" / "nginx.conf.template",
    Path(sys.prefix) / "share" / "lfs-server" / "nginx.conf.template",
)


def template_text() -> str:
    """The template, from the source tree or where `pip install` put it."""
    for place in TEMPLATE_PLACES:
        if place.is_file():
            return place.read_text()
    raise FileNotFoundError("nginx.conf.template is missing from the installation")


def render(settings: Settings, run_dir: Path, socket: Path, access_log: str) -> str:
    host = settings.listen_host
    listen_host = f"[{host}]" if ":" in host else host
    user = ""
    if os.geteuid() == 0:
        # Workers must be able to hand temp files to the app for linking, so
        # they run as the same user as gunicorn.
        user = "user root root;"
    fields = {
        "USER_DIRECTIVE": user,
        "RUN_DIR": str(run_dir),
        "ACCESS_LOG": access_log,
        "UPLOAD_TMP_DIR": str(settings.upload_tmp_dir),
        "OBJECTS_DIR": str(settings.objects_dir),
        "SOCKET": str(socket),
        "LISTEN": f"{listen_host}:{settings.listen_port}",
        "TLS_DIRECTIVES": "",
        "MAX_OBJECT_SIZE": str(settings.max_object_size),
    }

    def field(match: re.Match[str]) -> str:
        return fields[match.group(1)]

    return _FIELD_RE.sub(field, template_text())
