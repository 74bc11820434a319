"""Faults on the real stack: killed workers, a dead nginx, a full disk, crash leftovers.

Each test starts its own server (it breaks it on purpose) and stops only
processes it started, by PID found through /proc of that server. Measured
behaviour is printed (`pytest -s` or `-rP` shows it).
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import requests

from tests.gitclient import GitUser
from tests.integration.helpers import (
    access_log,
    actions_for,
    assert_lfs_error,
    assert_raw_lfs_error,
    batch_for,
    download_action,
    lfs_headers,
    media_type,
    put_action,
    read_response_head,
    sha256,
    wait_until,
)
from tests.prerequisites import skip_or_fail
from tests.procs import child_pids, cmdline, gunicorn_workers, launcher_child
from tests.stack import LFS_MEDIA_TYPE, Stack

REPO = "team/faults"
MIB = 1 << 20
HOUR = 3600


# ---------------------------------------------------------------- processes


def wait_for_workers(stack: Stack, count: int, gone: set[int]) -> list[int]:
    """The workers once `count` are up again and none of `gone` is among them."""
    workers: list[int] = []

    def ready() -> bool:
        nonlocal workers
        workers = gunicorn_workers(stack)
        return len(workers) == count and not gone & set(workers)

    assert wait_until(ready, timeout=30), f"gunicorn did not replace {gone}: {workers}"
    return workers


def holds_upload(pid: int, upload_dir: Path) -> bool:
    """Whether process `pid` has an upload temp file open (it is committing it)."""
    prefix = f"{upload_dir}/"
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return False
    for fd in fds:
        with suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith(prefix):
                return True
    return False


def start_stack(root: Path) -> Stack:
    root.mkdir(parents=True, exist_ok=True)
    return Stack(root, LFS_ANONYMOUS="write").start()


# ---------------------------------------------------------------- the store


def stored_files(stack: Stack) -> list[Path]:
    return sorted(p for p in (stack.data_dir / "objects").rglob("*") if not p.is_dir())


def assert_store_intact(stack: Stack, checked: dict[Path, str] | None = None) -> int:
    """Every file under objects/ is a complete object: its SHA-256 is its name."""
    checked = {} if checked is None else checked
    for path in stored_files(stack):
        if path not in checked:
            checked[path] = hashlib.sha256(path.read_bytes()).hexdigest()
        assert checked[path] == path.name, f"partial or corrupt object visible: {path}"
    return len(checked)


def is_stored(stack: Stack, data: bytes, repo: str = REPO) -> bool:
    """Whether the store holds `data` and the object index lets `repo` see it."""
    oid = sha256(data)
    (obj,) = batch_for(stack, repo, "download", data).json()["objects"]
    return "actions" in obj and (stack.data_dir / "objects" / oid[:2] / oid[2:4] / oid).exists()


def upload_tmp_is_empty(stack: Stack) -> bool:
    return not stack.upload_tmp_files()


def random_files(count: int, size: int, tag: str) -> dict[str, bytes]:
    return {f"{tag}-{index}.bin": os.urandom(size) for index in range(count)}


def git_repo(tmp_path: Path, stack: Stack, name: str = "work") -> tuple[GitUser, Path, Path]:
    user = GitUser(tmp_path / f"{name}-home")
    remote = tmp_path / "remote.git"
    work = user.new_repo(tmp_path / name, stack.lfs_base(REPO), remote)
    return user, work, remote


def access_statuses(stack: Stack, method: str, prefix: str) -> Counter[int]:
    return Counter(
        status
        for verb, uri, status in access_log(stack)
        if verb == method and uri.startswith(prefix)
    )


# ---------------------------------------------------------------- kill -9 of a worker


@contextmanager
def prehasher_held(stack: Stack) -> Iterator[None]:
    """The launcher stopped (SIGSTOP), and with it its Prehasher thread: every
    commit meanwhile asks the Prehasher for its digest and waits for the
    answer with its upload open, so a worker in the middle of a commit stays
    there long enough to be found."""
    assert stack.proc is not None
    os.kill(stack.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(stack.proc.pid, signal.SIGCONT)


def test_worker_killed_while_committing_uploads(tmp_path: Path) -> None:
    """kill -9 of a worker in the middle of committing an upload, twice, during `git push`."""
    stack = start_stack(tmp_path / "server")
    pushes: list[subprocess.Popen[bytes]] = []
    try:
        user, work, _ = git_repo(tmp_path, stack)
        files = random_files(8, 8 * MIB, "big")
        user.commit_files(work, files)
        uploads = stack.data_dir / "tmp" / "uploads"
        killed: list[int] = []
        hashed: dict[Path, str] = {}

        def push() -> None:
            """`git push` in the background, its output in push-N.log (a pipe could fill)."""
            with open(tmp_path / f"push-{len(pushes)}.log", "w") as output:
                pushes.append(
                    subprocess.Popen(
                        ["git", "push", "origin", "main"],
                        cwd=work,
                        env=user.env,
                        stdout=output,
                        stderr=subprocess.STDOUT,
                    )
                )

        caught: list[int] = []  # a worker committing an upload right now, once found

        def commit_caught_or_push_ended() -> bool:
            # No object may ever be visible before it is complete and verified.
            assert_store_intact(stack, hashed)
            caught[:] = [
                worker
                for worker in gunicorn_workers(stack)
                if worker not in killed and holds_upload(worker, uploads)
            ][:1]
            return bool(caught) or pushes[-1].poll() is not None

        def push_ended() -> bool:
            assert_store_intact(stack, hashed)
            return pushes[-1].poll() is not None

        with prehasher_held(stack):
            push()
            while len(killed) < 2:
                assert wait_until(commit_caught_or_push_ended, timeout=120, step=0.01), (
                    f"no worker was committing an upload within 120 s (killed so far: {killed})"
                )
                if caught:
                    os.kill(caught[0], signal.SIGKILL)
                    killed.append(caught[0])
                else:
                    # Every commit waits on the held Prehasher, so a push can only
                    # end here by failing on the first kill; its retry commits again.
                    assert pushes[-1].returncode != 0, "the push ended before a second commit"
                    push()
        assert wait_until(push_ended, timeout=300, step=0.01), (
            "git push did not finish within 300 s of the kills"
        )
        exits = [pushed.returncode for pushed in pushes]
        retry = None
        if exits[-1] != 0:
            retry = user.run("git", "push", "origin", "main", cwd=work, check=False)
            assert retry.returncode == 0, retry.stdout + retry.stderr
        for data in files.values():
            assert is_stored(stack, data)
        assert assert_store_intact(stack, hashed) == len(files)
        assert wait_until(lambda: upload_tmp_is_empty(stack), timeout=10), (
            f"upload temp files left: {stack.upload_tmp_files()}"
        )
        fsck = stack.cli("fsck")
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        puts = access_statuses(stack, "PUT", "/.lfs/upload/")
        print(
            f"\nworker kill during uploads: killed {len(killed)} committing workers; "
            f"PUT statuses {dict(puts)}; push exits {exits}"
            + ("" if retry is None else f", retry exit {retry.returncode}")
        )
        if exits[-1] != 0:
            print((tmp_path / f"push-{len(pushes) - 1}.log").read_text()[-2000:])
        assert puts[200] >= len(files)
    finally:
        for pushed in pushes:
            if pushed.poll() is None:
                pushed.kill()
                pushed.wait()
        stack.stop()


def test_worker_killed_during_a_batch_burst(tmp_path: Path) -> None:
    stack = start_stack(tmp_path / "server")
    try:
        objects = [{"oid": sha256(str(i).encode()), "size": i} for i in range(300)]
        body = {"operation": "upload", "objects": objects}
        url = f"{stack.lfs_base(REPO)}/objects/batch"
        results: list[tuple[int, str, str]] = []
        failures: list[tuple[float, requests.RequestException]] = []  # (when sent, error)
        stop = threading.Event()

        def hammer() -> None:
            with requests.Session() as session:
                while not stop.is_set():
                    sent = time.monotonic()
                    try:
                        response = session.post(url, json=body, headers=lfs_headers(), timeout=30)
                    except requests.RequestException as exc:
                        failures.append((sent, exc))
                        continue
                    results.append((response.status_code, media_type(response), response.text))

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            assert wait_until(lambda: len(results) >= 8, timeout=20), "no batch burst under way"
            before = len(results)
            victim = gunicorn_workers(stack)[0]
            os.kill(victim, signal.SIGKILL)
            killed_at = time.monotonic()
            wait_for_workers(stack, 2, {victim})
            # The burst goes on after the replacement: answers from after the kill count too.
            after_kill = len(results)
            assert wait_until(lambda: len(results) >= after_kill + 8, timeout=30), (
                f"no batches answered after worker {victim} was replaced"
            )
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
        # Only a batch the killed worker was in the middle of answering may be
        # cut off (nginx had passed its headers on and cannot take them back):
        # never one sent after the kill, and never any other kind of failure.
        for sent, exc in failures:
            assert sent < killed_at, f"sent {sent - killed_at:.3f} s after the kill: {exc!r}"
            assert isinstance(
                exc, requests.ConnectionError | requests.exceptions.ChunkedEncodingError
            ), repr(exc)
        statuses = Counter(status for status, _, _ in results)
        print(
            f"\nworker kill during a batch burst: {len(results)} batches "
            f"({before} before the kill), statuses {dict(statuses)}, "
            f"{len(failures)} cut off in the killed worker's answer"
        )
        assert set(statuses) <= {200, 502, 503}, statuses
        for status, kind, text in results:
            assert kind == LFS_MEDIA_TYPE, (status, kind, text[:200])
            if status != 200:
                assert '"message"' in text and "<html" not in text.lower(), text[:200]
        # Afterwards the server answers normally, from both workers.
        for _ in range(20):
            response = stack.batch(REPO, body)
            assert response.status_code == 200, response.text[:300]
            assert len(response.json()["objects"]) == len(objects)
        assert requests.get(f"{stack.url}/healthz", timeout=10).status_code == 200
    finally:
        stack.stop()


# ---------------------------------------------------------------- nginx dies, restart


def test_acknowledged_objects_survive_nginx_death_and_restart(tmp_path: Path) -> None:
    """(That the launcher stops the other child is test_launcher.py's business.)"""
    root = tmp_path / "server"
    first = start_stack(root)
    try:
        user, work, remote = git_repo(tmp_path, first)
        files = random_files(6, 2 * MIB, "kept")
        user.commit_files(work, files)
        user.run("git", "push", "origin", "main", cwd=work)  # exit 0: acknowledged
        nginx = launcher_child(first, "nginx")
        nginx_workers = child_pids(nginx)
        os.kill(nginx, signal.SIGKILL)
        assert first.proc is not None
        assert first.proc.wait(timeout=20) != 0
    finally:
        first.stop()
    # Workers of the killed nginx master, if the launcher left any: ours, by PID.
    for pid in nginx_workers:
        if "nginx" in cmdline(pid):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    second = Stack(root, LFS_ANONYMOUS="write").start()
    try:
        clone = user.clone(remote, tmp_path / "clone", second.lfs_base(REPO))
        user.run("git", "lfs", "pull", cwd=clone)
        for name, data in files.items():
            assert (clone / name).read_bytes() == data, name
        assert assert_store_intact(second) == len(files)
        fsck = second.cli("fsck")
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        print(f"\nrestart after nginx kill -9: {len(files)} acknowledged objects pulled intact")
    finally:
        second.stop()


# ---------------------------------------------------------------- disk full


@contextmanager
def small_filesystem(where: Path, size_mib: int = 64) -> Iterator[str]:
    """A small filesystem mounted at `where` (tmpfs, else a loop-mounted ext4)."""
    where.mkdir(parents=True)
    tmpfs = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0755", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    kind = "tmpfs"
    if tmpfs.returncode != 0:
        kind = "ext4 loop image"
        image = where.parent / "small-disk.img"
        with open(image, "wb") as disk:
            disk.truncate(size_mib * MIB)
        steps = [
            ["mkfs.ext4", "-q", "-F", "-m", "0", str(image)],
            ["mount", "-o", "loop", str(image), str(where)],
        ]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True)
            if done.returncode != 0:
                skip_or_fail(
                    "cannot mount a small filesystem: tmpfs: "
                    f"{tmpfs.stderr.strip() or tmpfs.returncode}; "
                    f"{step[0]}: {done.stderr.strip() or done.returncode}"
                )

    def unmounted() -> bool:
        return subprocess.run(["umount", str(where)], capture_output=True).returncode == 0

    try:
        yield kind
    finally:
        if not wait_until(unmounted, timeout=5, step=0.1):  # busy while files are open
            subprocess.run(["umount", "-l", str(where)], check=False)


