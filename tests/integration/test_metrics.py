"""/metrics on the real stack with three gunicorn workers: every count exact.

Requests spread over the workers (and one worker is killed half-way), yet
every scrape, whichever worker answers it, shows exactly what was done.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.helpers import (
    actions_for,
    assert_lfs_error,
    download_action,
    put_action,
    sha256,
    upload,
    wait_until,
)
from tests.procs import descendants
from tests.stack import Stack

REPO = "metrics/repo"
ADMIN = ("boss", "boss password for metrics")
WORKERS = 3
N_BATCHES = 90
SCRAPES = 6

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    server = Stack(
        tmp_path_factory.mktemp("metrics"), LFS_ANONYMOUS="write", LFS_WORKERS=str(WORKERS)
    ).start()
    done = server.cli("user", "add", ADMIN[0], "--admin", "--password-stdin", stdin=ADMIN[1])
    assert done.returncode == 0, done.stderr
    server.add_user("alice", "alice password 1234", ("*", "write"))
    yield server
    server.stop()


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def scrape(stack: Stack) -> Samples:
    response = requests.get(f"{stack.url}/metrics", auth=ADMIN, timeout=10)
    assert response.status_code == 200, response.text[:300]
    assert response.headers["Content-Type"].startswith("text/plain"), response.headers
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def requests_of(samples: Samples, endpoint: str, status: int) -> float:
    return value(samples, "lfs_http_requests_total", endpoint=endpoint, status=str(status))


def metrics_dir(stack: Stack) -> Path:
    """The PROMETHEUS_MULTIPROC_DIR the launcher gave gunicorn."""
    assert stack.proc is not None
    for pid in descendants(stack.proc.pid):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in environ:
            if item.startswith(b"PROMETHEUS_MULTIPROC_DIR="):
                return Path(item.partition(b"=")[2].decode())
    raise AssertionError("no gunicorn process has PROMETHEUS_MULTIPROC_DIR")


def batches_per_worker(stack: Stack) -> dict[int, float]:
    """Successful batch requests each worker process (by pid) counted, from its own file."""
    per_worker = {}
    for path in metrics_dir(stack).glob("counter_*.db"):
        with tempfile.TemporaryDirectory() as alone:
            shutil.copy(path, alone)
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=alone)
            count = registry.get_sample_value(
                "lfs_http_requests_total", {"endpoint": "batch.batch", "status": "200"}
            )
        per_worker[int(path.stem.rpartition("_")[2])] = count or 0.0
    return per_worker


def run_batches(stack: Stack, count: int) -> None:
    body = {"operation": "download", "objects": [{"oid": sha256(b"nothing"), "size": 7}]}

    def one(_: int) -> None:
        answers: list[requests.Response] = []

        def answered_by_the_app() -> bool:
            # A 502 comes from nginx alone (an idle connection to a killed
            # worker): the app never saw it, so asking again keeps the count exact.
            answers.append(stack.batch(REPO, body))
            return answers[-1].status_code != 502

        assert wait_until(answered_by_the_app, timeout=30, step=0), (
            f"{len(answers)} answers in 30 s, all 502"
        )
        assert answers[-1].status_code == 200, answers[-1].text[:300]

    with ThreadPoolExecutor(max_workers=12) as pool:
        list(pool.map(one, range(count)))


def test_batch_counts_are_exact_across_workers(stack: Stack) -> None:
    before = scrape(stack)
    half = N_BATCHES // 2
    run_batches(stack, half)
    served = {pid: n for pid, n in batches_per_worker(stack).items() if n}
    assert sum(served.values()) == half + requests_of(before, "batch.batch", 200)

    # A worker that served batches dies hard; gunicorn starts another. Its
    # counts stay in its file and are still summed.
    victim = max(served, key=lambda pid: served[pid])
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: not Path(f"/proc/{victim}").exists(), timeout=10), (
        f"killed worker {victim} was not reaped"
    )
    run_batches(stack, N_BATCHES - half)

    workers = {pid: n for pid, n in batches_per_worker(stack).items() if n}
    assert len(workers) >= 2, workers
    assert victim in workers, workers

    for _ in range(SCRAPES):  # each scrape may be answered by another worker
        after = scrape(stack)
        assert (
            requests_of(after, "batch.batch", 200) - requests_of(before, "batch.batch", 200)
            == N_BATCHES
        )
        count = value(after, "lfs_batch_duration_seconds_count")
        assert count - value(before, "lfs_batch_duration_seconds_count") == N_BATCHES
        assert value(after, "lfs_batch_duration_seconds_bucket", le="+Inf") == count
        assert value(after, "lfs_batch_duration_seconds_sum") > value(
            before, "lfs_batch_duration_seconds_sum"
        )
    assert sum(workers.values()) == requests_of(after, "batch.batch", 200)


def test_uploads_downloads_and_objects_are_counted(stack: Stack) -> None:
    payloads = [os.urandom(1000 * (i + 1) + i) for i in range(12)]
    before = scrape(stack)
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda data: upload(stack, REPO, data), payloads))

    # An upload of an object that is already stored, here for another
    # repository and then once more, is accepted (bytes in) but stores
    # nothing new: objects are stored once per oid.
    again = payloads[0]
    actions = actions_for(stack, "metrics/other", "upload", again)
    assert put_action(actions["upload"], again).status_code == 200
    assert put_action(actions["upload"], again).status_code == 200

    # Downloads: whole objects, a range, and a HEAD (no bytes).
    for data in payloads:
        action = download_action(stack, REPO, data)
        response = requests.get(action["href"], headers=action["header"], timeout=30)
        assert response.content == data
    action = download_action(stack, REPO, payloads[-1])
    ranged = requests.get(
        action["href"], headers={**action["header"], "Range": "bytes=10-109"}, timeout=30
    )
    assert ranged.status_code == 206 and len(ranged.content) == 100
    head = requests.head(action["href"], headers=action["header"], timeout=30)
    assert head.status_code == 200

    uploaded = sum(map(len, payloads)) + 2 * len(again)
    downloaded = sum(map(len, payloads)) + 100
    for _ in range(SCRAPES):
        after = scrape(stack)

        def delta(name: str, after: Samples = after, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        assert delta("lfs_upload_bytes_total") == uploaded
        assert delta("lfs_objects_stored_total") == len(payloads)
        assert delta("lfs_download_bytes_total") == downloaded
        assert (
            delta("lfs_http_requests_total", endpoint="transfer.upload_commit", status="200")
            == len(payloads) + 2
        )
        # The PUT commits: the batch offers no verify action, and upload() sends none.
        assert delta("lfs_http_requests_total", endpoint="transfer.verify", status="200") == 0
        assert (
            delta("lfs_http_requests_total", endpoint="transfer.download", status="200")
            == len(payloads) + 2
        )
        assert delta("lfs_upload_verify_failures_total", reason="sha256") == 0


def test_upload_verify_failures_are_counted(stack: Stack) -> None:
    data = os.urandom(4096)
    before = scrape(stack)
    actions = actions_for(stack, REPO, "upload", data)
    # Right size, wrong bytes: the SHA-256 check at commit refuses it.
    wrong = put_action(actions["upload"], os.urandom(len(data)))
    assert_lfs_error(wrong, 422, stack)
    # Chunked, so no Content-Length: refused before the body, never committed.
    short = requests.put(
        actions["upload"]["href"],
        data=iter([data[:1000]]),
        headers=actions["upload"]["header"],
        timeout=30,
    )
    assert_lfs_error(short, 411, stack)
    for _ in range(SCRAPES):
        after = scrape(stack)
        for reason, expected in (("sha256", 1), ("size", 0)):
            failures = value(after, "lfs_upload_verify_failures_total", reason=reason)
            assert (
                failures - value(before, "lfs_upload_verify_failures_total", reason=reason)
                == expected
            ), reason
        assert value(after, "lfs_objects_stored_total") == value(before, "lfs_objects_stored_total")
        assert value(after, "lfs_upload_bytes_total") == value(before, "lfs_upload_bytes_total")


def test_metrics_need_a_server_admin(stack: Stack) -> None:
    # LFS_METRICS is unset: admin. Anonymous write access to objects is no
    # access to the metrics.
    anonymous = requests.get(f"{stack.url}/metrics", timeout=10)
    assert_lfs_error(anonymous, 401, stack)
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic ")
    wrong = requests.get(f"{stack.url}/metrics", auth=(ADMIN[0], "wrong"), timeout=10)
    assert_lfs_error(wrong, 401, stack)
    alice = requests.get(f"{stack.url}/metrics", auth=("alice", "alice password 1234"), timeout=10)
    assert_lfs_error(alice, 403, stack)
    samples = scrape(stack)
    assert requests_of(samples, "metrics.metrics", 401) >= 2
    assert requests_of(samples, "metrics.metrics", 403) >= 1
    # Endpoint labels are Flask endpoint names, never raw URLs.
    requests.get(f"{stack.url}/some/{sha256(b'x')}/random/path", timeout=10)
    labels = {
        dict(labels)["endpoint"]
        for (name, labels) in scrape(stack)
        if name == "lfs_http_requests_total"
    }
    assert all("/" not in label for label in labels), labels
    assert "unmatched" in labels
