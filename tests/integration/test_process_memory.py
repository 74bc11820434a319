"""What each process of a running server imports, and what the whole tree costs in memory.

Every Python process of the stack (the launcher, the Prehasher, the gunicorn
master and workers) runs with a `sitecustomize` on PYTHONPATH that notes,
per process, each watched module it imports itself. A module a worker
inherited from its master at fork is not imported again, so is not noted.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.engines.seaweedfs import HOST_AWS_VARIABLES, aws_env
from tests.integration.helpers import lfs_headers
from tests.procs import descendants, gunicorn_workers, launcher_child
from tests.stack import Stack

MIB = 1 << 20
REPO = "team/memory"
# The whole tree's PSS, idle and while a large object moves.
LIMIT = 100 * MIB
# What one large transfer may add to the idle tree (buffers, not the object).
TRANSFER_GROWTH = 8 * MIB
WEB_STACK = ("flask", "werkzeug", "jinja2", "lfs_server.app")
BACKENDS = ("boto3", "botocore", "s3transfer", "psycopg", "psycopg_pool")
RECORDER = '''
import os
import sys

WATCHED = frozenset({watched!r})
RECORDS = {records!r}


class ImportRecorder:
    """Notes a watched module's import by this process, then lets it be found as usual."""

    def find_spec(self, name, path=None, target=None):
        if name in WATCHED:
            with open(os.path.join(RECORDS, str(os.getpid())), "a") as out:
                out.write(name + "\\n")
        return None


