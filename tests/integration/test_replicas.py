"""Three interchangeable replicas behind a load balancer.

Each replica is its own `lfs-server serve` with its own temp dirs; all three
share one PostgreSQL database (this module's own server, so stopping it
disturbs no other test) and one SeaweedFS bucket, behind a plain nginx
(tests/balancer.py). The real git-lfs client pushes and pulls through the
balancer; a replica dies by SIGKILL in the middle of a push; PostgreSQL goes
down and comes back under load.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.balancer import LoadBalancer
from tests.engines.postgres import PostgresServer, start_server
from tests.gitclient import GitUser
from tests.integration.helpers import access_log, log_size, put_and_verify, sha256
from tests.procs import child_pids
from tests.stack import LFS_MEDIA_TYPE, Stack
from tests.stores import S3_PROXY, StoreEnv
from tests.waiting import wait_until

STORES = (S3_PROXY,)
REPLICAS = 3
PASSWORD = "correct horse battery"
ALICE = ("alice", PASSWORD)
ADMIN = ("boss", "boss password for metrics")
HEADERS = {"Accept": LFS_MEDIA_TYPE, "Content-Type": LFS_MEDIA_TYPE}


@dataclass
class Cluster:
    replicas: list[Stack]
    balancer: LoadBalancer
    store: StoreEnv
    database: PostgresServer

    def lfs_base(self, repo: str) -> str:
        return f"{self.balancer.url}/{repo}.git/info/lfs"

    def git_user(self, home: Path) -> GitUser:
        return GitUser(home, ALICE[0], ALICE[1], url=self.balancer.url)


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    server = start_server(tmp_path_factory.mktemp("replicas-postgres"))
    try:
        yield server
    finally:
        with suppress(RuntimeError):  # a test's failed restart left it stopped
            server.stop()


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, store_env: StoreEnv, database: PostgresServer
) -> Iterator[Cluster]:
    balancer = LoadBalancer(tmp_path_factory.mktemp("balancer"))
    url = database.new_database()
    replicas = [
        Stack(
            tmp_path_factory.mktemp(f"replica-{n}"),
            store_env,
            **store_env.env,
            LFS_DATABASE_URL=url,
            LFS_PUBLIC_URL=balancer.url,
            LFS_TRUSTED_PROXIES="127.0.0.1",
            LFS_REPLICA_NAME=f"replica-{n}",
            # The launcher's run dir: what a SIGKILL leaves of it stays in the test's dirs.
            TMPDIR=str(tmp_path_factory.mktemp(f"run-{n}")),
        )
        for n in range(1, REPLICAS + 1)
    ]
    try:
        # All at once, as replicas start: the schema is created once among them.
        with ThreadPoolExecutor(REPLICAS) as pool:
            list(pool.map(lambda stack: stack.start(timeout=90), replicas))
        replicas[0].add_user(ALICE[0], ALICE[1], ("team/*", "write"))
        done = replicas[0].cli(
            "user", "add", ADMIN[0], "--admin", "--password-stdin", stdin=ADMIN[1]
        )
        assert done.returncode == 0, done.stderr
        balancer.start([stack.port for stack in replicas])
        yield Cluster(replicas, balancer, store_env, database)
    finally:
        balancer.stop()
        with ThreadPoolExecutor(REPLICAS) as pool:
            list(pool.map(lambda stack: stack.stop(), replicas))


def random_files(count: int, low: int, high: int) -> dict[str, bytes]:
    sizes = [low + int.from_bytes(os.urandom(4), "big") % (high - low) for _ in range(count)]
    return {f"data/file-{n:03}.bin": os.urandom(size) for n, size in enumerate(sizes)}


def uploads_served(stack: Stack, since: int) -> int:
    return sum(
        1
        for method, uri, status in access_log(stack, since)
        if method == "PUT" and uri.startswith("/.lfs/upload/") and status == 200
    )


def pull_and_compare(
    cluster: Cluster, user: GitUser, remote: Path, clone: Path, repo: str, files: dict[str, bytes]
) -> None:
    user.clone(remote, clone, cluster.lfs_base(repo))
    user.git("lfs", "pull", cwd=clone)
    for name, data in files.items():
        assert (clone / name).read_bytes() == data, f"{name} differs after the pull"


def test_git_lfs_pushes_and_pulls_300_files_through_the_balancer(
    cluster: Cluster, tmp_path: Path
) -> None:
    repo = "team/three"
    user = cluster.git_user(tmp_path / "home")
    remote = tmp_path / "remote.git"
    work = user.new_repo(tmp_path / "work", cluster.lfs_base(repo), remote)
    files = random_files(300, 1_000, 40_000)
    user.commit_files(work, files)
    marks = [log_size(stack) for stack in cluster.replicas]
    user.git("push", "-q", "origin", "main", cwd=work)
    served = [
        uploads_served(stack, mark) for stack, mark in zip(cluster.replicas, marks, strict=True)
    ]
    assert sum(served) == len(files) and all(served), served  # every replica took a share
    assert cluster.store.bucket is not None
    stored = cluster.store.bucket.keys()
    keys = {key.rsplit("/", 1)[-1] for key in stored}
    assert {sha256(data) for data in files.values()} <= keys
    pull_and_compare(cluster, user, remote, tmp_path / "clone", repo, files)
    # The hrefs of a batch answered by any replica point at the balancer.
    oid, data = next((sha256(d), d) for d in files.values())
    body = {"operation": "download", "objects": [{"oid": oid, "size": len(data)}]}
    for stack in cluster.replicas:
        answer = requests.post(
            f"{stack.lfs_base(repo)}/objects/batch",
            json=body,
            headers=HEADERS,
            auth=ALICE,
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        href = answer.json()["objects"][0]["actions"]["download"]["href"]
        assert href.startswith(f"{cluster.balancer.url}/.lfs/download/"), href


def replica_names(url: str) -> list[str]:
    response = requests.get(f"{url}/metrics", auth=ADMIN, timeout=30)
    assert response.status_code == 200, response.text[:300]
    return [
        sample.labels["replica"]
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "lfs_replica_info" and sample.value == 1
    ]


def test_metrics_say_which_replica_answered(cluster: Cluster) -> None:
    names = [f"replica-{n}" for n in range(1, REPLICAS + 1)]
    assert [replica_names(stack.url) for stack in cluster.replicas] == [[name] for name in names]
    seen: set[str] = set()

    def every_replica_answered() -> bool:
        (name,) = replica_names(cluster.balancer.url)
        seen.add(name)
        return seen == set(names)

    assert wait_until(every_replica_answered, timeout=30, step=0), seen


def test_parallel_lock_creates_over_the_replicas_make_exactly_one_lock(cluster: Cluster) -> None:
    attempts = 20
    ready = threading.Barrier(attempts)

    def create(n: int) -> requests.Response:
        stack = cluster.replicas[n % REPLICAS]
        ready.wait(timeout=60)
        return requests.post(
            f"{stack.lfs_base('team/locks')}/locks",
            json={"path": "art/one.psd"},
            headers=HEADERS,
            auth=ALICE,
            timeout=60,
        )

    with ThreadPoolExecutor(attempts) as pool:
        answers = list(pool.map(create, range(attempts)))
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [201] + [409] * (attempts - 1), [a.text for a in answers]
    (winner,) = (answer.json()["lock"] for answer in answers if answer.status_code == 201)
    assert winner["path"] == "art/one.psd" and winner["owner"]["name"] == "alice"
    for answer in answers:
        if answer.status_code == 409:
            assert answer.json()["lock"] == winner, answer.text


# ------------------------------------------------------------ PostgreSQL down


# Clients of each kind: batch requests, and lock + unlock requests.
CLIENTS = 2
# A client honours Retry-After; scaled down, as each attempt while the
# database is down already waits up to 5 s on the server for a connection.
CLIENT_BACKOFF = 0.2
RETRY_DEADLINE = 180.0
MAX_ROUNDS = 1000


@dataclass
class LoadLog:
    """What the load's clients saw: every status, the 429s' Retry-After, rounds done."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: list[tuple[str, int]] = field(default_factory=list)
    retry_after: list[str | None] = field(default_factory=list)
    rounds: dict[str, int] = field(default_factory=dict)

    def saw(self, what: str, response: requests.Response) -> None:
        with self.lock:
            self.statuses.append((what, response.status_code))
            if response.status_code == 429:
                self.retry_after.append(response.headers.get("Retry-After"))

    def count(self, what: str, status: int) -> int:
        with self.lock:
            return self.statuses.count((what, status))

    def round_done(self, client: str) -> None:
        with self.lock:
            self.rounds[client] = self.rounds.get(client, 0) + 1

    def rounds_now(self, clients: list[str]) -> list[int]:
        with self.lock:
            return [self.rounds.get(client, 0) for client in clients]


