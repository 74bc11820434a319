"""The Docker image, for real: built from the offline base image, run with
`--network host` and a copy of env.list, driven by the real git-lfs client.

Docker on these machines: the engine runs without bridge networking (see
docker/start-engine.sh); every container here uses `--network host` and
listens on 127.0.0.1, never `-p` or the default bridge. The tests remove the
containers, volumes and image tag they created (by ID or name) and keep the
base image `debian:bookworm-slim` and the build cache for the next run.
They skip (loudly) only when no Docker engine can run on this machine, and
fail instead when CI is set (tests/prerequisites.py).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from lfs_server.settings import SETTINGS
from tests.gitclient import GitUser
from tests.prerequisites import skip_or_fail
from tests.stack import free_port
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
ENV_LIST = ROOT / "env.list"
IMAGE = "lfs-server:test"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
RUN_ID = uuid.uuid4().hex[:8]
STOP_LIMIT_SECONDS = 10.0


def docker_client() -> str | None:
    """Debian's /usr/bin/docker has BuildKit built in; other clients may lack buildx."""
    if os.access("/usr/bin/docker", os.X_OK):
        return "/usr/bin/docker"
    return shutil.which("docker")


def run(
    *argv: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    client = docker_client()
    assert client, "no docker client"
    done = run(client, *args, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    return done.stdout.strip()


@dataclass
class Created:
    """What these tests made, removed at the end by ID or name (nothing else)."""

    containers: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

    def volume(self, purpose: str) -> str:
        name = f"lfs-test-{RUN_ID}-{purpose}"
        docker("volume", "create", name)
        self.volumes.append(name)
        return name

    def remove_all(self) -> None:
        for container in reversed(self.containers):
            docker("rm", "-f", "-v", container, check=False)
        for volume in self.volumes:
            docker("volume", "rm", "-f", volume, check=False)
        for image in self.images:
            docker("rmi", image, check=False)


def env_file(path: Path, **values: str) -> Path:
    """A copy of env.list with the given settings replaced (or appended)."""
    lines, seen = [], set()
    for line in ENV_LIST.read_text().splitlines():
        name = line.partition("=")[0].strip()
        if not line.lstrip().startswith("#") and name in values:
            line = f"{name}={values[name]}"
            seen.add(name)
        lines.append(line)
    lines += [f"{name}={value}" for name, value in values.items() if name not in seen]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Container:
    id: str
    name: str
    url: str

    def state(self) -> tuple[str, str]:
        out = docker(
            "inspect",
            "-f",
            "{{.State.Status}}|{{if .State.Health}}{{.State.Health.Status}}{{end}}",
            self.id,
        )
        status, _, health = out.partition("|")
        return status, health

    def logs(self) -> str:
        client = docker_client()
        assert client
        done = run(client, "logs", self.id)
        return done.stdout + done.stderr

    def wait_healthy(self, timeout: float = 60.0) -> float:
        """Seconds until Docker reports the HEALTHCHECK healthy."""
        started = time.monotonic()
        if wait_until(self.healthy, timeout, step=0.25):
            return time.monotonic() - started
        health_log = docker("inspect", "-f", "{{json .State.Health}}", self.id, check=False)
        raise AssertionError(f"not healthy after {timeout}s: {health_log}\n{self.logs()}")

    def healthy(self) -> bool:
        """Whether the HEALTHCHECK says healthy; an error once the container stopped."""
        status, health = self.state()
        if status != "running":
            raise AssertionError(f"container {status} before healthy:\n{self.logs()}")
        return health == "healthy"

    def running(self) -> bool:
        return self.state()[0] == "running"


def start_container(
    created: Created,
    tmp: Path,
    volume: str,
    scheme: str = "http",
    mounts: tuple[str, ...] = (),
    **settings: str,
) -> Container:
    port = free_port()
    url = f"{scheme}://127.0.0.1:{port}"
    name = f"lfs-test-{RUN_ID}-{uuid.uuid4().hex[:6]}"
    envs = env_file(
        tmp / f"{name}.env",
        LFS_LISTEN=f"127.0.0.1:{port}",
        LFS_PUBLIC_URL=url,
        LFS_ANONYMOUS="write",
        **settings,
    )
    args = ["run", "-d", "--name", name, "--network", "host", "--env-file", str(envs)]
    args += ["--health-interval", "1s", "--health-timeout", "5s", "-v", f"{volume}:/data"]
    for mount in mounts:
        args += ["-v", mount]
    container_id = docker(*args, IMAGE)
    created.containers.append(container_id)
    container = Container(container_id, name, url)
    container.wait_healthy()
    return container


def push_files(
    user: GitUser, work: Path, remote: Path, lfs_url: str, files: dict[str, bytes], *config: str
) -> None:
    """Commit files tracked by LFS and push them (git-lfs uploads on pre-push)."""
    user.new_repo(work, lfs_url, remote)
    for pair in config:
        user.git("config", *pair.split("=", 1), cwd=work)
    user.commit_files(work, files, "objects")
    user.git("push", "-q", "origin", "main", cwd=work)


def clone_and_pull(user: GitUser, remote: Path, work: Path, lfs_url: str, *config: str) -> None:
    """Clone without smudging, point the clone at the server, `git lfs pull`."""
    user.clone(remote, work, lfs_url)
    for pair in config:
        user.git("config", *pair.split("=", 1), cwd=work)
    user.git("lfs", "pull", cwd=work)


def assert_same_files(work: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        got = (work / name).read_bytes()
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest(), (
            f"{name}: got {len(got)} bytes, not the pushed object (still a pointer?)"
        )


def sample_files(tag: str) -> dict[str, bytes]:
    return {
        f"{tag}-small.bin": os.urandom(1000),
        f"{tag}-medium.bin": os.urandom(3 << 20),
        f"{tag}-empty-ish.bin": b"x",
    }


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def engine() -> str:
    """A Docker engine answers (started by docker/start-engine.sh if needed)."""
    client = docker_client()
    if client and run(client, "info", timeout=30).returncode == 0:
        return client
    try:
        done = run(str(ROOT / "docker" / "start-engine.sh"), timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        skip_or_fail(f"DOCKER TESTS SKIPPED: Docker cannot run on this machine: {exc}")
    client = docker_client()
    if done.returncode != 0 or not client:
        reason = (done.stderr or done.stdout).strip().replace("\n", " | ")
        skip_or_fail(f"DOCKER TESTS SKIPPED: Docker cannot run on this machine: {reason}")
    return client


@pytest.fixture(scope="module")
def created(engine: str) -> Iterator[Created]:
    made = Created()
    yield made
    made.remove_all()


@pytest.fixture(scope="module")
def image(engine: str, created: Created) -> str:
    """The base image (offline, cached between runs), then this project's image."""
    base = run(str(ROOT / "docker" / "build-base-image.sh"), timeout=900)
    assert base.returncode == 0, f"build-base-image.sh failed:\n{base.stdout}\n{base.stderr}"
    argv = [engine, "build", "--network", "host", "--progress", "plain", "-t", IMAGE]
    if HOST_CA.is_file():
        argv += ["--secret", f"id=ca,src={HOST_CA}"]
    created.images.append(IMAGE)
    build = run(*argv, str(ROOT), timeout=900, env={**os.environ, "DOCKER_BUILDKIT": "1"})
    assert build.returncode == 0, "docker build failed:\n" + "\n".join(
        (build.stdout + build.stderr).splitlines()[-60:]
    )
    return IMAGE


@pytest.fixture(scope="module")
def data_volume(created: Created) -> str:
    return created.volume("data")


@pytest.fixture(scope="module")
def first(
    image: str, created: Created, data_volume: str, tmp_path_factory: pytest.TempPathFactory
) -> Container:
    """The first container on the data volume, anyone may write."""
    return start_container(created, tmp_path_factory.mktemp("first"), data_volume)


@dataclass
class Pushed:
    remote: Path
    files: dict[str, bytes]
    repo: str


@pytest.fixture(scope="module")
def pushed(first: Container, tmp_path_factory: pytest.TempPathFactory) -> Pushed:
    """A real `git push` whose pre-push hook uploads LFS objects to the container."""
    root = tmp_path_factory.mktemp("pushed")
    user = GitUser(root / "home", "docker-test")
    files = sample_files("docker")
    repo = "team/project"
    push_files(user, root / "work", root / "remote.git", f"{first.url}/{repo}.git/info/lfs", files)
    return Pushed(root / "remote.git", files, repo)


# ---------------------------------------------------------------- tests


def test_env_list_documents_every_setting() -> None:
    text = ENV_LIST.read_text()
    for name in SETTINGS:
        assert f"{name}=" in text, f"env.list does not mention {name}"
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep and name in SETTINGS, f"env.list: unknown setting line {line!r}"
            assert not value.startswith(('"', "'")), f"env.list: docker keeps quotes: {line!r}"


def test_env_list_as_shipped_is_valid(image: str, created: Created) -> None:
    name = f"lfs-test-{RUN_ID}-check"
    created.containers.append(name)
    out = docker(
        "run", "--rm", "--name", name, "--network", "host", "--env-file", str(ENV_LIST),
        image, "check-config",
    )  # fmt: skip
    assert "configuration is valid" in out


def test_healthcheck_turns_healthy(first: Container) -> None:
    assert first.wait_healthy() < 30
    health = docker("inspect", "-f", "{{(index .State.Health.Log 0).Output}}", first.id)
    assert "/healthz: 200" in health


def test_processes_run_as_the_unprivileged_user(first: Container) -> None:
    assert docker("inspect", "-f", "{{.Config.User}}", first.id) == "10001:10001"
    # /proc inside the container's PID namespace: every process, no `ps` needed.
    script = (
        "import os\n"
        "for pid in sorted((p for p in os.listdir('/proc') if p.isdigit()), key=int):\n"
        "    if int(pid) == os.getpid():\n"
        "        continue  # this script itself\n"
        "    try:\n"
        "        status = open(f'/proc/{pid}/status').read().splitlines()\n"
        "        cmd = open(f'/proc/{pid}/cmdline', 'rb').read().replace(b'\\0', b' ')\n"
        "    except OSError:\n"
        "        continue\n"
        "    uid = next(line.split()[1] for line in status if line.startswith('Uid:'))\n"
        "    print(pid, uid, cmd.decode().strip(), sep='|')\n"
    )
    out = docker("exec", first.id, "/opt/lfs-server/bin/python", "-c", script)
    processes = [line.split("|", 2) for line in out.splitlines()]
    assert processes, "no processes listed"
    by_pid = {pid: (uid, cmd) for pid, uid, cmd in processes}
    assert "lfs-server serve" in by_pid["1"][1], f"PID 1 is not the launcher: {by_pid['1']}"
    commands = " ".join(cmd for _, cmd in by_pid.values())
    assert "nginx: master process" in commands and "nginx: worker process" in commands
    assert "gunicorn" in commands
    uids = {uid for uid, _ in by_pid.values()}
    assert uids == {"10001"}, f"not all processes run as uid 10001: {processes}"


def test_git_lfs_push_then_clone_and_pull(first: Container, pushed: Pushed, tmp_path: Path) -> None:
    user = GitUser(tmp_path / "home", "docker-test")
    work = tmp_path / "clone"
    clone_and_pull(user, pushed.remote, work, f"{first.url}/{pushed.repo}.git/info/lfs")
    assert_same_files(work, pushed.files)


def test_docker_stop_is_quick_and_clean(first: Container, pushed: Pushed) -> None:
    started = time.monotonic()
    docker("stop", first.id, timeout=60)
    elapsed = time.monotonic() - started
    exit_code = docker("inspect", "-f", "{{.State.ExitCode}}", first.id)
    logs = first.logs()
    assert elapsed < STOP_LIMIT_SECONDS, f"docker stop took {elapsed:.1f}s:\n{logs}"
    assert exit_code == "0", f"exit code {exit_code} after docker stop:\n{logs}"
    for marker in ("Traceback", "[ERROR]", "[error]", "[crit]", "[alert]", "[emerg]"):
        assert marker not in logs, f"{marker} in the container's log:\n{logs}"


def test_new_container_on_the_same_volume_serves_every_object(
    first: Container,
    pushed: Pushed,
    created: Created,
    data_volume: str,
    tmp_path: Path,
) -> None:
    if first.running():
        docker("stop", first.id, timeout=60)
    second = start_container(created, tmp_path, data_volume)
    user = GitUser(tmp_path / "home", "docker-test")
    work = tmp_path / "clone"
    clone_and_pull(user, pushed.remote, work, f"{second.url}/{pushed.repo}.git/info/lfs")
    assert_same_files(work, pushed.files)
    docker("stop", second.id, timeout=60)


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 the container's user can read."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    done = run(
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
        "-addext", "subjectAltName=IP:127.0.0.1",
        "-keyout", str(key), "-out", str(cert),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    directory.chmod(0o755)
    cert.chmod(0o644)
    key.chmod(0o644)  # a test key; real ones: readable by uid 10001 only
    return cert, key


def test_tls_mode_with_a_self_signed_certificate(
    image: str, created: Created, tmp_path: Path
) -> None:
    tls = tmp_path / "tls"
    tls.mkdir()
    cert, _ = make_certificate(tls)
    server = start_container(
        created,
        tmp_path,
        created.volume("tls"),
        scheme="https",
        mounts=(f"{tls}:/tls:ro",),
        LFS_TLS_CERT="/tls/cert.pem",
        LFS_TLS_KEY="/tls/key.pem",
    )  # start_container waited for the HEALTHCHECK, which probes https here
    assert server.url.startswith("https://")
    assert requests.get(f"{server.url}/healthz", verify=str(cert), timeout=10).status_code == 200
    user = GitUser(tmp_path / "home", "docker-test")
    files = sample_files("tls")
    lfs_url = f"{server.url}/team/secure.git/info/lfs"
    ca = f"http.sslCAInfo={cert}"
    push_files(user, tmp_path / "work", tmp_path / "remote.git", lfs_url, files, ca)
    clone_and_pull(user, tmp_path / "remote.git", tmp_path / "clone", lfs_url, ca)
    assert_same_files(tmp_path / "clone", files)
    docker("stop", server.id, timeout=60)
    assert docker("inspect", "-f", "{{.State.ExitCode}}", server.id) == "0"


def test_missing_tls_file_is_a_clear_start_up_error(
    image: str, created: Created, tmp_path: Path
) -> None:
    name = f"lfs-test-{RUN_ID}-notls"
    created.containers.append(name)
    envs = env_file(
        tmp_path / "notls.env",
        LFS_LISTEN=f"127.0.0.1:{free_port()}",
        LFS_TLS_CERT="/tls/missing-cert.pem",
        LFS_TLS_KEY="/tls/missing-key.pem",
    )
    client = docker_client()
    assert client
    done = run(
        client, "run", "--rm", "--name", name, "--network", "host", "--env-file", str(envs), image,
        timeout=60,
    )  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0, f"started without its certificate:\n{done.stderr}"
    assert len(lines) == 1, f"expected one line, got:\n{done.stderr}"
    assert "LFS_TLS_CERT" in lines[0] and "missing-cert.pem" in lines[0], lines[0]
