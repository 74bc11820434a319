"""The failed-login brake (throttle.py) in one process: the per-user cap across
addresses, what it spares (recent good networks, access tokens), IPv6 /64
grouping, and that no password is hashed once a limit is hit.

Users here get a cheap PBKDF2 hash (one round) so that 50 wrong guesses take
milliseconds; the brake does not care which hash a password has.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.security import generate_password_hash

from lfs_server import accounts, throttle
from lfs_server.accounts import new_token
from lfs_server.app import create_app
from lfs_server.db import Database
from lfs_server.services import services
from tests.unit.conftest import make_settings

LFS = "application/vnd.git-lfs+json"
OID = hashlib.sha256(b"hello").hexdigest()
PASSWORD = "correct horse battery"
CHEAP_HASH = generate_password_hash(PASSWORD, "pbkdf2:sha256:1")


def readers_app(data_dir: Path, database_env: dict[str, str], *names: str) -> Flask:
    """An app without anonymous access whose users `names` have PASSWORD
    (cheaply hashed) and read team/*; close its database when done."""
    app = create_app(make_settings(data_dir, LFS_ANONYMOUS="none", **database_env))
    db: Database = services(app).db
    for name in names:
        db.add_user(name, CHEAP_HASH, is_admin=False)
        db.set_grant(name, "team/*", "read")
    return app


@pytest.fixture
def app(tmp_path: Path, database_env: dict[str, str]) -> Iterator[Flask]:
    """The app on each database (SQLite, PostgreSQL): the brake's state is in it."""
    app = readers_app(tmp_path / "data", database_env, "alice", "bob")
    yield app
    services(app).db.close()


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every password check that reaches the (slow, in production) hash."""
    calls: list[str] = []
    real = accounts.password_matches

    def counted(password_hash: str | None, password: str) -> bool:
        calls.append(password)
        return real(password_hash, password)

    monkeypatch.setattr(accounts, "password_matches", counted)
    return calls


def login(client: FlaskClient, name: str, secret: str, ip: str = "10.0.0.1") -> int:
    """The status of a batch request with these Basic credentials, as nginx forwards it."""
    encoded = base64.b64encode(f"{name}:{secret}".encode()).decode()
    response = client.post(
        "/team/proj.git/info/lfs/objects/batch",
        json={"operation": "download", "objects": [{"oid": OID, "size": 5}]},
        headers={"Authorization": f"Basic {encoded}", "X-Forwarded-For": ip},
        content_type=LFS,
    )
    return response.status_code


def addresses(prefix: str, count: int) -> Iterator[str]:
    """`count` distinct IPv4 addresses (one per guess: none reaches a per-address limit)."""
    for n in range(count):
        yield f"{prefix}.{n // 250}.{n % 250 + 1}"


def botnet(client: FlaskClient, name: str, count: int = throttle.MAX_PER_USER) -> None:
    """`count` wrong passwords for `name`, each from a different address."""
    for ip in addresses("10.66", count):
        assert login(client, name, "guess", ip) == 401


def test_ipv6_clients_are_grouped_by_their_64() -> None:
    one = throttle.network("2001:db8:1:2:aaaa::1")
    assert one == throttle.network("2001:db8:1:2:ffff:ffff:ffff:ffff") == "2001:db8:1:2::/64"
    assert throttle.network("2001:db8:1:3::1") != one
    assert throttle.network("198.51.100.7") == "198.51.100.7"
    assert throttle.network("::ffff:198.51.100.7") == "198.51.100.7"
    assert throttle.network("unknown") == "unknown"


def test_one_64_shares_the_per_address_limit(client: FlaskClient) -> None:
    for n in range(throttle.MAX_PER_USER_AND_CLIENT):
        assert login(client, "alice", "guess", f"2001:db8:1:2::{n + 1:x}") == 401
    assert login(client, "alice", PASSWORD, "2001:db8:1:2:dead:beef:0:1") == 429
    assert login(client, "alice", PASSWORD, "2001:db8:1:3::1") == 200


def test_guesses_from_many_addresses_hit_the_per_user_cap(client: FlaskClient) -> None:
    botnet(client, "alice")
    assert login(client, "alice", "guess", "192.0.2.1") == 429
    assert login(client, "alice", PASSWORD, "192.0.2.2") == 429
    assert login(client, "bob", PASSWORD, "192.0.2.3") == 200


def test_addresses_that_logged_in_lately_are_exempt(client: FlaskClient) -> None:
    assert login(client, "alice", PASSWORD, "192.0.2.10") == 200
    assert login(client, "alice", PASSWORD, "2001:db8:7:7::1") == 200
    botnet(client, "alice")
    assert login(client, "alice", PASSWORD, "192.0.2.10") == 200
    assert login(client, "alice", PASSWORD, "2001:db8:7:7::2") == 200  # same /64, new address
    assert login(client, "alice", PASSWORD, "192.0.2.11") == 429
    # A good network is exempt only from the per-user cap: its own limits still hold.
    for _ in range(throttle.MAX_PER_USER_AND_CLIENT):
        assert login(client, "alice", "typo", "192.0.2.10") == 401
    assert login(client, "alice", PASSWORD, "192.0.2.10") == 429


def test_a_good_login_is_forgotten_after_its_time(client: FlaskClient, app: Flask) -> None:
    db: Database = services(app).db
    alice = db.get_user("alice")
    assert alice is not None
    db.remember_login(alice.id, "192.0.2.20", 0.0, 0.0)  # long ago
    botnet(client, "alice")
    assert login(client, "alice", PASSWORD, "192.0.2.20") == 429


def test_a_recreated_user_does_not_inherit_good_logins(client: FlaskClient, app: Flask) -> None:
    db: Database = services(app).db
    assert login(client, "bob", PASSWORD, "192.0.2.30") == 200
    db.remove_user("bob")
    db.add_user("bob", CHEAP_HASH, is_admin=False)
    db.set_grant("bob", "team/*", "read")
    botnet(client, "bob")
    assert login(client, "bob", PASSWORD, "192.0.2.30") == 429


def test_good_logins_are_written_at_most_once_a_day(
    client: FlaskClient, app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    db: Database = services(app).db
    writes: list[str] = []
    real = db.remember_login

    def counted(user_id: int, network: str, when: float, forget_before: float) -> None:
        writes.append(network)
        real(user_id, network, when, forget_before)

    monkeypatch.setattr(db, "remember_login", counted)
    for _ in range(3):
        assert login(client, "alice", PASSWORD, "192.0.2.40") == 200
    assert writes == ["192.0.2.40"]


def test_access_tokens_are_never_slowed_by_the_per_user_cap(
    client: FlaskClient, app: Flask
) -> None:
    db: Database = services(app).db
    token_id, token, secret_hash = new_token()
    db.add_token("alice", token_id, secret_hash, "ci", None)
    botnet(client, "alice")
    assert login(client, "alice", PASSWORD, "192.0.2.50") == 429
    assert login(client, "alice", token, "192.0.2.51") == 200


def test_failed_tokens_do_not_count_towards_the_per_user_cap(client: FlaskClient) -> None:
    _, wrong_token, _ = new_token()
    for ip in addresses("10.67", throttle.MAX_PER_USER + 5):
        assert login(client, "alice", wrong_token, ip) == 401
    assert login(client, "alice", PASSWORD, "192.0.2.60") == 200


def test_no_password_is_hashed_once_a_limit_is_hit(client: FlaskClient, hashes: list[str]) -> None:
    botnet(client, "alice")
    assert len(hashes) == throttle.MAX_PER_USER
    for ip in addresses("10.68", 20):
        assert login(client, "alice", "another guess", ip) == 429
    for _ in range(throttle.MAX_PER_USER_AND_CLIENT):
        assert login(client, "bob", "guess", "192.0.2.70") == 401
    assert login(client, "bob", "guess", "192.0.2.70") == 429
    assert len(hashes) == throttle.MAX_PER_USER + throttle.MAX_PER_USER_AND_CLIENT
