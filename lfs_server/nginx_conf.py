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


def tls_directives(settings: Settings) -> str:
    """Modern TLS only (1.2 with forward-secret AEAD ciphers, and 1.3)."""
    if settings.tls_cert is None:
        return ""
    return (
        f"        ssl_certificate {settings.tls_cert};\n"
        f"        ssl_certificate_key {settings.tls_key};\n"
        "        ssl_protocols TLSv1.2 TLSv1.3;\n"
        "        ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
        "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
        "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;\n"
        "        ssl_prefer_server_ciphers off;\n"
        "        ssl_session_cache shared:lfs_tls:10m;\n"
        "        ssl_session_timeout 1d;\n"
        "        ssl_session_tickets off;\n"
        '        add_header Strict-Transport-Security "max-age=63072000" always;\n'
    )


def realip_directives(settings: Settings) -> str:
    """Behind trusted proxies, $remote_addr is the client they name in
    X-Forwarded-For (the right-most address not itself trusted); any other
    peer's header is ignored. Without trusted proxies nothing is rendered."""
    if not settings.trusted_proxies:
        return ""
    lines = [f"    set_real_ip_from {network};" for network in settings.trusted_proxies]
    lines += ["    real_ip_header X-Forwarded-For;", "    real_ip_recursive on;"]
    return "\n".join(lines) + "\n"


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
        "LISTEN": f"{listen_host}:{settings.listen_port}" + (" ssl" if settings.tls_cert else ""),
        "TLS_DIRECTIVES": tls_directives(settings),
        "REALIP_DIRECTIVES": realip_directives(settings),
        "MAX_OBJECT_SIZE": str(settings.max_object_size),
    }

    def field(match: re.Match[str]) -> str:
        return fields[match.group(1)]

    return _FIELD_RE.sub(field, template_text())
