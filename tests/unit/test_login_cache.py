"""The login cache (login_cache.py): what it saves, how long it may be stale,
and that the brake still sees every guess.

The app-level tests run on both databases; users get a cheap PBKDF2 hash (one
round), as in test_login_brake.py, so that many guesses take milliseconds.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.security import generate_password_hash

from lfs_server import throttle
from lfs_server.accounts import new_token
from lfs_server.db import DatabaseUnavailable, User
from lfs_server.login_cache import CachedLogin, LoginCache, Ticket
from lfs_server.services import EXTENSION, services
from tests.unit.test_login_brake import CHEAP_HASH, PASSWORD, login, readers_app
from tests.web.pages import post, sign_in

LOGIN_READS = ("get_user", "failures", "last_login", "user_grants", "get_token")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def a_login(name: str = "alice") -> CachedLogin:
    user = User(1, "0" * 32, name, CHEAP_HASH, False, 0)
    return CachedLogin(user, (("team/*", "read"),))


def remember(
    cache: LoginCache,
    name: str,
    secret: str,
    network: str,
    seconds_left: float | None = None,
) -> None:
    """A full check of these credentials that passed, as auth.py makes one."""
    ticket = cache.lookup(name, secret, network)
    assert isinstance(ticket, Ticket)
    cache.put(ticket, a_login(name), seconds_left)
    cache.done(ticket)


def hit(cache: LoginCache, name: str, secret: str, network: str) -> bool:
    found = cache.lookup(name, secret, network)
    if isinstance(found, Ticket):
        cache.done(found)
        return False
    assert found == a_login(name)
    return True


def test_an_entry_lives_its_ttl_from_the_full_check_and_use_does_not_renew_it() -> None:
    clock = Clock()
    cache = LoginCache(ttl=1.0, clock=clock)
    remember(cache, "alice", PASSWORD, "10.0.0.1")
    clock.now += 0.6
    assert hit(cache, "alice", PASSWORD, "10.0.0.1")
    clock.now += 0.5  # 1.1 s after the check, 0.5 s after the last use
    assert not hit(cache, "alice", PASSWORD, "10.0.0.1")


def test_the_ttl_counts_from_when_the_check_began() -> None:
    """A slow full check (scrypt, a wait for the database) stores an entry that
    ends LOGIN_CACHE_SECONDS after the check began, not after it ended."""
    clock = Clock()
    cache = LoginCache(ttl=1.0, clock=clock)
    ticket = cache.lookup("alice", PASSWORD, "10.0.0.1")
    assert isinstance(ticket, Ticket)
    clock.now += 0.7
    cache.put(ticket, a_login())
    cache.done(ticket)
    clock.now += 0.4
    assert not hit(cache, "alice", PASSWORD, "10.0.0.1")
    slow = cache.lookup("alice", PASSWORD, "10.0.0.1")
    assert isinstance(slow, Ticket)
    clock.now += 1.5
    cache.put(slow, a_login())  # outlived its bound: not stored
    cache.done(slow)
    assert not hit(cache, "alice", PASSWORD, "10.0.0.1")


def test_a_check_under_way_when_this_process_changed_an_account_stores_nothing() -> None:
    cache = LoginCache(ttl=60.0, clock=Clock())
    ticket = cache.lookup("alice", PASSWORD, "10.0.0.1")
    assert isinstance(ticket, Ticket)
    cache.forget_all()  # e.g. an admin page reset alice's password meanwhile
    cache.put(ticket, a_login())
    cache.done(ticket)
    assert not hit(cache, "alice", PASSWORD, "10.0.0.1")
    remember(cache, "alice", PASSWORD, "10.0.0.1")
    assert hit(cache, "alice", PASSWORD, "10.0.0.1")


def test_no_entry_of_a_name_is_used_while_a_full_check_of_it_runs() -> None:
    """Parallel guesses: the first miss sends every later request for that name
    to the brake until its check is done (and refused, if it was a guess)."""
    cache = LoginCache(ttl=60.0, clock=Clock())
    remember(cache, "alice", PASSWORD, "10.0.0.1")
    guess = cache.lookup("alice", "a guess", "10.0.0.1")
    assert isinstance(guess, Ticket)
    assert not hit(cache, "alice", PASSWORD, "10.0.0.1")
    assert not hit(cache, "alice", PASSWORD, "10.0.0.1")
    cache.refused("alice")
    cache.done(guess)
    assert not hit(cache, "alice", PASSWORD, "10.0.0.1")


def test_the_users_own_refill_holds_nothing_back() -> None:
    """Busy clients of one account (a CI farm on one token, from many
    networks): a full check of the same secret elsewhere blocks no hit, and
    an entry only held back by another secret's check stays for later."""
    cache = LoginCache(ttl=60.0, clock=Clock())
    remember(cache, "alice", PASSWORD, "10.0.0.1")
    refill = cache.lookup("alice", PASSWORD, "10.0.0.2")
    assert isinstance(refill, Ticket)
    assert hit(cache, "alice", PASSWORD, "10.0.0.1")
    token = cache.lookup("alice", "lfs_other_secret", "10.0.0.3")
    assert isinstance(token, Ticket)
    assert not hit(cache, "alice", PASSWORD, "10.0.0.1")
    cache.done(token)  # it passed: nothing was refused
    cache.done(refill)
    assert hit(cache, "alice", PASSWORD, "10.0.0.1")


