"""A real PostgreSQL server for tests, from Debian's postgresql package.

`initdb` refuses to run as root, so as root the cluster belongs to the
`postgres` user (both commands run through runuser). The server listens on
a free 127.0.0.1 port and keeps its socket in its data dir; `trust`
authentication for the user `lfs`. Each test gets a database of its own
(`new_database`), so no test sees another's rows. `postgres` is the session's
server; a fault test may stop() and start() it (same port, same data).
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.prerequisites import skip_or_fail

USER = "lfs"
SYSTEM_USER = "postgres"


def binaries() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb and pg_ctl."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found and (found[-1].parent / "pg_ctl").exists() else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    """One PostgreSQL cluster in `root`, started and stopped with pg_ctl."""

    def __init__(self, root: Path, bin_dir: Path, settings: dict[str, str] | None = None) -> None:
        """`settings`: extra server settings (`-c name=value`) on top of the defaults."""
        self.bin_dir = bin_dir
        self.settings = dict(settings or {})
        self.data_dir = root / "cluster"
        self.log = root / "postgres.log"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        self._count = 0
        self.data_dir.mkdir()
        if self.as_root:
            shutil.chown(root, SYSTEM_USER)
            shutil.chown(self.data_dir, SYSTEM_USER)
        self._run(
            "initdb", "-D", str(self.data_dir), "-A", "trust", "-U", USER, "-E", "UTF8", "--no-sync"
        )

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin_dir / tool), *args]
        if self.as_root:
            command = ["runuser", "-u", SYSTEM_USER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed:\n{result.stdout}\n{result.stderr}")

    def url(self, database: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresServer:
        options = f"-k {self.data_dir} -p {self.port} -h 127.0.0.1 -c fsync=off"
        # pg_ctl hands the options to a shell.
        options += "".join(f" -c {shlex.quote(f'{k}={v}')}" for k, v in self.settings.items())
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log), "-o", options, "-w",
                  "start")  # fmt: skip
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def new_database(self) -> str:
        """A fresh, empty database; its URL (no password: trust authentication)."""
        self._count += 1
        name = f"test_{self._count}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[call-overload]
        return self.url(name)


def start_server(root: Path) -> PostgresServer:
    """A new cluster in `root`, started; the test skips (fails under CI) without PostgreSQL."""
    bin_dir = binaries()
    if bin_dir is None:
        skip_or_fail("PostgreSQL's initdb and pg_ctl (the Debian package postgresql)")
    return PostgresServer(root, bin_dir).start()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    server = start_server(tmp_path_factory.mktemp("postgres"))
    try:
        yield server
    finally:
        server.stop()
