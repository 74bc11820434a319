"""Load: 32 real git-lfs clients push and pull against one server for 60 s.

One stack (nginx + 3 gunicorn workers), eight users with a `*` write grant,
credentials in git's `store` helper. 32 clients, each a thread driving the
real `git` / `git-lfs` in its own HOME and work trees:

- 24 clients in 4 groups of 6 share a repository (`load/shared-G`) and a bare
  remote. Each pushes to its own branch (the test is about the LFS server, not
  about git ref races). At its k-th round every member of a group also commits
  the same "shared" file, so the same oid is pushed by up to six clients,
  often at the same moment.
- 8 clients in 4 pairs each own a repository (`load/solo-N`) with distinct
  objects and read their partner's.

A round: commit 1-3 new random files of 1-64 KiB (sometimes one of 1-4 MiB),
`git push`; then fetch a peer's branch and its LFS objects, alternately with
`git lfs fetch` (checked in .git/lfs/objects) and with a pointer checkout +
`git lfs pull` (checked in the work tree), comparing every object byte for
byte with the file its pusher wrote. Every git command is an operation, and
so is every verification: there must be zero failures.

Afterwards `lfs-server fsck` must pass, every object any client pushed must be
stored with its hash, the upload temp dir must be empty, and nginx's access
log must hold no 5xx. The log also gives the figures (requests, objects and
bytes moved, batch latency), printed as one line and, with LFS_LOAD_RESULTS=1,
written to bench/results/load.json for the README (a plain test run leaves
the repository untouched).

LFS_LOAD_SECONDS shortens the run while working on this test;
LFS_LOAD_CREDENTIAL=token makes the clients use personal access tokens
instead of passwords (results then go to bench/results/load-token.json).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import random
import re
import shutil
import subprocess
import threading
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lfs_server.db import SQLiteDatabase
from tests.gitclient import GitUser
from tests.stack import Stack
from tests.waiting import wait_until

DURATION = float(os.environ.get("LFS_LOAD_SECONDS", "60"))
CREDENTIAL = os.environ.get("LFS_LOAD_CREDENTIAL", "password")
WORKERS = 3
GROUPS = 4  # shared repositories ...
GROUP_SIZE = 6  # ... with this many clients each
PAIRS = 4  # pairs of clients with a repository each
CLIENTS = GROUPS * GROUP_SIZE + 2 * PAIRS
USERS = 8
PASSWORD = "load-pass-word-1234"
OP_TIMEOUT = 120.0
KIB = 1024
MIB = 1024 * KIB
RESULTS = (
    Path(__file__).resolve().parents[2]
    / "bench"
    / "results"
    / ("load.json" if CREDENTIAL == "password" else f"load-{CREDENTIAL}.json")
)

ACCESS_RE = re.compile(
    r'^(?P<addr>\S+) - (?P<user>\S+) \[(?P<time>[^\]]+)\] "(?P<method>[A-Z]+) (?P<uri>\S+) '
    r'[^"]*" (?P<status>\d{3}) (?P<sent>\d+) (?P<length>\d+) (?P<seconds>[\d.]+) "[^"]*"$'
)


@dataclass(frozen=True)
class Op:
    client: str
    kind: str
    ok: bool
    seconds: float
    detail: str = ""


@dataclass(frozen=True)
class Pushed:
    """One LFS file a client pushed: its path in the tree and the bytes' source."""

    path: str
    oid: str
    size: int
    source: Path


@dataclass
class Client:
    index: int
    name: str
    login: str
    user: GitUser
    repo: str
    remote: Path
    push_tree: Path
    pull_tree: Path
    group: int | None  # the shared group, None for a pair client
    peers: list[Client] = field(default_factory=list)
    pushed: list[Pushed] = field(default_factory=list)
    verified: set[str] = field(default_factory=set)
    rounds: int = 0