def until_answered(
    log: LoadLog, what: str, url: str, body: dict[str, Any], done: set[int]
) -> tuple[requests.Response, int]:
    """POST until the answer is not a 429; the answer and the number of attempts."""
    deadline = time.monotonic() + RETRY_DEADLINE
    attempts = 0
    while True:
        attempts += 1
        response = requests.post(url, json=body, headers=HEADERS, auth=ALICE, timeout=60)
        log.saw(what, response)
        if response.status_code != 429:
            assert response.status_code in done, f"{what}: {response.status_code} {response.text}"
            return response, attempts
        assert time.monotonic() < deadline, f"{what}: still 429 after {RETRY_DEADLINE} s"
        time.sleep(CLIENT_BACKOFF)


def batch_client(
    base: str, log: LoadLog, name: str, objects: list[dict[str, Any]], stop: threading.Event
) -> None:
    """Download batches of stored objects until `stop` (bounded)."""
    body = {"operation": "download", "objects": objects}
    for _ in range(MAX_ROUNDS):
        if stop.is_set():
            return
        batch, _ = until_answered(log, "batch", f"{base}/objects/batch", body, {200})
        assert all("actions" in obj for obj in batch.json()["objects"]), batch.text
        log.round_done(name)


def lock_client(base: str, log: LoadLog, name: str, stop: threading.Event) -> None:
    """Lock a path of its own and unlock it again until `stop` (bounded)."""
    for round_ in range(MAX_ROUNDS):
        if stop.is_set():
            return
        path = f"load/{name}/{round_}.bin"
        created, attempts = until_answered(log, "lock", f"{base}/locks", {"path": path}, {201, 409})
        lock = created.json()["lock"]
        # A 409 after a retry: the lock an earlier attempt made, whose answer was lost.
        assert created.status_code == 201 or (attempts > 1 and lock["path"] == path), created.text
        unlock = f"{base}/locks/{lock['id']}/unlock"
        unlocked, attempts = until_answered(log, "unlock", unlock, {}, {200, 404})
        # A 404 after a retry: an earlier attempt unlocked it, its answer lost.
        assert unlocked.status_code == 200 or attempts > 1, unlocked.text
        log.round_done(name)


