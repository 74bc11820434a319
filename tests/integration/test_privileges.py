"""Started as root, the launcher prepares and then drops to LFS_USER, which owns
a private data dir: every process runs as that user, root acts on nothing the
user could have linked elsewhere, no child holds a secret it does not need,
and admin commands run as root leave no file the server cannot use."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.integration.helpers import sha256, upload, wait_until
from tests.prerequisites import skip_or_fail
from tests.stack import LAUNCHER, Stack, free_port

USER = os.environ.get("LFS_USER", "").strip() or "lfs"


@pytest.fixture(autouse=True)
def started_as_root() -> None:
    if os.geteuid() != 0:
        skip_or_fail("root: the server drops privileges only when started as root")


@pytest.fixture
def user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        pytest.fail(f"no user {USER!r}: `make test` creates it (useradd --system {USER})")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path, LFS_ANONYMOUS="none").start()
    yield stack
    stack.stop()


def descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *descendants(int(child))]
    return found


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def ids(pid: int, field: str) -> list[int]:
    """Real, effective, saved and filesystem uid (or gid) of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return [int(value) for value in line.split()[1:]]
    raise AssertionError(f"no {field} line for {pid}")


def owners(root: Path) -> dict[Path, int]:
    return {path: path.lstat().st_uid for path in [root, *root.rglob("*")]}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def processes_of(stack: Stack) -> dict[int, str]:
    assert stack.proc is not None
    return {pid: cmdline(pid) for pid in descendants(stack.proc.pid)}


def gunicorns(processes: dict[int, str]) -> list[int]:
    return [pid for pid, cmd in processes.items() if "-m gunicorn" in cmd]


def kinds_of(processes: dict[int, str]) -> dict[str, list[int]]:
    def having(text: str) -> list[int]:
        return [pid for pid, cmd in processes.items() if text in cmd]

    return {
        "nginx master": having("nginx: master process"),
        "nginx worker": having("nginx: worker process"),
        "gunicorn": gunicorns(processes),
        "Prehasher": having("lfs_server.prehash_process"),
    }


def test_serving_processes_run_as_the_user(server: Stack, user: pwd.struct_passwd) -> None:
    # The master and LFS_WORKERS=2 workers (the second may still be starting).
    assert wait_until(lambda: len(gunicorns(processes_of(server))) == 3, timeout=20)
    processes = processes_of(server)
    assert server.proc is not None
    launcher = server.proc.pid
    kinds = {"launcher": [launcher], **kinds_of(processes)}
    processes[launcher] = cmdline(launcher)
    assert len(kinds["nginx master"]) == 1, processes
    assert len(kinds["nginx worker"]) >= 1, processes
    assert len(kinds["Prehasher"]) == 1, processes
    for kind, pids in kinds.items():
        for pid in pids:
            assert ids(pid, "Uid") == [user.pw_uid] * 4, (kind, processes[pid])
            assert ids(pid, "Gid") == [user.pw_gid] * 4, (kind, processes[pid])
            assert groups(pid) == set(os.getgrouplist(user.pw_name, user.pw_gid)), kind
    # Nothing stays root: the launcher dropped root itself once it had
    # prepared. Having changed its ids it is not dumpable, so its memory and
    # environment (the admin password) stay root's to read, not the user's.
    assert [cmd for pid, cmd in processes.items() if 0 in ids(pid, "Uid")] == []
    for private in ("environ", "mem"):
        assert Path(f"/proc/{launcher}/{private}").stat().st_uid == 0, private