def test_another_secret_name_or_network_never_matches() -> None:
    cache = LoginCache(ttl=60.0, clock=Clock())
    remember(cache, "alice", "pa\0ss", "10.0.0.1")
    assert not hit(cache, "alice", "pa\0ssx", "10.0.0.1")
    assert not hit(cache, "alice", "pa\0s", "10.0.0.1")
    assert not hit(cache, "alice\0pa", "ss", "10.0.0.1")  # the separator cannot be forged
    assert not hit(cache, "bob", "pa\0ss", "10.0.0.1")
    assert not hit(cache, "alice", "pa\0ss", "10.0.0.2")
    assert hit(cache, "alice", "pa\0ss", "10.0.0.1")


def test_names_that_are_no_user_name_are_never_remembered() -> None:
    cache = LoginCache(ttl=60.0, entries=2, clock=Clock())
    for name in ("alice\0x", "x" * 65, "anonymous", ""):
        remember(cache, name, PASSWORD, "10.0.0.1")
        assert not hit(cache, name, PASSWORD, "10.0.0.1")
        cache.refused(name)
    remember(cache, "alice", PASSWORD, "10.0.0.1")
    assert hit(cache, "alice", PASSWORD, "10.0.0.1")  # their refusals filled nothing


def test_an_entry_never_outlives_its_token() -> None:
    clock = Clock()
    cache = LoginCache(ttl=1.0, clock=clock)
    remember(cache, "alice", "lfs_token", "10.0.0.1", seconds_left=0.3)
    clock.now += 0.4
    assert not hit(cache, "alice", "lfs_token", "10.0.0.1")
    remember(cache, "alice", "lfs_token", "10.0.0.1", seconds_left=-1.0)
    assert not hit(cache, "alice", "lfs_token", "10.0.0.1")


def test_a_refused_name_is_not_trusted_for_the_brakes_window() -> None:
    clock = Clock()
    cache = LoginCache(ttl=600.0, refusal_window=300.0, clock=clock)
    remember(cache, "alice", PASSWORD, "10.0.0.1")
    remember(cache, "bob", PASSWORD, "10.0.0.1")
    cache.refused("alice")
    assert not hit(cache, "alice", PASSWORD, "10.0.0.1")
    remember(cache, "alice", PASSWORD, "10.0.0.1")  # refused: not remembered
    assert not hit(cache, "alice", PASSWORD, "10.0.0.1")
    assert hit(cache, "bob", PASSWORD, "10.0.0.1")
    clock.now += 301.0
    remember(cache, "alice", PASSWORD, "10.0.0.1")
    assert hit(cache, "alice", PASSWORD, "10.0.0.1")


def test_too_many_refused_names_turn_every_entry_off_instead_of_forgetting_one() -> None:
    clock = Clock()
    cache = LoginCache(ttl=600.0, entries=4, refusal_window=300.0, clock=clock)
    cache.refused("alice")
    for n in range(4):
        cache.refused(f"flood{n}")  # an attacker trying to push alice out
    remember(cache, "alice", PASSWORD, "10.0.0.1")
    remember(cache, "bob", PASSWORD, "10.0.0.1")
    assert not hit(cache, "alice", PASSWORD, "10.0.0.1")
    assert not hit(cache, "bob", PASSWORD, "10.0.0.1")
    clock.now += 301.0
    remember(cache, "alice", PASSWORD, "10.0.0.1")
    assert hit(cache, "alice", PASSWORD, "10.0.0.1")


