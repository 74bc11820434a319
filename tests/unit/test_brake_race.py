"""The login brake under parallel guesses: each password is counted before it
is hashed, atomically with the check, so no more than a limit's worth of
guesses is ever hashed, however many arrive at once."""

from __future__ import annotations

import base64
import hashlib
import threading
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.security import generate_password_hash

from lfs_server import accounts, throttle
from lfs_server.app import create_app
from lfs_server.db import SQLiteDatabase
from lfs_server.services import services
from tests.unit.conftest import make_settings
from tests.waiting import wait_until

LFS = "application/vnd.git-lfs+json"
OID = hashlib.sha256(b"hello").hexdigest()
PASSWORD = "correct horse battery"
GUESSES = 40
CLIENT = "198.51.100.7"


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    app = create_app(make_settings(tmp_path / "data", LFS_ANONYMOUS="none"))
    db: SQLiteDatabase = services(app).db
    # A cheap hash: the brake does not care which one a password has.
    db.add_user("alice", generate_password_hash(PASSWORD, "pbkdf2:sha256:1"), is_admin=False)
    db.set_grant("alice", "team/*", "read")
    return app


class HeldHashes:
    """Every password hash, each held until `release`: all guesses in flight at once."""

    def __init__(self) -> None:
        self.hashed: list[str] = []
        self.lock = threading.Lock()
        self.release = threading.Event()

    def __call__(self, password_hash: str | None, password: str) -> bool:
        with self.lock:
            self.hashed.append(password)
        assert self.release.wait(timeout=30), "the hashes were never released"
        return REAL_PASSWORD_MATCHES(password_hash, password)


REAL_PASSWORD_MATCHES = accounts.password_matches


def login(app: Flask, secret: str) -> int:
    encoded = base64.b64encode(f"alice:{secret}".encode()).decode()
    response = app.test_client().post(
        "/team/proj.git/info/lfs/objects/batch",
        json={"operation": "download", "objects": [{"oid": OID, "size": 5}]},
        headers={"Authorization": f"Basic {encoded}", "X-Forwarded-For": CLIENT},
        content_type=LFS,
    )
    return response.status_code


def test_parallel_wrong_passwords_hash_at_most_the_limit(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldHashes()
    monkeypatch.setattr(accounts, "password_matches", held)
    statuses: list[int] = []

    def guess(n: int) -> None:
        status = login(app, f"wrong guess {n}")
        with held.lock:
            statuses.append(status)

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(GUESSES)]
    for thread in threads:
        thread.start()

    def settled_all() -> bool:
        """Every guess is either being hashed (held) or already answered."""
        with held.lock:
            return len(held.hashed) + len(statuses) == GUESSES

    settled = wait_until(settled_all, timeout=30)
    held.release.set()
    for thread in threads:
        thread.join(timeout=30)
    assert settled, f"{len(held.hashed)} hashing, {len(statuses)} answered of {GUESSES}"
    assert len(held.hashed) == throttle.MAX_PER_USER_AND_CLIENT
    assert sorted(statuses) == (
        [401] * throttle.MAX_PER_USER_AND_CLIENT
        + [429] * (GUESSES - throttle.MAX_PER_USER_AND_CLIENT)
    )


def test_a_good_login_takes_its_count_back(app: Flask) -> None:
    for n in range(throttle.MAX_PER_USER_AND_CLIENT - 1):
        assert login(app, f"wrong guess {n}") == 401
    assert login(app, PASSWORD) == 200
    # The good login was counted while its password was hashed, then taken
    # back: one more wrong guess is still answered, the next is braked.
    assert login(app, "one more wrong guess") == 401
    assert login(app, "and another") == 429
