"""File Locking API through the Flask test client: validation, rights, pages."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.security import generate_password_hash

from lfs_server import cli, locks
from lfs_server.app import create_app
from lfs_server.db import Database, Lock, SQLiteDatabase
from lfs_server.db.sqlite import MIGRATIONS
from lfs_server.services import services
from lfs_server.settings import Settings
from tests.lfsapi import LockApi, assert_lfs_error, basic

LFS = "application/vnd.git-lfs+json"
PASSWORD = "correct horse battery"
REPO = "team/proj"
BASE = f"/{REPO}.git/info/lfs/locks"
AS_ALICE = {"Accept": LFS, **basic("alice", PASSWORD)}
RFC3339_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def make_app(data_dir: Path, anonymous: str, database_env: dict[str, str] | None = None) -> Flask:
    env = {"LFS_DATA_DIR": str(data_dir), "LFS_ANONYMOUS": anonymous, **(database_env or {})}
    app = create_app(Settings.from_env(env))
    app.config["TESTING"] = True
    return app


@pytest.fixture(scope="module")
def password_hash() -> str:
    # a cheap hash keeps the tests fast; the server checks it like any other
    return generate_password_hash(PASSWORD, method="pbkdf2:sha256:1")


@pytest.fixture
def lock_app(tmp_path: Path, password_hash: str, database_env: dict[str, str]) -> Iterator[Flask]:
    """The app on each database (SQLite, PostgreSQL): the lock tests are its contract."""
    app = make_app(tmp_path / "data", "none", database_env)
    db: Database = services(app).db
    for name in ("alice", "bob", "carol", "boss", "root"):
        db.add_user(name, password_hash, is_admin=name == "root")
    db.set_grant("alice", "team/*", "write")
    db.set_grant("bob", "team/*", "write")
    db.set_grant("carol", REPO, "read")
    db.set_grant("boss", REPO, "admin")
    yield app
    db.close()


@pytest.fixture
def db(lock_app: Flask) -> Database:
    return services(lock_app).db


def lock_api(client: FlaskClient, user: str | None, repo: str = REPO) -> LockApi:
    """The locking endpoints as `user` (None: anonymous), through the test client."""
    return LockApi.over_flask(client, repo, None if user is None else (user, PASSWORD))


@pytest.fixture
def client(lock_app: Flask) -> FlaskClient:
    return lock_app.test_client()


@pytest.fixture
def alice(client: FlaskClient) -> LockApi:
    return lock_api(client, "alice")


@pytest.fixture
def bob(client: FlaskClient) -> LockApi:
    return lock_api(client, "bob")


def walk(api: LockApi, limit: int) -> list[dict[str, Any]]:
    """Every lock through the list endpoint, page by page."""
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        query: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            query["cursor"] = cursor
        body = api.list(**query).get_json()
        assert len(body["locks"]) <= limit
        seen += body["locks"]
        cursor = body.get("next_cursor")
        if cursor is None:
            return seen
        assert isinstance(cursor, str) and cursor


# creating


def test_create_returns_201_with_the_lock(alice: LockApi) -> None:
    response = alice.create("art/hero.psd", ref={"name": "refs/heads/main"})
    assert response.status_code == 201
    assert response.mimetype == LFS
    lock = response.get_json()["lock"]
    assert set(lock) == {"id", "path", "locked_at", "owner"}
    assert lock["path"] == "art/hero.psd"
    assert lock["owner"] == {"name": "alice"}
    assert RFC3339_RE.match(lock["locked_at"])
    assert re.fullmatch(r"[0-9a-f]{32}", lock["id"])
    assert "message" not in response.get_json()


@pytest.mark.parametrize(
    "path",
    [
        "a.bin",
        "dir/sub dir/file name.psd",
        "ünïcode/ファイル.bin",
        "a..b/c..",
        ".hidden/x",
        "...",
        "weird\\name",
        "x" * locks.MAX_PATH_LENGTH,
    ],
)
def test_paths_are_returned_exactly_as_sent(alice: LockApi, path: str) -> None:
    response = alice.create(path)
    assert response.status_code == 201
    assert response.get_json()["lock"]["path"] == path
    assert alice.list(path=path).get_json()["locks"][0]["path"] == path


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/abs/file.bin",
        "/",
        "\\abs\\file.bin",
        "\\\\server\\share\\x",
        "C:/file.bin",
        "c:\\file.bin",
        "C:file.bin",
        "..",
        "../x",
        "a/../b",
        "a/..",
        "a\\..\\b",
        "a//b",
        "a/./b",
        "./a",
        "dir/",
        "a\x00b",
        "a\nb",
        "x" * (locks.MAX_PATH_LENGTH + 1),
        None,
        5,
        True,
        ["a"],
        {"path": "a"},
    ],
)
def test_bad_paths_are_422(alice: LockApi, path: Any) -> None:
    assert_lfs_error(alice.create(path), 422)
    assert alice.list().get_json() == {"locks": []}


@pytest.mark.parametrize("raw", ["", "not json", "[]", '"a.bin"', "{", "null"])
def test_bad_bodies_are_422(alice: LockApi, raw: str) -> None:
    assert_lfs_error(alice.post("", raw=raw), 422)


@pytest.mark.parametrize("ref", ["refs/heads/main", 5, {"name": 5}, []])
def test_bad_ref_is_422(alice: LockApi, ref: Any) -> None:
    assert_lfs_error(alice.create("a.bin", ref=ref), 422)


def test_null_or_empty_ref_is_fine(alice: LockApi) -> None:
    assert alice.create("a.bin", ref=None).status_code == 201
    assert alice.create("b.bin", ref={}).status_code == 201


def test_second_lock_on_a_path_is_409_with_the_existing_lock(alice: LockApi, bob: LockApi) -> None:
    first = alice.create("a.bin").get_json()["lock"]
    for api in (bob, alice):
        response = api.create("a.bin")
        assert response.status_code == 409
        body = response.get_json()
        assert body["lock"] == first
        assert "alice" in body["message"]
    assert len(alice.list().get_json()["locks"]) == 1


def test_paths_differing_only_in_case_are_different_locks(alice: LockApi) -> None:
    assert alice.create("A.bin").status_code == 201
    assert alice.create("a.bin").status_code == 201


def test_racing_creates_make_exactly_one_lock(lock_app: Flask) -> None:
    statuses: list[int] = []
    winners: list[dict[str, Any]] = []
    bodies: list[dict[str, Any]] = []
    barrier = threading.Barrier(12)

    def attempt(user: str) -> None:
        api = lock_api(lock_app.test_client(), user)
        barrier.wait()
        response = api.create("race.bin")
        statuses.append(response.status_code)
        (winners if response.status_code == 201 else bodies).append(response.get_json())

    threads = [
        threading.Thread(target=attempt, args=("alice" if i % 2 else "bob",)) for i in range(12)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201] + [409] * 11
    assert all(body["lock"] == winners[0]["lock"] for body in bodies)


def test_database_race_exactly_one_created(db: Database) -> None:
    results: list[bool] = []
    barrier = threading.Barrier(10)

    def attempt(i: int) -> None:
        barrier.wait()
        _, created = db.create_lock(f"id{i}", REPO, "same.bin", f"user{i}", 0, owner_uid=str(i))
        results.append(created)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 9 + [True]


def test_twenty_parallel_creates_of_one_path_make_one_lock(db: Database) -> None:
    """Each thread its own connection (SQLite per thread, PostgreSQL from the pool)."""
    outcomes: list[tuple[Lock, bool]] = []
    barrier = threading.Barrier(20)

    def attempt(i: int) -> None:
        barrier.wait()
        outcomes.append(db.create_lock(f"id{i}", REPO, "one.bin", f"u{i}", 0, owner_uid=str(i)))

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [lock for lock, created in outcomes if created]
    assert len(outcomes) == 20 and len(winners) == 1
    assert all(lock == winners[0] for lock, _ in outcomes)
    assert db.list_locks(REPO, path="one.bin") == winners


# rights


def test_anonymous_is_401_with_a_challenge(client: FlaskClient, alice: LockApi) -> None:
    lock_id = alice.create("a.bin").get_json()["lock"]["id"]
    anonymous = lock_api(client, None)
    for response in (
        anonymous.create("b.bin"),
        anonymous.list(),
        anonymous.verify(),
        anonymous.unlock(lock_id, force=True),
    ):
        assert_lfs_error(response, 401)
        assert response.headers["LFS-Authenticate"].startswith("Basic")


def test_reader_may_list_but_not_create_verify_or_unlock(
    client: FlaskClient, alice: LockApi
) -> None:
    lock = alice.create("a.bin").get_json()["lock"]
    carol = lock_api(client, "carol")
    assert carol.list().get_json() == {"locks": [lock]}
    assert_lfs_error(carol.create("b.bin"), 403)
    assert_lfs_error(carol.verify(), 403)
    assert_lfs_error(carol.unlock(lock["id"], force=True), 403)
    assert len(alice.list().get_json()["locks"]) == 1


def test_no_grant_on_the_repo_is_403(client: FlaskClient) -> None:
    carol_elsewhere = lock_api(client, "carol", repo="team/other")
    assert_lfs_error(carol_elsewhere.list(), 403)


def test_own_unlock(alice: LockApi) -> None:
    lock = alice.create("a.bin").get_json()["lock"]
    response = alice.unlock(lock["id"], force=False, ref={"name": "refs/heads/main"})
    assert response.status_code == 200
    assert response.get_json() == {"lock": lock}
    assert alice.list().get_json() == {"locks": []}
    assert_lfs_error(alice.unlock(lock["id"]), 404)


def test_own_unlock_with_empty_body(alice: LockApi) -> None:
    lock = alice.create("a.bin").get_json()["lock"]
    assert alice.post(f"/{lock['id']}/unlock", raw="").status_code == 200


def test_others_lock_without_force_is_403_even_for_admins(
    client: FlaskClient, alice: LockApi
) -> None:
    lock = alice.create("a.bin").get_json()["lock"]
    for name in ("bob", "boss", "root"):
        assert_lfs_error(lock_api(client, name).unlock(lock["id"], force=False), 403)
    assert_lfs_error(lock_api(client, "bob").unlock(lock["id"]), 403)
    assert alice.list().get_json() == {"locks": [lock]}


def test_force_needs_admin_on_the_repo(client: FlaskClient, alice: LockApi, bob: LockApi) -> None:
    lock = alice.create("a.bin").get_json()["lock"]
    response = bob.unlock(lock["id"], force=True)
    assert_lfs_error(response, 403)
    assert "admin" in response.get_json()["message"]
    assert alice.list().get_json() == {"locks": [lock]}
    response = lock_api(client, "boss").unlock(lock["id"], force=True)
    assert response.status_code == 200
    assert response.get_json() == {"lock": lock}
    lock = alice.create("b.bin").get_json()["lock"]
    assert lock_api(client, "root").unlock(lock["id"], force=True).status_code == 200
    assert alice.list().get_json() == {"locks": []}


def test_force_on_own_lock_needs_only_write(alice: LockApi) -> None:
    lock = alice.create("a.bin").get_json()["lock"]
    assert alice.unlock(lock["id"], force=True).status_code == 200


def test_admin_of_one_repo_cannot_force_in_another(db: Database, client: FlaskClient) -> None:
    # boss is admin on team/proj but only a writer on team/other
    db.set_grant("boss", "team/other", "write")
    lock = lock_api(client, "bob", repo="team/other").create("a.bin").get_json()["lock"]
    boss_there = lock_api(client, "boss", repo="team/other")
    assert_lfs_error(boss_there.unlock(lock["id"], force=True), 403)


@pytest.mark.parametrize("force", ["yes", 1, 0, None, [], {}])
def test_force_must_be_a_bool(alice: LockApi, force: Any) -> None:
    lock = alice.create("a.bin").get_json()["lock"]
    assert_lfs_error(alice.unlock(lock["id"], force=force), 422)


def test_unknown_lock_is_404(alice: LockApi) -> None:
    assert_lfs_error(alice.unlock("0" * 32), 404)
    assert_lfs_error(alice.unlock("no-such-lock", force=True), 404)


def test_anonymous_writers_own_locks_as_anonymous(tmp_path: Path) -> None:
    client = make_app(tmp_path / "anon", "write").test_client()
    anonymous = lock_api(client, None)
    lock = anonymous.create("a.bin").get_json()["lock"]
    assert lock["owner"] == {"name": "anonymous"}
    assert anonymous.verify().get_json() == {"ours": [lock], "theirs": []}
    assert anonymous.unlock(lock["id"]).status_code == 200


def test_anonymous_readers_may_only_list(tmp_path: Path) -> None:
    client = make_app(tmp_path / "anon", "read").test_client()
    anonymous = lock_api(client, None)
    assert anonymous.list().get_json() == {"locks": []}
    assert_lfs_error(anonymous.create("a.bin"), 401)


# repositories


def test_locks_are_per_repository(client: FlaskClient, alice: LockApi) -> None:
    lock = alice.create("a.bin").get_json()["lock"]
    other = lock_api(client, "alice", repo="team/other")
    assert other.list().get_json() == {"locks": []}
    assert other.verify().get_json() == {"ours": [], "theirs": []}
    assert other.list(id=lock["id"]).get_json() == {"locks": []}
    assert_lfs_error(other.unlock(lock["id"]), 404)
    assert other.create("a.bin").status_code == 201
    same = client.get(
        f"/{REPO}/info/lfs/locks", headers={"Accept": LFS, **basic("alice", PASSWORD)}
    )
    assert same.get_json()["locks"] == [lock]


def test_invalid_repository_is_404(client: FlaskClient) -> None:
    response = client.get("/.hidden/info/lfs/locks", headers=AS_ALICE)
    assert_lfs_error(response, 404)


# listing and pages


def test_empty_list_and_verify(alice: LockApi) -> None:
    response = alice.list()
    assert response.status_code == 200
    assert response.mimetype == LFS
    assert response.get_json() == {"locks": []}
    assert alice.verify().get_json() == {"ours": [], "theirs": []}


def test_filters(alice: LockApi, bob: LockApi) -> None:
    a = alice.create("a.bin").get_json()["lock"]
    b = bob.create("b.bin").get_json()["lock"]
    assert alice.list(path="a.bin").get_json() == {"locks": [a]}
    assert alice.list(id=b["id"]).get_json() == {"locks": [b]}
    assert alice.list(path="b.bin", id=b["id"]).get_json() == {"locks": [b]}
    assert alice.list(path="a.bin", id=b["id"]).get_json() == {"locks": []}
    assert alice.list(path="A.BIN").get_json() == {"locks": []}
    assert alice.list(refspec="refs/heads/other").get_json() == {"locks": [a, b]}
    assert alice.list(path="", id="", cursor="").get_json() == {"locks": [a, b]}


@pytest.mark.parametrize("limit", ["0", "-1", "abc", "1.5", "1e3", " 5"])
def test_bad_query_limit_is_422(alice: LockApi, limit: str) -> None:
    assert_lfs_error(alice.list(limit=limit), 422)


@pytest.mark.parametrize("limit", [0, -1, "5", True, 1.5, [5]])
def test_bad_body_limit_is_422(alice: LockApi, limit: Any) -> None:
    assert_lfs_error(alice.verify(limit=limit), 422)


def test_null_limit_and_cursor_mean_not_given(alice: LockApi) -> None:
    assert alice.verify(limit=None, cursor=None).get_json() == {"ours": [], "theirs": []}


@pytest.mark.parametrize("cursor", ["abc", "-1", "1.0", "9" * 19])
def test_bad_cursor_is_422(alice: LockApi, cursor: str) -> None:
    assert_lfs_error(alice.list(cursor=cursor), 422)
    assert_lfs_error(alice.verify(cursor=cursor), 422)


@pytest.mark.parametrize("cursor", [5, True, ["1"]])
def test_cursor_in_a_body_must_be_a_string(alice: LockApi, cursor: Any) -> None:
    assert_lfs_error(alice.verify(cursor=cursor), 422)


def uid(db: Database, name: str) -> str:
    user = db.get_user(name)
    assert user is not None
    return user.uid


def fill(db: Database, count: int, owner: str = "alice", repo: str = REPO) -> None:
    for i in range(count):
        db.create_lock(
            locks.new_lock_id(),
            repo,
            f"file{i:04}.bin",
            owner,
            1_700_000_000 + i,
            owner_uid=uid(db, owner),
        )


def test_pages_cover_every_lock_once(db: Database, alice: LockApi) -> None:
    fill(db, 25)
    for limit in (1, 7, 10, 25, 26, 1000):
        seen = walk(alice, limit)
        assert [lock["path"] for lock in seen] == [f"file{i:04}.bin" for i in range(25)]


def test_a_full_last_page_has_no_next_cursor(db: Database, alice: LockApi) -> None:
    fill(db, 10)
    body = alice.list(limit=10).get_json()
    assert len(body["locks"]) == 10
    assert "next_cursor" not in body
    body = alice.list(limit=5).get_json()
    body = alice.list(limit=5, cursor=body["next_cursor"]).get_json()
    assert len(body["locks"]) == 5
    assert "next_cursor" not in body


def test_default_and_maximum_page_size(db: Database, alice: LockApi) -> None:
    assert (locks.DEFAULT_LIMIT, locks.MAX_LIMIT) == (100, 1000)
    fill(db, locks.MAX_LIMIT + 1)
    body = alice.list().get_json()
    assert len(body["locks"]) == locks.DEFAULT_LIMIT
    assert "next_cursor" in body
    body = alice.list(limit=10**8).get_json()
    assert len(body["locks"]) == locks.MAX_LIMIT
    last = alice.list(limit=10**8, cursor=body["next_cursor"]).get_json()
    assert [lock["path"] for lock in last["locks"]] == [f"file{locks.MAX_LIMIT:04}.bin"]
    assert "next_cursor" not in last
    verify = alice.verify().get_json()
    assert len(verify["ours"]) == locks.DEFAULT_LIMIT
    assert len(alice.verify(limit=5000).get_json()["ours"]) == locks.MAX_LIMIT


def test_deletes_between_pages_skip_nothing(db: Database, alice: LockApi) -> None:
    fill(db, 30)
    first = alice.list(limit=10).get_json()
    seen = first["locks"]
    everything = walk(alice, 1000)
    # delete a seen lock, the last lock of the page (the cursor's own lock)
    # and some unseen ones: the rest still appear exactly once
    for lock in (seen[0], seen[-1], everything[12], everything[29]):
        assert db.delete_lock(REPO, lock["id"]) is not None
    cursor = first["next_cursor"]
    while cursor:
        body = alice.list(limit=10, cursor=cursor).get_json()
        seen += body["locks"]
        cursor = body.get("next_cursor")
    ids = [lock["id"] for lock in seen]
    assert len(ids) == len(set(ids))
    expected = {lock["id"] for lock in everything} - {everything[12]["id"], everything[29]["id"]}
    assert set(ids) == expected


def test_a_deleted_sequence_number_is_never_reused(db: Database, alice: LockApi) -> None:
    fill(db, 3)
    body = alice.list(limit=3).get_json()
    assert "next_cursor" not in body
    first = alice.list(limit=2).get_json()
    db.delete_lock(REPO, body["locks"][2]["id"])  # the newest lock goes away
    fresh = alice.create("fresh.bin").get_json()["lock"]
    rest = alice.list(limit=2, cursor=first["next_cursor"]).get_json()
    assert rest == {"locks": [fresh]}


def test_verify_splits_ours_and_theirs_across_pages(db: Database, alice: LockApi) -> None:
    for i in range(9):
        owner = "alice" if i % 3 == 0 else "bob"
        db.create_lock(locks.new_lock_id(), REPO, f"f{i}.bin", owner, 0, owner_uid=uid(db, owner))
    ours: list[str] = []
    theirs: list[str] = []
    cursor = None
    pages = 0
    while True:
        body = alice.verify(limit=4, **({"cursor": cursor} if cursor else {}))
        body = body.get_json()
        pages += 1
        assert set(body) <= {"ours", "theirs", "next_cursor"}
        assert len(body["ours"]) + len(body["theirs"]) <= 4
        ours += [lock["path"] for lock in body["ours"]]
        theirs += [lock["path"] for lock in body["theirs"]]
        assert all(lock["owner"] == {"name": "bob"} for lock in body["theirs"])
        cursor = body.get("next_cursor")
        if not cursor:
            break
    assert pages == 3
    assert ours == ["f0.bin", "f3.bin", "f6.bin"]
    assert theirs == ["f1.bin", "f2.bin", "f4.bin", "f5.bin", "f7.bin", "f8.bin"]


def test_locked_at_is_rfc3339_utc(db: Database, alice: LockApi) -> None:
    db.create_lock("fixed", REPO, "a.bin", "alice", 1_795_268_151, owner_uid=uid(db, "alice"))
    assert alice.list().get_json()["locks"][0]["locked_at"] == "2026-11-21T13:35:51Z"


def test_unsupported_method_is_lfs_json(client: FlaskClient) -> None:
    response = client.delete(BASE, headers=AS_ALICE)
    assert_lfs_error(response, 405)


# database and command line


def test_a_version_1_database_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0])
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    db = SQLiteDatabase(path)
    assert db.schema_version() == len(MIGRATIONS) >= 2
    lock, created = db.create_lock("x", REPO, "a.bin", "alice", 0, owner_uid="u")
    assert created and lock.seq == 1


def test_the_schema_itself_refuses_a_second_lock_on_a_path(tmp_path: Path) -> None:
    db = SQLiteDatabase(tmp_path / "lfs.db")
    for name in ("alice", "bob"):
        db.add_user(name, None, is_admin=False)
    db.create_lock("first", REPO, "a.bin", "alice", 0, owner_uid=uid(db, "alice"))
    with pytest.raises(sqlite3.IntegrityError):
        db.conn.execute(
            "INSERT INTO locks (id, repo, path, owner, locked_at, seq) "
            "VALUES ('second', ?, 'a.bin', 'bob', 0, 99)",
            (REPO,),
        )
    lock, created = db.create_lock("third", REPO, "a.bin", "bob", 0, owner_uid=uid(db, "bob"))
    assert (lock.id, lock.owner, created) == ("first", "alice", False)
    assert db.create_lock("fourth", "team/other", "a.bin", "bob", 0, owner_uid=uid(db, "bob"))[1]


def run_cli(monkeypatch: pytest.MonkeyPatch, data_dir: Path, *argv: str) -> int:
    monkeypatch.setenv("LFS_DATA_DIR", str(data_dir))
    monkeypatch.delenv("LFS_SECRET_KEY", raising=False)
    return cli.main(list(argv))


def test_cli_list_and_remove(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    app = make_app(data_dir, "write")
    api = lock_api(app.test_client(), None)
    a = api.create("art/a b.psd").get_json()["lock"]
    b = api.create("b.bin").get_json()["lock"]
    lock_api(app.test_client(), None, repo="team/other").create("elsewhere.bin")
    capsys.readouterr()

    assert run_cli(monkeypatch, data_dir, "locks", "list", "team/proj.git") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["ID", "OWNER", "LOCKED", "PATH"]
    assert len(out) == 3
    assert out[1].startswith(a["id"]) and out[1].endswith("art/a b.psd")
    assert out[2].startswith(b["id"]) and "anonymous" in out[2]

    assert run_cli(monkeypatch, data_dir, "locks", "remove", REPO, a["id"]) == 0
    assert a["id"] in capsys.readouterr().out
    assert api.list().get_json() == {"locks": [b]}

    assert run_cli(monkeypatch, data_dir, "locks", "remove", REPO, a["id"]) == 2
    assert "no lock" in capsys.readouterr().err
    assert run_cli(monkeypatch, data_dir, "locks", "remove", "team/other", b["id"]) == 2
    assert "no lock" in capsys.readouterr().err
    assert run_cli(monkeypatch, data_dir, "locks", "list", "../etc") == 2
    assert "invalid repository name" in capsys.readouterr().err
    assert run_cli(monkeypatch, data_dir, "locks", "remove", "/abs", b["id"]) == 2
    assert "invalid repository name" in capsys.readouterr().err
