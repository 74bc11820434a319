"""nginx configuration that streams downloads from the bucket (proxy transfer).

A download's answer from the app is `X-Accel-Redirect:
/.lfs-internal/s3/<key>?<presigned GET query>` (S3Bucket.internal_get_location).
The internal location rendered here sends that signed GET to the bucket and
streams the answer to the client, so no object byte passes through Python on
the way out. A SigV4 presigned URL signs only the Host header: the client's
Range and conditional headers go along unchanged and the bucket answers 206
(or 304, 412, 416) itself.

nginx resolves the bucket's host name when it starts (a restart picks up DNS
changes).
"""

from __future__ import annotations

from dataclasses import dataclass

from lfs_server.settings import S3Settings
from lfs_server.store.s3_bucket import INTERNAL_PREFIX, bucket_origin, ca_bundle

UPSTREAM = "lfs_s3"
LFS_JSON = "application/vnd.git-lfs+json"

# What the bucket's answer becomes when nginx intercepts it: a missing
# object, a bad range or failed precondition keep their meaning; anything
# else (a refused signature, a failing or unreachable bucket) is the
# server's problem, which the client retries.
_ERROR_PAGES = (
    ("404", "404", "not found"),
    ("412", "412", "precondition failed"),
    ("416", "416", "requested range not satisfiable"),
    ("400 401 403 405 500 501 502 503 504", "503", "object storage unavailable; try again"),
)


@dataclass(frozen=True)
class NginxS3:
    http: str  # for the http {} block: the bucket as a kept-alive upstream
    server: str  # for the server {} block: the internal location and its error pages


def _quoted(value: str) -> str:
    if any(ch in value for ch in '"\\\n\r$;{}'):
        raise ValueError(f"cannot put {value!r} into nginx.conf")
    return f'"{value}"'


def render_s3_nginx(settings: S3Settings, ca_file: str | None = None) -> NginxS3:
    """The two snippets for these settings. `ca_file` is the CA bundle nginx
    verifies an https bucket with; by default the one boto3 uses."""
    origin = bucket_origin(settings)
    server_host = f"[{origin.host}]" if ":" in origin.host else origin.host
    http = (
        "    # The bucket, for downloads nginx streams from it (LFS_S3_ENDPOINT, or AWS S3).\n"
        f"    upstream {UPSTREAM} {{\n"
        f"        server {server_host}:{origin.port};\n"
        "        keepalive 16;\n"
        "    }\n"
    )
    tls = ""
    if origin.scheme == "https":
        tls = (
            "            proxy_ssl_server_name on;\n"
            f"            proxy_ssl_name {_quoted(origin.host)};\n"
            "            proxy_ssl_verify on;\n"
            "            proxy_ssl_verify_depth 4;\n"
            f"            proxy_ssl_trusted_certificate {_quoted(ca_file or ca_bundle())};\n"
            "            proxy_ssl_protocols TLSv1.2 TLSv1.3;\n"
            "            proxy_ssl_session_reuse on;\n"
        )
    pages = "".join(
        f"            error_page {codes} = @lfs_s3_{status};\n" for codes, status, _ in _ERROR_PAGES
    )
    named = "".join(
        f"        location @lfs_s3_{status} {{ default_type {LFS_JSON}; "
        f'return {status} \'{{"message":"{message}"}}\\n\'; }}\n'
        for _, status, message in _ERROR_PAGES
    )
    server = (
        "        # Downloads from the bucket: the app's X-Accel-Redirect names\n"
        f"        # {INTERNAL_PREFIX}<key>?<presigned GET query>. Only the headers set\n"
        "        # here reach the bucket (never the client's Authorization or cookies);\n"
        "        # the answer streams through memory buffers, never a temp file.\n"
        f"        location ^~ {INTERNAL_PREFIX} {{\n"
        "            internal;\n"
        f"            proxy_pass {origin.scheme}://{UPSTREAM}{origin.base_path};\n"
        "            proxy_method GET;\n"
        "            proxy_http_version 1.1;\n"
        "            proxy_pass_request_headers off;\n"
        "            proxy_pass_request_body off;\n"
        f"            proxy_set_header Host {_quoted(origin.netloc)};\n"
        '            proxy_set_header Connection "";\n'
        "            proxy_set_header Range $http_range;\n"
        "            proxy_set_header If-Range $http_if_range;\n"
        "            proxy_set_header If-None-Match $http_if_none_match;\n"
        "            proxy_set_header If-Modified-Since $http_if_modified_since;\n"
        "            proxy_hide_header x-amz-request-id;\n"
        "            proxy_hide_header x-amz-id-2;\n"
        "            proxy_buffering on;\n"
        "            proxy_buffer_size 16k;\n"
        "            proxy_buffers 8 64k;\n"
        "            proxy_busy_buffers_size 128k;\n"
        "            proxy_max_temp_file_size 0;\n"
        "            proxy_connect_timeout 10s;\n"
        "            proxy_read_timeout 60s;\n"
        "            proxy_intercept_errors on;\n"
        f"{pages}{tls}"
        "        }\n"
        f"{named}"
    )
    return NginxS3(http=http, server=server)
