"""Render nginx.conf from the template in nginx/ and the settings."""

from __future__ import annotations

import re
import resource
import sys
from pathlib import Path

from lfs_server.cpus import available_cpus
from lfs_server.settings import Settings

_FIELD_RE = re.compile(r"\{\{([A-Z_]+)\}\}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
WORKER_CONNECTIONS = 4096
# A proxied upload holds two of worker_connections (client and upstream)
# and a temp file; a download a connection and the open object. Twice the
# connections plus some for logs and listeners is always enough.
SPARE_FILES = 64


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


class UnsafeValue(ValueError):
    """A value cannot go into nginx.conf as it is; the message names the setting."""


def escaped(value: str, setting: str, *, variables: bool) -> str:
    """`value` for use between double quotes in nginx.conf.

    Inside quotes nginx unescapes a backslash before a quote or a backslash,
    so spaces, `;`, `{` and quotes are all safe there. Refused: control
    characters, and a `$` in directives where nginx expands variables
    (alias, access_log, ssl_certificate), as nginx has no escape for it.
    """
    if _CONTROL_RE.search(value):
        raise UnsafeValue(f"{setting}: control characters are not allowed, got {value!r}")
    if variables and "$" in value:
        raise UnsafeValue(f"{setting}: a '$' is not allowed (nginx reads it as a variable)")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise UnsafeValue(f"{setting}: not valid UTF-8, got {value!r}") from None
    return value.replace("\\", "\\\\").replace('"', '\\"')


def worker_limits() -> tuple[int, int]:
    """worker_connections and a worker_rlimit_nofile that fits them.

    nginx never runs as root, so it cannot raise the hard limit: under a
    lower one the connections shrink to fit it instead of nginx failing to
    set the limit.
    """
    connections = WORKER_CONNECTIONS
    files = 2 * connections + SPARE_FILES
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < files:
        connections = max(1, (hard - SPARE_FILES) // 2)
        files = hard
    return connections, files


def tls_directives(settings: Settings) -> str:
    """Modern TLS only (1.2 with forward-secret AEAD ciphers, and 1.3)."""
    if settings.tls_cert is None or settings.tls_key is None:
        return ""
    cert = escaped(str(settings.tls_cert), "LFS_TLS_CERT", variables=True)
    key = escaped(str(settings.tls_key), "LFS_TLS_KEY", variables=True)
    return (
        f'        ssl_certificate "{cert}";\n'
        f'        ssl_certificate_key "{key}";\n'
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


def s3_snippets(settings: Settings) -> tuple[str, str]:
    """The bucket's upstream and internal download location, with the S3 store only."""
    if settings.store != "s3":
        return "", ""
    from lfs_server.store.s3_nginx import render_s3_nginx  # boto3: only for the S3 store

    try:
        snippets = render_s3_nginx(settings.s3)
    except ValueError as exc:
        raise UnsafeValue(f"LFS_S3_ENDPOINT: {exc}") from None
    return snippets.http, snippets.server


def render(
    settings: Settings,
    run_dir: Path,
    socket: Path,
    access_log: str,
    bucket: tuple[str, str] | None = None,
) -> str:
    """The config text; UnsafeValue when a path cannot be written into it safely.

    `bucket` is what s3_snippets gave for these settings, when it ran elsewhere.

    There is no `user` directive: the launcher starts nginx as the user that
    serves (never root), so master and workers run as that user.
    """
    host = settings.listen_host
    listen_host = f"[{host}]" if ":" in host else host
    listen = escaped(f"{listen_host}:{settings.listen_port}", "LFS_LISTEN", variables=False)
    connections, files = worker_limits()
    data_dir = "LFS_DATA_DIR"
    s3_http, s3_server = s3_snippets(settings) if bucket is None else bucket
    fields = {
        "WORKER_PROCESSES": str(available_cpus()),
        "WORKER_CONNECTIONS": str(connections),
        "WORKER_RLIMIT_NOFILE": str(files),
        "RUN_DIR": escaped(str(run_dir), "TMPDIR (the run dir)", variables=False),
        "ACCESS_LOG": escaped(access_log, "the access log", variables=True),
        "UPLOAD_TMP_DIR": escaped(str(settings.upload_tmp_dir), data_dir, variables=False),
        "OBJECTS_DIR": escaped(str(settings.objects_dir), data_dir, variables=True),
        "SOCKET": escaped(str(socket), "TMPDIR (the run dir)", variables=False),
        "LISTEN": f'"{listen}"' + (" ssl" if settings.tls_cert else ""),
        "TLS_DIRECTIVES": tls_directives(settings),
        "REALIP_DIRECTIVES": realip_directives(settings),
        "MAX_OBJECT_SIZE": str(settings.max_object_size),
        "STOP_GRACE": str(settings.stop_grace),
        "BUCKET_HTTP": s3_http,
        "BUCKET_SERVER": s3_server,
    }

    def field(match: re.Match[str]) -> str:
        return fields[match.group(1)]

    return _FIELD_RE.sub(field, template_text())
