"""A plain nginx load balancer in front of replicas, as a team would put one.

Round robin over the replicas' ports. A replica that refuses the connection,
drops it or answers 502/503 (its own nginx says 503 when its app is gone)
gets the request sent on to the next one, POST and PUT included
(`non_idempotent`): uploads are stored by their oid and batch and verify
change nothing, so sending one again is safe (a lock request sent again
after the first replica took the lock gets 409 with that lock), and nginx
buffers each request body before it picks a replica, so it still has the
body to send. A 429 (the database is not answering) is passed on: the
client retries it after Retry-After.

The replicas need LFS_PUBLIC_URL set to the balancer's URL (their hrefs
must point back at it) and LFS_TRUSTED_PROXIES naming it, so the
X-Forwarded-For it appends names the client for the login brake. Host is
passed on as the client sent it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

from lfs_server.serve import find_nginx
from tests.stack import free_port
from tests.waiting import wait_until

CONFIG = """\
{user}
worker_processes 2;
daemon off;
master_process on;
pid "{root}/nginx.pid";
error_log "{root}/error.log" error;

events {{
    worker_connections 1024;
}}

http {{
    access_log "{root}/access.log";
    client_body_temp_path "{root}/client_body";
    proxy_temp_path "{root}/proxy";
    fastcgi_temp_path "{root}/fastcgi";
    uwsgi_temp_path "{root}/uwsgi";
    scgi_temp_path "{root}/scgi";

    upstream replicas {{
{servers}
        keepalive 16;
    }}

    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_connect_timeout 5s;
        proxy_read_timeout 300s;
        proxy_next_upstream error timeout http_502 http_503 non_idempotent;
        proxy_next_upstream_tries {tries};
        location / {{
            proxy_pass http://replicas;
        }}
    }}
}}
"""


class LoadBalancer:
    """One nginx on a free 127.0.0.1 port, stopped by its own PID."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ports: list[int], timeout: float = 30.0) -> LoadBalancer:
        servers = "\n".join(f"        server 127.0.0.1:{port};" for port in ports)
        # As root nginx's workers would become `nobody`, locked out of root's temp dirs.
        user = "user root;" if os.geteuid() == 0 else ""
        conf = self.root / "nginx.conf"
        conf.write_text(
            CONFIG.format(
                user=user, root=self.root, servers=servers, port=self.port, tries=len(ports)
            )
        )
        with open(self.root / "nginx.out", "ab") as out:
            self.proc = subprocess.Popen(
                [find_nginx("nginx"), "-p", str(self.root), "-c", str(conf), "-e", "stderr"],
                stdout=out,
                stderr=out,
            )
        if not wait_until(self.listening, timeout):
            self.stop()
            raise RuntimeError(f"the load balancer did not start:\n{self.log_text()}")
        return self

    def listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"the load balancer exited:\n{self.log_text()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def log_text(self) -> str:
        return "\n".join(
            path.read_text(errors="replace")
            for path in (self.root / "nginx.out", self.root / "error.log")
            if path.exists()
        )

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