def test_postgresql_stopped_and_started_under_load(cluster: Cluster) -> None:
    repo = "team/load"
    objects = []
    for n in range(3):
        data = os.urandom(2000 + n)
        upload_through(cluster, repo, data)
        objects.append({"oid": sha256(data), "size": len(data)})
    base = cluster.lfs_base(repo)
    marks = [log_size(stack) for stack in cluster.replicas]
    log = LoadLog()
    stop = threading.Event()
    down = False
    names = [f"{kind}-{n}" for kind in ("batch", "lock") for n in range(CLIENTS)]
    with ThreadPoolExecutor(len(names)) as pool:
        clients = [
            pool.submit(batch_client, base, log, name, objects, stop)
            if name.startswith("batch")
            else pool.submit(lock_client, base, log, name, stop)
            for name in names
        ]

        def ended() -> bool:
            """A client stopped early: it failed; stop waiting (its result says why)."""
            return any(client.done() for client in clients)

        def each_client_did(more: int, since: list[int]) -> bool:
            now = log.rounds_now(names)
            return ended() or all(a >= b + more for a, b in zip(now, since, strict=True))

        def each_kind_refused() -> bool:
            # A lock client meets the outage at whatever step it is on: lock or unlock.
            locks = log.count("lock", 429) + log.count("unlock", 429)
            return ended() or (log.count("batch", 429) >= CLIENTS and locks >= CLIENTS)

        try:
            assert wait_until(lambda: each_client_did(2, [0] * len(names)), 60), log.rounds
            cluster.database.stop()
            down = True
            assert wait_until(each_kind_refused, 60), log.statuses
            health = requests.get(f"{cluster.replicas[0].url}/healthz", timeout=30)
            assert health.status_code == 503, health.text
            cluster.database.start()
            down = False
            back = log.rounds_now(names)
            assert wait_until(lambda: each_client_did(2, back), 120), (back, log.rounds)
        finally:
            stop.set()
            if down:
                cluster.database.start()
        for client in clients:
            client.result()  # re-raises what a client found wrong
    assert log.retry_after and all(
        value is not None and value.isdigit() and int(value) > 0 for value in log.retry_after
    ), set(log.retry_after)
    assert not [entry for entry in log.statuses if entry[1] >= 500], log.statuses
    for stack, mark in zip(cluster.replicas, marks, strict=True):  # nor from a replica
        batch_5xx = [
            entry
            for entry in access_log(stack, mark)
            if "/objects/batch" in entry[1] and entry[2] >= 500
        ]
        assert not batch_5xx, batch_5xx


