"""/healthz and lfs_healthy on the real stack: the workers see the launcher's Prehasher.

The Prehasher lives in the launcher, the checks run in gunicorn's workers:
only the real stack shows that they reach it, that the gauge survives
prometheus_client's multiprocess mode, and that uploads go on when the
Prehasher is gone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.helpers import assert_no_leak, sha256, stored_copies, upload
from tests.stack import LFS_MEDIA_TYPE, Stack

REPO = "health/repo"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    server = Stack(tmp_path, LFS_ANONYMOUS="write", LFS_METRICS="public").start()
    yield server
    server.stop()


def healthy(stack: Stack) -> dict[str, float]:
    text = requests.get(f"{stack.url}/metrics", timeout=10).text
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == "lfs_healthy"]
    return {sample.labels["check"]: sample.value for sample in family.samples}


def prehash_socket(stack: Stack) -> Path:
    """The socket the launcher gave the workers (from a worker's environment)."""
    assert stack.proc is not None
    for task in Path(f"/proc/{stack.proc.pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            for entry in environ:
                if entry.startswith(b"LFS_PREHASH_SOCKET="):
                    return Path(entry.split(b"=", 1)[1].decode())
    raise AssertionError("no child of the launcher has LFS_PREHASH_SOCKET")


def test_healthz_checks_everything_and_writes_nothing(stack: Stack) -> None:
    uploads = stack.data_dir / "tmp" / "uploads"
    before = os.stat(uploads).st_mtime_ns
    for _ in range(5):
        response = requests.get(f"{stack.url}/healthz", timeout=10)
        assert response.status_code == 200, response.text
        assert response.json()["checks"] == {"database": "ok", "store": "ok", "prehasher": "ok"}
    assert os.stat(uploads).st_mtime_ns == before  # no file made and removed per probe
    assert healthy(stack) == {"database": 1, "store": 1, "prehasher": 1}


def test_without_the_prehasher_healthz_says_so_and_uploads_go_on(stack: Stack) -> None:
    prehash_socket(stack).unlink()  # the Prehasher can no longer be reached
    response = requests.get(f"{stack.url}/healthz", timeout=10)
    assert response.status_code == 503
    assert response.headers["Content-Type"].startswith(LFS_MEDIA_TYPE)
    assert response.json()["message"] == "unhealthy: prehasher not answering"
    assert response.json()["checks"]["prehasher"] == "not answering"
    assert_no_leak(response.text, stack)
    assert healthy(stack)["prehasher"] == 0
    data = os.urandom(3 << 20)
    upload(stack, REPO, data)  # hashed by the app itself
    (stored,) = stored_copies(stack, sha256(data))
    assert stored.read_bytes() == data
