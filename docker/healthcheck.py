"""The image's HEALTHCHECK: GET /healthz on the address nginx listens on.

Standard library only (no curl in the image). Follows the same settings as
the server: LFS_LISTEN (empty means the server's default 127.0.0.1:8080) and
LFS_TLS_CERT (set means https). A wildcard listen address is probed on
loopback. The certificate is not verified: this is a liveness probe of our
own nginx on loopback, and a self-signed or internal-CA certificate is normal.
Exit 0 when /healthz answers 200, 1 otherwise (the reason goes to stdout, which
`docker inspect` shows in .State.Health.Log).
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request

WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "*": "127.0.0.1"}


def healthz_url(env: dict[str, str]) -> str:
    listen = env.get("LFS_LISTEN", "").strip() or "127.0.0.1:8080"
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    host = WILDCARDS.get(host, host) or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if env.get("LFS_TLS_CERT", "").strip() else "http"
    return f"{scheme}://{host}:{port}/healthz"


def main() -> int:
    url = healthz_url(dict(os.environ))
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    # No proxy: an http_proxy in the container's environment must not catch loopback.
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    try:
        with opener.open(url, timeout=4) as response:
            status = response.status
    except Exception as exc:  # any failure means unhealthy; say which
        print(f"unhealthy: {url}: {exc}")
        return 1
    print(f"{url}: {status}")
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