def groups(pid: int) -> set[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Groups:"):
            return {int(value) for value in line.split()[1:]}
    raise AssertionError(f"no Groups line for {pid}")


def test_the_data_dir_is_private_and_the_users(server: Stack, user: pwd.struct_passwd) -> None:
    server.add_user("alice", "alice-password", ("team/*", "write"))
    upload_as(server, "alice", "alice-password", b"private data\n")
    data = server.data_dir
    assert mode(data) == 0o700
    for name in ("lfs.db", "lfs.db-wal", "lfs.db-shm", "secret.key"):
        assert mode(data / name) == 0o600, name
    assert {uid for uid in owners(data).values()} == {user.pw_uid}, owners(data)


def upload_as(stack: Stack, name: str, password: str, data: bytes) -> None:
    body = {"operation": "upload", "objects": [{"oid": sha256(data), "size": len(data)}]}
    response = stack.batch("team/project", body, auth=(name, password))
    assert response.status_code == 200, response.text
    assert "error" not in response.json()["objects"][0], response.text


def test_admin_commands_as_root_leave_nothing_root_owned(
    server: Stack, user: pwd.struct_passwd
) -> None:
    server.add_user("bob", "bob-password-1", ("team/*", "write"))
    assert server.cli("token", "create", "bob").returncode == 0
    assert server.cli("fsck").returncode == 0
    assert [path for path, uid in owners(server.data_dir).items() if uid != user.pw_uid] == []
    upload_as(server, "bob", "bob-password-1", b"bob's object\n")
    # With the server stopped the command is the database's only user: it
    # makes (and removes) the journal files itself.
    assert server.stop() == 0
    done = server.cli("user", "add", "carol", "--password-stdin", stdin="carol-password\n")
    assert done.returncode == 0, done.stderr
    assert server.cli("grant", "carol", "team/*", "write").returncode == 0
    assert [path for path, uid in owners(server.data_dir).items() if uid != user.pw_uid] == []
    server.start()
    upload_as(server, "carol", "carol-password", b"carol's object\n")


def test_a_root_owned_data_dir_is_taken_over(tmp_path: Path, user: pwd.struct_passwd) -> None:
    # What an older version left behind when started as root.
    data = tmp_path / "data"
    outside = tmp_path / "outside.txt"
    outside.write_text("not the server's\n")
    first = Stack(tmp_path, LFS_ANONYMOUS="write")
    assert first.cli("check-config").returncode == 0
    (data / "objects" / "legacy").mkdir(parents=True)
    (data / "objects" / "legacy" / "file").write_bytes(b"x")
    (data / "objects" / "link").symlink_to(outside)
    (data / "objects" / "hard").hardlink_to(outside)
    assert owners(data)[data] == 0
    stack = first.start()
    try:
        left = [path for path, uid in owners(data).items() if uid != user.pw_uid]
        # A link is never followed, and a file with several links is not given away.
        assert left == [data / "objects" / "hard"]
        assert outside.stat().st_uid == 0
        assert "left 1 file(s) with several hard links" in stack.log.read_text()
        upload(stack, "team/project", b"after the take-over\n")
    finally:
        stack.stop()


def launch(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ,
        "LFS_DATA_DIR": str(tmp_path / "data"),
        "LFS_LISTEN": f"127.0.0.1:{free_port()}",
        **env,
    }
    return subprocess.run(LAUNCHER, env=full_env, capture_output=True, text=True, timeout=60)


def test_a_missing_user_is_refused_with_the_command_to_create_it(tmp_path: Path) -> None:
    done = launch(tmp_path, LFS_USER="lfs-nobody-here")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("lfs-server: LFS_USER: no user 'lfs-nobody-here'")
    assert "useradd --system --no-create-home --shell /usr/sbin/nologin lfs-nobody-here" in (
        done.stderr
    )


def test_root_as_the_user_is_refused(tmp_path: Path) -> None:
    done = launch(tmp_path, LFS_USER="root")
    assert done.returncode == 2
    assert done.stderr.startswith("lfs-server: LFS_USER: 'root' is root"), done.stderr


@pytest.mark.usefixtures("user")
def test_a_data_dir_the_user_cannot_reach_is_refused(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    done = launch(tmp_path, LFS_DATA_DIR=str(closed / "data"))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(
        f"lfs-server: LFS_DATA_DIR: LFS_USER {USER} cannot reach {closed / 'data'}: "
        f"{closed} is not traversable for it"
    ), done.stderr


# ------------------------------------------- the data dir is the user's, not root's

Snapshot = tuple[int, int, int, int, dict[str, tuple[int, int, int, bytes]]]


def snapshot(directory: Path) -> Snapshot:
    """Owner, mode and modification time of a folder, and each file's owner, mode, bytes."""
    info = directory.lstat()
    files = {}
    for entry in sorted(directory.iterdir()):
        item = entry.lstat()
        files[entry.name] = (item.st_uid, item.st_gid, item.st_mode, entry.read_bytes())
    return info.st_uid, info.st_gid, info.st_mode, info.st_mtime_ns, files


def root_dir(path: Path, mode: int = 0o755) -> Path:
    """A root-owned folder holding one root-owned file an hour and a half old."""
    path.mkdir()
    path.chmod(mode)
    old = path / "root-file"
    old.write_bytes(b"root's, not the server's\n")
    stale = time.time() - 5400
    os.utime(old, (stale, stale))
    return path


def start_once(stack: Stack) -> bool:
    """Start and stop the server; whether it came up (a refused start is fine here)."""
    try:
        stack.start()
    except RuntimeError:
        return False
    assert stack.stop() == 0
    return True


@pytest.mark.usefixtures("user")
@pytest.mark.parametrize("linked", ["tmp/uploads", "objects"])
def test_a_folder_linked_out_of_the_data_dir_gives_root_nothing(
    tmp_path: Path, linked: str
) -> None:
    target = root_dir(tmp_path / "target")
    before = snapshot(target)
    stack = Stack(tmp_path, LFS_ANONYMOUS="write")
    (stack.data_dir / linked).parent.mkdir(parents=True)
    (stack.data_dir / linked).symlink_to(target)
    start_once(stack)
    # Neither chowned (nginx's root master did), nor written to and cleaned
    # up again (the hard-link check did), nor swept.
    assert snapshot(target) == before


@pytest.mark.usefixtures("user")
def test_the_sweep_deletes_nothing_through_a_linked_upload_folder(tmp_path: Path) -> None:
    # A folder the user may write to, like /tmp: the server starts with its
    # uploads there, but root's stale file in it is not the server's to delete.
    shared = root_dir(tmp_path / "shared", 0o1777)
    stack = Stack(tmp_path, LFS_ANONYMOUS="write")
    (stack.data_dir / "tmp").mkdir(parents=True)
    (stack.data_dir / "tmp" / "uploads").symlink_to(shared)
    assert start_once(stack), stack.log.read_text()
    assert (shared / "root-file").read_bytes() == b"root's, not the server's\n"
    assert shared.stat().st_uid == 0
    assert "could not sweep stale uploads" in stack.log.read_text()


@pytest.mark.usefixtures("user")
def test_the_admin_is_not_written_through_a_linked_database(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    stack = Stack(tmp_path, LFS_ADMIN_USER="admin", LFS_ADMIN_PASSWORD="admin-password")
    stack.data_dir.mkdir()
    (stack.data_dir / "lfs.db").symlink_to(outside / "planted.db")
    start_once(stack)
    assert list(outside.iterdir()) == []


@pytest.mark.usefixtures("user")
@pytest.mark.parametrize("name", ["lfs.db-shm", "secret.key"])
def test_a_private_file_linked_out_keeps_the_targets_mode(tmp_path: Path, name: str) -> None:
    target = tmp_path / "root-file"
    # Long enough to pass for a key: the server then reads it, but never chmods it.
    target.write_bytes(b"a root file of more than thirty-two bytes, mode 0644\n")
    target.chmod(0o644)
    stack = Stack(tmp_path, LFS_ANONYMOUS="write")
    stack.data_dir.mkdir()
    (stack.data_dir / name).symlink_to(target)
    start_once(stack)
    assert mode(target) == 0o644
    assert target.stat().st_uid == 0


def memory_holds(pid: int, needle: bytes) -> bool:
    """Whether `needle` is anywhere in the memory of `pid` (its environment included).

    nginx moves its environment while it sets its process titles, so
    /proc/PID/environ alone would miss a copy that its user can still read.
    """
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as memory:
        for line in maps:
            span, permissions = line.split()[:2]
            if not permissions.startswith("r"):
                continue
            start, end = (int(address, 16) for address in span.split("-"))
            try:
                memory.seek(start)
                if needle in memory.read(end - start):
                    return True
            except (OSError, OverflowError, ValueError):
                continue  # a region that cannot be read ([vvar], guard pages)
    return False


@pytest.mark.usefixtures("user")
def test_only_the_app_holds_the_signing_keys_and_no_child_the_admin_password(
    tmp_path: Path,
) -> None:
    password = b"admin-password-" + os.urandom(8).hex().encode()
    key = b"signing-key-" + os.urandom(16).hex().encode()
    previous = b"previous-key-" + os.urandom(16).hex().encode()
    stack = Stack(
        tmp_path,
        LFS_ADMIN_USER="admin",
        LFS_ADMIN_PASSWORD=password.decode(),
        LFS_SECRET_KEY=key.decode(),
        LFS_PREVIOUS_SECRET_KEYS=previous.decode(),
    ).start()
    try:
        assert wait_until(lambda: len(gunicorns(processes_of(stack))) == 3, timeout=20)
        kinds = kinds_of(processes_of(stack))
        assert all(kinds.values()), kinds
        for kind, pids in kinds.items():
            for pid in pids:
                assert not memory_holds(pid, password), (kind, pid)
                for secret in (key, previous):
                    assert memory_holds(pid, secret) == (kind == "gunicorn"), (kind, pid, secret)
    finally:
        stack.stop()


def free_low_port() -> int:
    for port in range(1023, 0, -1):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below 1024 on 127.0.0.1")


@pytest.mark.usefixtures("user")
def test_a_port_below_the_unprivileged_ones_is_refused_with_one_line(tmp_path: Path) -> None:
    port = free_low_port()
    first_allowed = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    if port >= first_allowed:
        # This kernel lets anyone listen there: the dropped launcher serves on it.
        stack = Stack(tmp_path, LFS_LISTEN=f"127.0.0.1:{port}")
        stack.port, stack.url = port, f"http://127.0.0.1:{port}"
        assert start_once(stack), stack.log.read_text()
        return
    done = launch(tmp_path, LFS_LISTEN=f"127.0.0.1:{port}")
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(
        f"lfs-server: LFS_LISTEN: port {port} is below {first_allowed}, "
    ), done.stderr
    assert "behind a load balancer" in done.stderr
    assert f"sysctl net.ipv4.ip_unprivileged_port_start={port}" in done.stderr


@pytest.mark.usefixtures("user")
def test_a_tls_key_only_root_may_read_is_served_from_the_users_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("openssl") is None:
        skip_or_fail("openssl, to make a certificate")
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    cert, key = keys / "cert.pem", keys / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    key.chmod(0o600)
    run_root = tmp_path / "run"  # TMPDIR, sticky and open to all like /tmp
    run_root.mkdir()
    run_root.chmod(0o1777)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    stack = Stack(tmp_path, LFS_TLS_CERT=str(cert), LFS_TLS_KEY=str(key), TMPDIR=str(run_root))
    stack.url = f"https://127.0.0.1:{stack.port}"
    stack.start()
    try:
        (run_dir,) = run_root.iterdir()
        copy = run_dir / "tls_key.pem"
        assert copy.read_bytes() == key.read_bytes()
        assert (copy.stat().st_uid, mode(copy)) == (pwd.getpwnam(USER).pw_uid, 0o600)
        assert requests.get(f"{stack.url}/healthz", timeout=10).status_code == 200
    finally:
        assert stack.stop() == 0
    assert list(run_root.iterdir()) == []