def upload_through(cluster: Cluster, repo: str, data: bytes) -> None:
    """batch, PUT and verify through the balancer, as git-lfs does."""
    body = {"operation": "upload", "objects": [{"oid": sha256(data), "size": len(data)}]}
    answer = requests.post(
        f"{cluster.lfs_base(repo)}/objects/batch",
        json=body,
        headers=HEADERS,
        auth=ALICE,
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    actions = answer.json()["objects"][0].get("actions")
    if actions is not None:  # else stored already
        put_and_verify(actions, data)


# ------------------------------------------------------------ a replica dies


def kill_tree(stack: Stack) -> None:
    """SIGKILL the launcher and everything below it (nginx, gunicorn, the
    Prehasher), by PID. Each is stopped first, parents before their children,
    so no parent reacts (a restarted worker, a graceful stop) before the end."""
    assert stack.proc is not None
    stopped: list[int] = []
    pending = [stack.proc.pid]
    while pending:
        pid = pending.pop()
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
            pending += child_pids(pid)
    for pid in stopped:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    stack.proc.wait(timeout=30)


def upload_in_flight(stack: Stack) -> bool:
    """An upload's body is on its way into this replica, or being committed."""
    return bool(stack.upload_tmp_files())


def test_a_replica_killed_during_a_push_loses_nothing(cluster: Cluster, tmp_path: Path) -> None:
    repo = "team/killed"
    victim = cluster.replicas[1]
    user = cluster.git_user(tmp_path / "home")
    remote = tmp_path / "remote.git"
    work = user.new_repo(tmp_path / "work", cluster.lfs_base(repo), remote)
    files = random_files(60, 200_000, 1_000_000)
    user.commit_files(work, files)
    with ThreadPoolExecutor(1) as pool:
        push = pool.submit(user.git, "push", "-q", "origin", "main", cwd=work)
        assert wait_until(lambda: push.done() or upload_in_flight(victim), 120, step=0.005)
        assert not push.done(), "the push ended before an upload reached the victim"
        kill_tree(victim)
        push.result(timeout=300)  # git-lfs and the balancer retried what the victim had
    pull_and_compare(cluster, user, remote, tmp_path / "clone", repo, files)
    fsck = cluster.replicas[0].cli("fsck")
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert "corrupted: 0; quarantined: 0; missing: 0; not indexed: 0" in fsck.stdout, fsck.stdout
    victim.start(timeout=60)  # and it takes its place again
    assert replica_names(victim.url) == ["replica-2"]