class Load:
    """All clients, the operations they ran, and every object pushed."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.lock = threading.Lock()
        self.stored: dict[tuple[str, str], int] = {}  # (repo, oid) -> size, once pushed
        self.sizes: dict[str, int] = {}

    def record(self, op: Op) -> None:
        with self.lock:
            self.ops.append(op)

    def git(self, client: Client, kind: str, *args: str, cwd: Path, **env: str) -> bool:
        start = time.monotonic()
        try:
            done = client.user.run("git", *args, cwd=cwd, check=False, timeout=OP_TIMEOUT, **env)
        except subprocess.TimeoutExpired:
            ok, detail = False, f"git {' '.join(args)}: timed out after {OP_TIMEOUT:.0f} s"
        else:
            ok = done.returncode == 0
            detail = (
                ""
                if ok
                else f"git {' '.join(args)}: exit {done.returncode}\n{done.stdout[-1500:]}\n"
                f"{done.stderr[-3000:]}"
            )
        self.record(Op(client.name, kind, ok, time.monotonic() - start, detail))
        return ok

    # ------------------------------------------------------------ one round

    def push_round(self, client: Client, rng: random.Random) -> None:
        k = client.rounds
        files: dict[str, bytes] = {}
        for j in range(rng.randint(1, 3)):
            files[f"{client.name}/{k:03d}-{j}.bin"] = os.urandom(rng.randint(1, 64) * KIB)
        if rng.random() < 0.12:
            files[f"{client.name}/{k:03d}-big.bin"] = os.urandom(rng.randint(1 * MIB, 4 * MIB))
        if client.group is not None:
            files[f"shared/{k:03d}.bin"] = shared_blob(client.group, k)
        entries = []
        for path, data in files.items():
            target = client.push_tree / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            entries.append(Pushed(path, hashlib.sha256(data).hexdigest(), len(data), target))
        tree = client.push_tree
        if not self.git(client, "add", "add", "-A", cwd=tree):
            return
        if not self.git(client, "commit", "commit", "-q", "-m", f"round {k}", cwd=tree):
            return
        if not self.git(
            client, "push", "push", "-q", "origin", f"HEAD:refs/heads/{client.name}", cwd=tree
        ):
            return
        with self.lock:
            client.pushed.extend(entries)
            for entry in entries:
                self.stored[(client.repo, entry.oid)] = entry.size
                self.sizes[entry.oid] = entry.size

    def pull_round(self, client: Client, rng: random.Random) -> None:
        peer = rng.choice(client.peers)
        with self.lock:
            acknowledged = list(peer.pushed)  # on the remote and the server before we fetch
        todo = [entry for entry in acknowledged if entry.oid not in client.verified]
        if not todo:
            return
        tree = client.pull_tree
        ref = f"refs/remotes/origin/{peer.name}"
        if not self.git(client, "fetch", "fetch", "-q", "origin", cwd=tree):
            return
        if client.rounds % 2 == 0:
            if not self.git(client, "lfs-fetch", "lfs", "fetch", "origin", ref, cwd=tree):
                return
            local = {
                e.oid: tree / ".git" / "lfs" / "objects" / e.oid[:2] / e.oid[2:4] / e.oid
                for e in todo
            }
        else:
            checkout = ("checkout", "-q", "-f", "--detach", ref)
            if not self.git(client, "checkout", *checkout, cwd=tree, GIT_LFS_SKIP_SMUDGE="1"):
                return
            if not self.git(client, "lfs-pull", "lfs", "pull", "origin", cwd=tree):
                return
            local = {e.oid: tree / e.path for e in todo}
        start = time.monotonic()
        wrong = []
        for entry in todo:
            try:
                same = local[entry.oid].read_bytes() == entry.source.read_bytes()
            except OSError as exc:
                same = False
                wrong.append(f"{entry.path} ({entry.oid}): {exc}")
            else:
                if not same:
                    wrong.append(f"{entry.path} ({entry.oid}): content differs")
            if same:
                client.verified.add(entry.oid)
        detail = f"from {peer.name}: " + "; ".join(wrong) if wrong else ""
        self.record(Op(client.name, "verify", not wrong, time.monotonic() - start, detail))

    def run_client(self, client: Client, start: threading.Barrier, deadline: list[float]) -> None:
        rng = random.Random(client.index)
        try:
            start.wait(timeout=60)
            while time.monotonic() < deadline[0]:
                self.push_round(client, rng)
                if time.monotonic() >= deadline[0]:
                    break
                self.pull_round(client, rng)
                client.rounds += 1
        except Exception:
            self.record(Op(client.name, "crash", False, 0.0, traceback.format_exc()))


def shared_blob(group: int, k: int) -> bytes:
    """The same bytes for every member of a group at round k (1 in 5 of 1-4 MiB)."""
    rng = random.Random(f"shared-{group}-{k}")
    size = rng.randint(1 * MIB, 4 * MIB) if k % 5 == 2 else rng.randint(1, 64) * KIB
    return rng.randbytes(size)


# ---------------------------------------------------------------- set-up


def make_clients(stack: Stack, root: Path) -> list[Client]:
    logins = [f"load{n}" for n in range(USERS)]

    def add_user(login: str) -> str:
        """The user with a `*` write grant; the secret its clients use."""
        stack.add_user(login, PASSWORD, ("*", "write"))
        if CREDENTIAL != "token":
            return PASSWORD
        created = stack.cli("token", "create", login)
        assert created.returncode == 0, created.stderr
        return created.stdout.strip()

    with ThreadPoolExecutor(4) as pool:
        secrets = dict(zip(logins, pool.map(add_user, logins), strict=True))
    layout: list[tuple[str, int | None]] = []  # (repo, group) per client
    for group in range(GROUPS):
        layout += [(f"load/shared-{group}", group)] * GROUP_SIZE
    layout += [(f"load/solo-{n}", None) for n in range(2 * PAIRS)]
    remotes = {repo: root / "remotes" / f"{repo.replace('/', '-')}.git" for repo, _ in layout}
    for remote in remotes.values():
        subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
        subprocess.run(["git", "config", "receive.autogc", "false"], cwd=remote, check=True)

    def setup(index: int) -> Client:
        repo, group = layout[index]
        name = f"c{index:02d}"
        login = logins[index % USERS]
        user = GitUser(root / name / "home", login, secrets[login], stack.url)
        push_tree = user.new_repo(root / name / "push", stack.lfs_base(repo), remotes[repo])
        return Client(
            index, name, login, user, repo, remotes[repo], push_tree, root / name / "pull", group
        )

    with ThreadPoolExecutor(8) as pool:
        clients = list(pool.map(setup, range(CLIENTS)))
    for client in clients:
        if client.group is not None:
            client.peers = [c for c in clients if c.group == client.group and c is not client]
        else:
            solo = client.index - GROUPS * GROUP_SIZE
            client.peers = [clients[GROUPS * GROUP_SIZE + (solo ^ 1)]]

    def pull_tree(client: Client) -> None:
        # Reads the peers' remote with the peers' LFS URL (the same as its own
        # in a group, the partner's for a pair).
        peer = client.peers[0]
        user, tree = client.user, client.pull_tree
        user.run("git", "init", "-q", str(tree), cwd=user.home)
        user.run("git", "remote", "add", "origin", str(peer.remote), cwd=tree)
        user.run("git", "config", "lfs.url", stack.lfs_base(peer.repo), cwd=tree)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(pull_tree, clients))
    return clients


# ---------------------------------------------------------------- figures


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def read_access_log(stack: Stack, since: int) -> list[dict[str, str]]:
    with open(stack.log, "rb") as log:
        log.seek(since)
        text = log.read().decode("utf-8", "replace")
    return [match.groupdict() for line in text.splitlines() if (match := ACCESS_RE.match(line))]


def kind_of(method: str, uri: str) -> str:
    path = uri.split("?")[0]
    if method == "POST" and path.endswith("/info/lfs/objects/batch"):
        return "batch"
    if method == "PUT" and path.startswith("/.lfs/upload/"):
        return "upload"
    if method == "GET" and path.startswith("/.lfs/download/"):
        return "download"
    if method == "POST" and path == "/.lfs/verify":
        return "verify"
    if "/info/lfs/locks" in path:
        return "locks"
    return "other"


def machine() -> dict[str, object]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model or platform.processor(),
        "python": platform.python_version(),
    }


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


# ---------------------------------------------------------------- the test


@pytest.fixture
def stack(tmp_path: Path):
    server = Stack(tmp_path / "server", LFS_ANONYMOUS="none", LFS_WORKERS=str(WORKERS))
    server.root.mkdir()
    yield server
    server.stop()


def test_32_clients_push_and_pull_for_60_seconds(stack: Stack, tmp_path: Path) -> None:
    began = time.monotonic()
    stack.start()
    clients = make_clients(stack, tmp_path / "clients")
    load = Load()
    log_start = os.path.getsize(stack.log)
    load_before = os.getloadavg()
    barrier = threading.Barrier(CLIENTS + 1)
    deadline = [math.inf]
    threads = [
        threading.Thread(
            target=load.run_client, args=(client, barrier, deadline), name=client.name, daemon=True
        )
        for client in clients
    ]
    for thread in threads:
        thread.start()
    setup_seconds = time.monotonic() - began
    deadline[0] = time.monotonic() + DURATION
    load_start = time.monotonic()
    barrier.wait(timeout=60)
    for thread in threads:
        thread.join(timeout=DURATION + 2 * OP_TIMEOUT)
    load_seconds = time.monotonic() - load_start
    load_after = os.getloadavg()
    assert not any(thread.is_alive() for thread in threads), "a client is stuck"

    # ---- the server afterwards
    def upload_tmp_is_empty() -> bool:
        return not stack.upload_tmp_files()

    wait_until(upload_tmp_is_empty, timeout=5, step=0.1)  # what is left is reported below
    leftover = [p.name for p in stack.upload_tmp_files()]
    fsck_start = time.monotonic()
    fsck = stack.cli("fsck")
    fsck_seconds = time.monotonic() - fsck_start
    missing, corrupt = [], []
    index = SQLiteDatabase(stack.data_dir / "lfs.db")
    for (repo, oid), size in sorted(load.stored.items()):
        path = stack.data_dir / "objects" / oid[:2] / oid[2:4] / oid
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            missing.append(f"{repo} {oid}")
            continue
        if index.object_sizes(repo, [oid]) != {oid: size}:  # stored, but not for this repository
            missing.append(f"{repo} {oid}")
            continue
        if len(data) != size or hashlib.sha256(data).hexdigest() != oid:
            corrupt.append(f"{repo} {oid}")

    # ---- figures from nginx's access log
    entries = read_access_log(stack, log_start)
    by_kind: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    batch_all: list[float] = []
    batch_ok: list[float] = []
    uploads = downloads = upload_bytes = download_bytes = 0
    uploaded: Counter[str] = Counter()
    server_errors = []
    for entry in entries:
        kind = kind_of(entry["method"], entry["uri"])
        status = int(entry["status"])
        by_kind[kind] += 1
        statuses[entry["status"]] += 1
        if status >= 500:
            server_errors.append(f"{entry['method']} {entry['uri']} {status}")
        if kind == "batch":
            batch_all.append(float(entry["seconds"]))
            if status == 200:
                batch_ok.append(float(entry["seconds"]))
        elif kind == "upload" and status == 200:
            uploads += 1
            oid = entry["uri"].split("?")[0].rsplit("/", 1)[-1]
            upload_bytes += load.sizes.get(oid, 0)
            uploaded[oid] += 1
        elif kind == "download" and status in (200, 206):
            downloads += 1
            download_bytes += int(entry["sent"])

    ops = load.ops
    failed = [op for op in ops if not op.ok]
    op_kinds = Counter(op.kind for op in ops)
    lfs_ops = [op for op in ops if op.kind in ("push", "lfs-fetch", "lfs-pull")]
    pushes = [op.seconds for op in ops if op.kind == "push" and op.ok]
    pulls = [op.seconds for op in ops if op.kind in ("lfs-fetch", "lfs-pull") and op.ok]
    verified = sum(len(client.verified) for client in clients)
    shared_oids = Counter(
        entry.oid for client in clients if client.group is not None for entry in client.pushed
    )
    mib = lambda n: round(n / MIB, 1)  # noqa: E731
    summary = {
        "test": "tests/load/test_load.py",
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {
            **machine(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in load_after],
        },
        "setup": {
            "clients": CLIENTS,
            "shared_repositories": f"{GROUPS} x {GROUP_SIZE} clients",
            "pair_repositories": 2 * PAIRS,
            "users": USERS,
            "gunicorn_workers": WORKERS,
            "duration_s": DURATION,
            "credential": CREDENTIAL,
        },
        "seconds": {
            "setup": round(setup_seconds, 1),
            "load": round(load_seconds, 1),
            "fsck": round(fsck_seconds, 1),
            "checks": round(time.monotonic() - load_start - load_seconds, 1),
        },
        "operations": {
            "total": len(ops),
            "failed": len(failed),
            "lfs": len(lfs_ops),
            "by_kind": dict(sorted(op_kinds.items())),
            "rounds": sum(client.rounds for client in clients),
            "push_p50_ms": ms(percentile(pushes, 0.5)),
            "push_p99_ms": ms(percentile(pushes, 0.99)),
            "pull_p50_ms": ms(percentile(pulls, 0.5)),
            "pull_p99_ms": ms(percentile(pulls, 0.99)),
        },
        "objects": {
            "pushed_unique": len(load.stored),
            "pushed_unique_mib": mib(sum(load.stored.values())),
            "shared_oids_pushed_by_2_or_more": sum(1 for n in shared_oids.values() if n > 1),
            # the same oid PUT again by another client before the first upload
            # had committed (a batch answered in between would have said "stored")
            "oids_uploaded_concurrently": sum(1 for n in uploaded.values() if n > 1),
            "downloads_verified_byte_for_byte": verified,
        },
        "http": {
            "requests": len(entries),
            "by_kind": dict(sorted(by_kind.items())),
            "statuses": dict(sorted(statuses.items())),
            "5xx": len(server_errors),
            "uploads": uploads,
            "upload_mib": mib(upload_bytes),
            "downloads": downloads,
            "download_mib": mib(download_bytes),
            "batch_requests": len(batch_all),
            "batch_200": len(batch_ok),
            "batch_p50_ms": ms(percentile(batch_ok, 0.5)),
            "batch_p99_ms": ms(percentile(batch_ok, 0.99)),
            "batch_max_ms": ms(max(batch_ok, default=0.0)),
        },
        "throughput": {
            "requests_per_s": round(len(entries) / load_seconds, 1),
            "batch_per_s": round(len(batch_all) / load_seconds, 1),
            "git_operations_per_s": round(len(ops) / load_seconds, 1),
            "objects_per_s": round((uploads + downloads) / load_seconds, 1),
            "mib_per_s": round((upload_bytes + download_bytes) / MIB / load_seconds, 1),
        },
        "fsck": {"exit": fsck.returncode, "summary": fsck.stdout.strip().splitlines()[-1:]},
        "upload_tmp_leftovers": len(leftover),
    }
    line = (
        f"load: {CLIENTS} clients, {load_seconds:.1f} s: {len(ops)} operations "
        f"({len(lfs_ops)} LFS push/fetch/pull), {len(failed)} failed; "
        f"{uploads} uploads ({mib(upload_bytes)} MiB), {downloads} downloads "
        f"({mib(download_bytes)} MiB), {verified} downloads verified; "
        f"{summary['throughput']['objects_per_s']} objects/s, "
        f"{summary['throughput']['mib_per_s']} MiB/s, {len(entries)} requests; "
        f"{len(batch_all)} batch requests: p50 {ms(percentile(batch_ok, 0.5))} ms, "
        f"p99 {ms(percentile(batch_ok, 0.99))} ms; 5xx: {len(server_errors)}; "
        f"fsck exit {fsck.returncode}"
    )
    print("\n" + line)
    print(f"load: seconds {summary['seconds']}, load average {load_before} -> {load_after}")

    shown = "\n\n".join(f"[{op.client} {op.kind}] {op.detail}" for op in failed[:10])
    assert not failed, f"{len(failed)} failed operations:\n{shown}"
    assert not server_errors, server_errors[:20]
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert not missing, f"{len(missing)} pushed objects missing: {missing[:10]}"
    assert not corrupt, f"{len(corrupt)} pushed objects corrupt: {corrupt[:10]}"
    assert not leftover, f"upload temp files left: {leftover[:10]}"
    # The load really happened: every client pushed and verified its peers'
    # objects, and shared objects were pushed by several clients.
    for client in clients:
        assert client.pushed, f"{client.name} never pushed"
        assert client.verified, f"{client.name} never verified a download"
    assert summary["objects"]["shared_oids_pushed_by_2_or_more"] > 0
    assert uploads > 0 and downloads > 0 and batch_ok

    if os.environ.get("LFS_LOAD_RESULTS"):
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"summary": line, **summary}, indent=2) + "\n")
    shutil.rmtree(tmp_path / "clients", ignore_errors=True)
