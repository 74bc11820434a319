"""Start the real stack (`lfs-server serve`: nginx + gunicorn) for a test."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import requests

from tests.stores import LOCAL, BucketView, StoreEnv
from tests.waiting import wait_until

LFS_MEDIA_TYPE = "application/vnd.git-lfs+json"
CLI = [sys.executable, "-m", "lfs_server.cli"]
LAUNCHER = [*CLI, "serve"]


def run_cli(
    env: dict[str, str], *args: str, stdin: str = "", timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    """Run an `lfs-server` command with `env` as its whole environment."""
    return subprocess.run(
        [*CLI, *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Stack:
    """One server on 127.0.0.1 with its own data dir; stopped by its own PID."""

    def __init__(self, root: Path, store: StoreEnv | None = None, **env: str) -> None:
        self.root = root
        self.store = store or StoreEnv(LOCAL)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = root / "data"
        self.log = root / "server.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in self.store.unset},
            "LFS_DATA_DIR": str(self.data_dir),
            "LFS_LISTEN": f"127.0.0.1:{self.port}",
            "LFS_WORKERS": "2",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Stack:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(LAUNCHER, env=self.env, stdout=log, stderr=log)
        if wait_until(self.healthy, timeout, step=0.1):
            return self
        self.stop()
        raise RuntimeError(f"server did not become healthy:\n{self.log.read_text()}")

    def healthy(self) -> bool:
        """Whether /healthz answers 200; an error once the server has exited."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{self.log.read_text()}")
        try:
            return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False  # not listening yet, or too busy to answer in time: ask again

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """Run an `lfs-server` admin command against this server's data dir."""
        return run_cli(self.env, *args, stdin=stdin)

    def add_user(self, name: str, password: str, *grants: tuple[str, str]) -> None:
        done = self.cli("user", "add", name, "--password-stdin", stdin=password + "\n")
        assert done.returncode == 0, done.stderr
        for pattern, right in grants:
            done = self.cli("grant", name, pattern, right)
            assert done.returncode == 0, done.stderr

    def lfs_base(self, repo: str) -> str:
        return f"{self.url}/{repo}.git/info/lfs"

    def batch(self, repo: str, body: object, **kwargs: object) -> requests.Response:
        headers = {"Accept": LFS_MEDIA_TYPE, "Content-Type": f"{LFS_MEDIA_TYPE}; charset=utf-8"}
        return requests.post(
            f"{self.lfs_base(repo)}/objects/batch", json=body, headers=headers, timeout=30, **kwargs
        )

    @property
    def bucket(self) -> BucketView | None:
        """The stack's bucket on an S3 store, else None."""
        return self.store.bucket

    def upload_tmp_files(self) -> list[Path]:
        return sorted((self.data_dir / "tmp" / "uploads").glob("*"))