sys.meta_path.insert(0, ImportRecorder())
'''


def recording_stack(root: Path, **env: str) -> tuple[Stack, Path]:
    """A stack (not started) whose Python processes note their imports; the notes' folder."""
    hook, records = root / "hook", root / "records"
    hook.mkdir()
    records.mkdir()
    # The server's processes run as LFS_USER when the tests run as root.
    hook.chmod(0o755)
    records.chmod(0o777)
    text = RECORDER.format(watched=sorted(WEB_STACK + BACKENDS), records=str(records))
    (hook / "sitecustomize.py").write_text(text)
    (hook / "sitecustomize.py").chmod(0o644)
    (root / "stack").mkdir()
    (root / "stack").chmod(0o711)
    search = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    return Stack(root / "stack", LFS_ANONYMOUS="write", PYTHONPATH=search, **env), records


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path]]:
    stack, records = recording_stack(tmp_path_factory.mktemp("memory"))
    stack.start()
    try:
        yield stack, records
    finally:
        stack.stop()


def imported(records: Path, pid: int) -> set[str]:
    path = records / str(pid)
    return set(path.read_text().split()) if path.exists() else set()


def make_object(path: Path, size: int) -> str:
    """`size` bytes that no other object has; their SHA-256."""
    block = bytearray(os.urandom(MIB))
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        for index in range(size // MIB):
            block[:8] = index.to_bytes(8, "little")
            out.write(block)
            digest.update(block)
    return digest.hexdigest()


def action(stack: Stack, operation: str, oid: str, size: int) -> dict:
    answer = stack.batch(REPO, {"operation": operation, "objects": [{"oid": oid, "size": size}]})
    assert answer.status_code == 200, answer.text
    (obj,) = answer.json()["objects"]
    assert operation in obj.get("actions", {}), obj
    return obj["actions"][operation]


def transfer(stack: Stack, path: Path, oid: str, size: int) -> None:
    """Upload the object through its batch action, then download it."""
    upload = action(stack, "upload", oid, size)
    with open(path, "rb") as body:
        answer = requests.put(upload["href"], data=body, headers=upload["header"], timeout=300)
    assert answer.status_code == 200, answer.text
    download = action(stack, "download", oid, size)
    with requests.get(
        download["href"], headers=download.get("header", {}), stream=True, timeout=300
    ) as answer:
        assert answer.status_code == 200
        got = sum(len(chunk) for chunk in answer.iter_content(MIB))
    assert got == size


def tree_pss(stack: Stack) -> int:
    """PSS of the launcher and every process below it, in bytes."""
    assert stack.proc is not None
    total = 0
    for pid in [stack.proc.pid, *descendants(stack.proc.pid)]:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as rollup:
                total += next(int(line.split()[1]) for line in rollup if line.startswith("Pss:"))
        except (FileNotFoundError, ProcessLookupError):
            continue  # gone meanwhile
    return total * 1024


def test_default_server_imports_neither_boto3_nor_psycopg(recorded, tmp_path: Path) -> None:
    stack, records = recorded
    src = tmp_path / "object.bin"
    oid = make_object(src, MIB)
    transfer(stack, src, oid, MIB)
    assert stack.proc is not None
    everyone = [stack.proc.pid, *descendants(stack.proc.pid)]
    for pid in everyone:
        assert not imported(records, pid) & set(BACKENDS), (pid, imported(records, pid))


def test_launcher_and_prehasher_import_no_web_stack(recorded) -> None:
    stack, records = recorded
    assert stack.proc is not None
    for pid in (stack.proc.pid, launcher_child(stack, "prehash_process")):
        assert not imported(records, pid), (pid, imported(records, pid))


def test_workers_share_the_modules_their_master_imported(recorded) -> None:
    stack, records = recorded
    assert stack.batch(REPO, {"operation": "download", "objects": []}).status_code == 200
    assert "lfs_server.app" in imported(records, launcher_child(stack, "gunicorn"))
    for worker in gunicorn_workers(stack):
        assert not imported(records, worker) & set(WEB_STACK), imported(records, worker)


def test_backends_are_imported_by_the_gunicorn_master_alone_when_asked_for(
    tmp_path: Path, seaweedfs, postgres
) -> None:
    """On S3 and PostgreSQL (an admin to create too) the launcher still holds
    neither boto3, psycopg nor Werkzeug; the workers inherit them from their master."""
    env = {
        **aws_env(tmp_path / "aws"),
        "LFS_STORE": "s3",
        "LFS_S3_BUCKET": seaweedfs.new_bucket(),
        "LFS_S3_ENDPOINT": seaweedfs.endpoint,
        "LFS_DATABASE_URL": postgres.new_database(),
        "LFS_ADMIN_USER": "boss",
        "LFS_ADMIN_PASSWORD": "a long enough password",
    }
    stack, records = recording_stack(tmp_path, **env)
    stack.env = {k: v for k, v in stack.env.items() if k not in HOST_AWS_VARIABLES} | env
    stack.start()
    try:
        src = tmp_path / "object.bin"
        oid = make_object(src, MIB)
        transfer(stack, src, oid, MIB)
        assert stack.proc is not None
        for pid in (stack.proc.pid, launcher_child(stack, "prehash_process")):
            assert not imported(records, pid), (pid, imported(records, pid))
        master = imported(records, launcher_child(stack, "gunicorn"))
        assert {"boto3", "psycopg", "lfs_server.app"} <= master, master
        for worker in gunicorn_workers(stack):
            assert not imported(records, worker), imported(records, worker)
    finally:
        stack.stop()


def test_server_tree_stays_under_100_mib_pss(recorded, tmp_path: Path) -> None:
    stack, _ = recorded
    src = tmp_path / "object.bin"
    # Warm-up: each worker's first requests build what it keeps.
    for _ in range(4):
        oid = make_object(src, MIB)
        transfer(stack, src, oid, MIB)
        requests.get(f"{stack.url}/healthz", headers=lfs_headers(), timeout=10)
    idle = tree_pss(stack)
    assert idle <= LIMIT, f"idle tree PSS {idle / MIB:.1f} MiB"
    size = 256 * MIB
    oid = make_object(src, size)
    peak = [idle]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], tree_pss(stack))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        transfer(stack, src, oid, size)
    finally:
        done.set()
        sampler.join()
    print(f"\ntree PSS: idle {idle / MIB:.1f} MiB, peak {peak[0] / MIB:.1f} MiB")
    assert peak[0] <= LIMIT, f"peak tree PSS {peak[0] / MIB:.1f} MiB"
    assert peak[0] <= idle + TRANSFER_GROWTH, (idle / MIB, peak[0] / MIB)