def free_bytes(path: Path) -> int:
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


def fill(path: Path, leave: int) -> Path:
    """Allocate a file so that about `leave` bytes stay free on path's filesystem."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.posix_fallocate(fd, 0, free_bytes(path.parent) - leave)
    finally:
        os.close(fd)
    return path


def test_disk_full(tmp_path: Path) -> None:
    root = tmp_path / "server"
    with small_filesystem(root / "data") as kind:
        stack = Stack(root, LFS_ANONYMOUS="write").start()
        try:
            user, work, remote = git_repo(tmp_path, stack)
            before = {"before.bin": os.urandom(MIB)}
            user.commit_files(work, before)
            user.run("git", "push", "origin", "main", cwd=work)
            big = os.urandom(16 * MIB)
            small = os.urandom(4 * MIB)
            tiny = os.urandom(500_000)
            # Signed before the disk fills: the transfer itself must say 507.
            big_put = actions_for(stack, REPO, "upload", big)["upload"]
            small_put = actions_for(stack, REPO, "upload", small)["upload"]
            tiny_put = actions_for(stack, REPO, "upload", tiny)["upload"]

            filler = fill(stack.data_dir / "filler", leave=6 * MIB)

            # 1. The client's push: the batch refuses the object that cannot fit.
            user.commit_files(work, {"big.bin": big}, "too big for the disk")
            push = user.run("git", "push", "origin", "main", cwd=work, check=False)
            client_says = push.stdout + push.stderr
            assert push.returncode != 0
            assert "insufficient storage" in client_says, client_says
            (refused,) = batch_for(stack, REPO, "upload", big).json()["objects"]
            assert refused["error"]["code"] == 507 and "actions" not in refused, refused

            # 2. A PUT signed earlier: refused before the body, 507 LFS JSON.
            response = put_action(big_put, big)
            assert_lfs_error(response, 507, stack)
            put_message = response.json()["message"]

            # 3. The disk fills while a body arrives (after 100-continue):
            #    nginx cannot write its temp file; the client gets 507, not 500.
            token = small_put["header"]["Authorization"]
            with socket.create_connection(("127.0.0.1", stack.port), timeout=30) as sock:
                sock.sendall(
                    f"PUT /.lfs/upload/{sha256(small)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Authorization: {token}\r\nContent-Length: {len(small)}\r\n"
                    "Expect: 100-continue\r\n\r\n".encode()
                )
                assert sock.recv(4096).startswith(b"HTTP/1.1 100 Continue")
                second_filler = fill(stack.data_dir / "filler-2", leave=MIB)
                with suppress(OSError):
                    sock.sendall(small)
                status, headers, body = read_response_head(sock, timeout=30)
            assert_raw_lfs_error(status, headers, body, 507, stack)
            assert "No space left on device" in stack.log.read_text(errors="replace")

            # 4. Under 1 MB the body comes in before any look at the free
            #    space: it fits, but would eat into the reserve: 507 at commit.
            assert_lfs_error(put_action(tiny_put, tiny), 507, stack)

            # Nothing half-written: no temp file left, only complete objects.
            assert wait_until(lambda: upload_tmp_is_empty(stack), timeout=10)
            assert not any(is_stored(stack, data) for data in (big, small, tiny))
            assert assert_store_intact(stack) == 1

            # Downloads keep working on the full disk: HTTP and the real client.
            href = download_action(stack, REPO, before["before.bin"])
            got = requests.get(href["href"], headers=href["header"], timeout=30)
            assert got.status_code == 200 and got.content == before["before.bin"]
            reader = GitUser(tmp_path / "reader-home")
            clone = reader.clone(remote, tmp_path / "clone", stack.lfs_base(REPO))
            reader.run("git", "lfs", "pull", cwd=clone)
            assert (clone / "before.bin").read_bytes() == before["before.bin"]

            # Space returns: the same uploads succeed, with no restart.
            filler.unlink()
            second_filler.unlink()
            user.run("git", "push", "origin", "main", cwd=work)
            assert put_action(small_put, small).status_code == 200
            assert is_stored(stack, big) and is_stored(stack, small)
            assert assert_store_intact(stack) == 3
            print(
                f"\ndisk full ({kind}): git push exit {push.returncode}, client printed "
                f"{[line for line in client_says.splitlines() if 'storage' in line][:2]}; "
                f"PUT signed before: {response.status_code} {put_message!r}; "
                f"body cut by ENOSPC: {status} {body.decode().strip()}; "
                "downloads 200; after freeing space push exit 0"
            )
        finally:
            stack.stop()


# ---------------------------------------------------------------- crash leftovers


def make_temp_file(folder: Path, name: str, size: int, age: float) -> Path:
    path = folder / name
    path.write_bytes(os.urandom(size))
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def test_stale_temp_files_are_swept_at_start_and_by_cleanup(tmp_path: Path) -> None:
    root = tmp_path / "server"
    uploads = root / "data" / "tmp" / "uploads"
    uploads.mkdir(parents=True)
    # What a crash between temp file and commit leaves: bodies nobody will commit.
    stale = [make_temp_file(uploads, f"00000{i}", MIB, 2 * HOUR) for i in range(3)]
    fresh = make_temp_file(uploads, "0000099", 1000, 5)
    stack = Stack(root, LFS_ANONYMOUS="write").start()
    try:
        assert not any(path.exists() for path in stale)
        assert fresh.exists()
        assert "removed 3 stale upload temp file(s), 3.0 MiB" in stack.log.read_text()

        later = [make_temp_file(uploads, f"00001{i}", 1000, 2 * HOUR) for i in range(2)]
        done = stack.cli("cleanup")
        assert done.returncode == 0, done.stderr
        assert "removed 2 stale upload temp files, 2000 bytes" in done.stdout
        assert not any(path.exists() for path in later)
        assert fresh.exists()

        done = stack.cli("cleanup", "--older-than", "1")
        assert "removed 1 stale upload temp files, 1000 bytes" in done.stdout
        assert not fresh.exists()
        # The running server does not mind.
        data = os.urandom(MIB)
        response = put_action(actions_for(stack, REPO, "upload", data)["upload"], data)
        assert response.status_code == 200
    finally:
        stack.stop()