@pytest.fixture
def app(tmp_path: Path, database_env: dict[str, str]) -> Iterator[Flask]:
    """An app whose login cache keeps entries an hour: each test decides when
    the bound has passed, instead of racing a one-second clock."""
    app = readers_app(tmp_path / "data", database_env, "alice")
    app.extensions[EXTENSION] = dataclasses.replace(services(app), logins=LoginCache(ttl=3600.0))
    yield app
    services(app).db.close()


@pytest.fixture
def reads(app: Flask, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The login reads the database gets (every other call goes through)."""
    db = services(app).db
    seen: list[str] = []
    for name in LOGIN_READS:
        real = getattr(db, name)

        def counted(*args: object, _name: str = name, _real: object = real) -> object:
            seen.append(_name)
            return _real(*args)  # type: ignore[operator]

        monkeypatch.setattr(db, name, counted)
    return seen


def test_a_remembered_login_reads_nothing_of_the_login_again(
    client: FlaskClient, reads: list[str]
) -> None:
    assert login(client, "alice", PASSWORD) == 200
    assert {"get_user", "failures", "user_grants"} <= set(reads)
    reads.clear()
    for _ in range(5):
        assert login(client, "alice", PASSWORD) == 200
    assert reads == []
    assert login(client, "alice", PASSWORD, ip="10.0.0.2") == 200  # another network: full check
    assert "failures" in reads


def test_a_remembered_token_login_reads_nothing_again(
    app: Flask, client: FlaskClient, reads: list[str]
) -> None:
    token_id, token, secret_hash = new_token()
    services(app).db.add_token("alice", token_id, secret_hash, "ci", None)
    assert login(client, "alice", token) == 200
    assert "get_token" in reads
    reads.clear()
    assert login(client, "alice", token) == 200
    assert reads == []


def test_the_brake_still_refuses_the_right_password_from_a_remembered_network(
    client: FlaskClient,
) -> None:
    """alice's own client logged in from 10.0.0.1, so her login is remembered
    there; a guesser on that same network fills the brake: from then on the
    right password is refused there too, as it would be without the cache."""
    assert login(client, "alice", PASSWORD) == 200
    for _ in range(throttle.MAX_PER_USER_AND_CLIENT):
        assert login(client, "alice", "a guess") == 401
    assert login(client, "alice", PASSWORD) == 429
    assert login(client, "alice", PASSWORD, ip="10.0.0.9") == 200  # elsewhere she goes on


def test_a_wrong_guess_makes_the_next_right_password_take_the_full_check(
    client: FlaskClient, reads: list[str]
) -> None:
    assert login(client, "alice", PASSWORD) == 200
    assert login(client, "alice", "a guess", ip="10.9.9.9") == 401
    reads.clear()
    assert login(client, "alice", PASSWORD) == 200
    assert "failures" in reads


def test_a_token_revoked_on_the_web_page_is_refused_by_that_worker_at_once(
    app: Flask, client: FlaskClient
) -> None:
    db = services(app).db
    db.set_password("alice", generate_password_hash("web password 123", "pbkdf2:sha256:1"))
    token_id, token, secret_hash = new_token()
    db.add_token("alice", token_id, secret_hash, "ci", None)
    assert login(client, "alice", token) == 200
    page = sign_in(app, "alice", "web password 123")
    assert post(page, "/tokens/revoke", token_id=token_id).status_code == 200
    assert login(client, "alice", token) == 401


def test_a_full_check_that_fails_with_an_error_turns_the_names_entries_off(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A guess whose brake check meets a database outage (429) counts nothing,
    so it must not leave the right password answerable from the cache."""
    assert login(client, "alice", PASSWORD) == 200
    db = services(app).db
    real = db.failures

    def down(*args: object) -> object:
        raise DatabaseUnavailable("database unavailable")

    monkeypatch.setattr(db, "failures", down)
    assert login(client, "alice", "a guess") == 429
    monkeypatch.setattr(db, "failures", real)
    # Other workers counted this network's guesses meanwhile: the brake is shut.
    for _ in range(throttle.MAX_PER_USER_AND_CLIENT):
        db.add_failure(["user:alice@10.0.0.1"], time.time(), throttle.WINDOW_SECONDS)
    assert login(client, "alice", PASSWORD) == 429
