"""The launcher: nginx in front, gunicorn behind a unix socket, supervised.

The same command runs on a laptop, in the tests and as the Docker entrypoint
(PID 1): it reaps every child, forwards SIGTERM/SIGINT as a graceful stop
and exits non-zero when either server dies, so a supervisor restarts it.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lfs_server import nginx_conf
from lfs_server.settings import WILDCARD_HOSTS, Settings

STOP_GRACE_SECONDS = 6.0
START_TIMEOUT_SECONDS = 30.0


class LaunchError(Exception):
    """Start-up failed for a reason the operator can fix; the message says which."""


def find_nginx(name: str) -> str:
    """The nginx binary: Debian puts it in /usr/sbin, often not on a user's PATH."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
    found = shutil.which(name, path=search)
    if not found:
        raise LaunchError(
            f"nginx not found (LFS_NGINX={name}): install it (Debian: apt-get install nginx)"
        )
    return found


def check_port_free(settings: Settings) -> None:
    family = socket.AF_INET6 if ":" in settings.listen_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.listen_host, settings.listen_port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise LaunchError(
                    f"LFS_LISTEN: {settings.listen_host}:{settings.listen_port} is already in use"
                ) from None
            raise LaunchError(
                f"LFS_LISTEN: cannot listen on that address ({exc.strerror})"
            ) from None


def sweep_stale_uploads(settings: Settings, older_than: float = 3600.0) -> int:
    """Remove temp files a crash left behind; live uploads keep a fresh mtime."""
    removed = 0
    cutoff = time.time() - older_than
    for entry in os.scandir(settings.upload_tmp_dir):
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:
            continue
    return removed


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping = False

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stopping = True

    def start(self, run_dir: Path) -> None:
        nginx = find_nginx(self.settings.nginx)
        check_port_free(self.settings)
        socket_path = run_dir / "gunicorn.sock"
        conf = run_dir / "nginx.conf"
        conf.write_text(nginx_conf.render(self.settings, run_dir, socket_path, "/dev/stdout"))
        checked = subprocess.run(
            [nginx, "-t", "-q", "-p", str(run_dir), "-c", str(conf), "-e", "stderr"],
            capture_output=True,
            text=True,
        )
        if checked.returncode != 0:
            raise LaunchError(f"nginx rejected its configuration: {checked.stderr.strip()}")
        self.children["gunicorn"] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--bind",
                f"unix:{socket_path}",
                "--workers",
                str(self.settings.workers),
                "--worker-class",
                "gthread",
                "--threads",
                "8",
                "--timeout",
                "120",
                "--graceful-timeout",
                str(int(STOP_GRACE_SECONDS) - 1),
                "--keep-alive",
                "75",
                "--log-level",
                "warning",
                "lfs_server.wsgi:app",
            ],
            # XDG_RUNTIME_DIR: gunicorn >= 25.1 puts its control socket there (not in ~/.gunicorn).
            env={
                **os.environ,
                "LFS_DATA_DIR": str(self.settings.data_dir),
                "XDG_RUNTIME_DIR": str(run_dir),
            },
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not socket_path.exists():
            if self.children["gunicorn"].poll() is not None:
                raise LaunchError("gunicorn exited during start-up (see the messages above)")
            if time.monotonic() > deadline or self.stopping:
                raise LaunchError("gunicorn did not start in time")
            time.sleep(0.05)
        self.children["nginx"] = subprocess.Popen(
            [nginx, "-p", str(run_dir), "-c", str(conf), "-e", "stderr"]
        )

    def wait(self) -> int:
        """Reap children until a stop signal (exit 0) or a child dies (exit 1)."""
        while not self.stopping:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid, status = 0, 0
            if pid == 0:
                time.sleep(0.1)
                continue
            for name, child in self.children.items():
                if child.pid == pid:
                    child.returncode = os.waitstatus_to_exitcode(status)
                    print(
                        f"lfs-server: {name} exited ({child.returncode}); stopping", file=sys.stderr
                    )
                    return 1
        return 0

    def stop(self) -> None:
        """Graceful stop (nginx QUIT, gunicorn TERM), forced after a grace period."""
        graceful = {"nginx": signal.SIGQUIT, "gunicorn": signal.SIGTERM}
        for name, child in self.children.items():
            if child.returncode is None:
                child.send_signal(graceful[name])
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in self.children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        run_dir = Path(tempfile.mkdtemp(prefix="lfs-server-"))
        try:
            self.start(run_dir)
            announce(self.settings)
            return self.wait()
        finally:
            self.stop()
            shutil.rmtree(run_dir, ignore_errors=True)


def announce(settings: Settings) -> None:
    url = settings.public_url
    if settings.listen_host in WILDCARD_HOSTS and not os.environ.get("LFS_PUBLIC_URL", "").strip():
        print(
            f"lfs-server: warning: LFS_PUBLIC_URL is unset, so hrefs name {url}; "
            "set it to the address clients use",
            file=sys.stderr,
        )
    print(
        f"lfs-server: serving on {url} (data in {settings.data_dir})\n"
        f"  in a git repository:  git config lfs.url {url}/<team>/<project>.git/info/lfs",
        file=sys.stderr,
        flush=True,
    )


def serve(settings: Settings) -> int:
    for path in (settings.objects_dir, settings.upload_tmp_dir):
        path.mkdir(parents=True, exist_ok=True)
    sweep_stale_uploads(settings)
    try:
        return Supervisor(settings).run()
    except LaunchError as exc:
        print(f"lfs-server: {exc}", file=sys.stderr)
        return 2
