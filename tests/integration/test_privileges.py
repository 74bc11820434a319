"""Started as root, nothing that serves requests runs as root: nginx's workers,
gunicorn and the Prehasher run as LFS_USER, which owns a private data dir,
and admin commands run as root leave no file the server cannot use."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

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


def test_serving_processes_run_as_the_user(server: Stack, user: pwd.struct_passwd) -> None:
    # The master and LFS_WORKERS=2 workers (the second may still be starting).
    assert wait_until(lambda: len(gunicorns(processes_of(server))) == 3, timeout=20)
    processes = processes_of(server)
    kinds = {
        "nginx worker": [p for p, cmd in processes.items() if "nginx: worker process" in cmd],
        "gunicorn": gunicorns(processes),
        "Prehasher": [p for p, cmd in processes.items() if "lfs_server.prehash_process" in cmd],
    }
    assert len(kinds["nginx worker"]) >= 1, processes
    assert len(kinds["Prehasher"]) == 1, processes
    for kind, pids in kinds.items():
        for pid in pids:
            assert ids(pid, "Uid") == [user.pw_uid] * 4, (kind, processes[pid])
            assert ids(pid, "Gid") == [user.pw_gid] * 4, (kind, processes[pid])
    # Only the launcher and nginx's master (the port, the TLS key) stay root.
    rooted = [cmd for pid, cmd in processes.items() if ids(pid, "Uid")[1] == 0]
    assert len(rooted) == 1 and "nginx: master process" in rooted[0], rooted


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
