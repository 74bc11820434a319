"""File Locking API end to end: real nginx + gunicorn, real accounts, the real
git-lfs client, and raw HTTP for every status the API answers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.gitclient import GitUser
from tests.integration.helpers import assert_lfs_error
from tests.lfsapi import LockApi
from tests.stack import LFS_MEDIA_TYPE, Stack

USERS = {
    "alice": "alice-password-1",
    "bob": "bob-password-22",
    "carol": "carol-password-333",
    "admin": "admin-password-4444",
}
GRANTS = [("alice", "write"), ("bob", "write"), ("carol", "read"), ("admin", "admin")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A server without anonymous access; alice and bob write, carol reads,
    admin is admin on every team/ repository."""
    server = Stack(tmp_path_factory.mktemp("locks-stack"), LFS_ANONYMOUS="none")
    server.data_dir.mkdir(parents=True, exist_ok=True)
    rights = dict(GRANTS)
    for name, password in USERS.items():
        server.add_user(name, password, ("team/*", rights[name]))
    server.start()
    yield server
    server.stop()


def lock_api(stack: Stack, repo: str, user: str | None) -> LockApi:
    """The locking endpoints of `repo` as `user` (None: anonymous), over real HTTP."""
    return LockApi.over_http(stack, repo, None if user is None else (user, USERS[user]))


def git_user(root: Path, stack: Stack, name: str) -> GitUser:
    """`name` with their own HOME and their password in git's credential store."""
    return GitUser(root / f"home-{name}", name, USERS[name], stack.url)


def verify_lines(output: str) -> dict[str, tuple[bool, str]]:
    """`git lfs locks --verify` lines ('O ' marks ours) -> path: (ours, owner)."""
    result = {}
    for line in output.splitlines():
        path, owner, _ = line[2:].split("\t")
        result[path.strip()] = (line.startswith("O "), owner.strip())
    return result


def test_git_lfs_lock_push_verify_and_unlock(stack: Stack, tmp_path: Path) -> None:
    lfs_url = stack.lfs_base("team/game")
    alice, bob, admin = (git_user(tmp_path, stack, name) for name in ("alice", "bob", "admin"))
    remote = tmp_path / "remote.git"
    alice.git("init", "--bare", "-b", "main", str(remote), cwd=tmp_path)

    # alice starts the repository: two LFS files, pushed through the server
    work_a = tmp_path / "alice"
    alice.git("init", "-b", "main", str(work_a), cwd=tmp_path)
    alice.git("config", "lfs.url", lfs_url, cwd=work_a)
    alice.git("config", "lfs.locksverify", "true", cwd=work_a)
    alice.git("lfs", "track", "*.bin", cwd=work_a)
    (work_a / "level.bin").write_bytes(b"level one\n")
    (work_a / "hero.bin").write_bytes(b"hero sprite\n")
    alice.git("add", ".", cwd=work_a)
    alice.git("commit", "-m", "assets", cwd=work_a)
    alice.git("remote", "add", "origin", str(remote), cwd=work_a)
    alice.git("push", "-u", "origin", "main", cwd=work_a)

    def clone(user: GitUser) -> Path:
        work = tmp_path / user.name
        user.git(
            "clone",
            "-c",
            f"lfs.url={lfs_url}",
            "-c",
            "lfs.locksverify=true",
            str(remote),
            str(work),
            cwd=tmp_path,
        )
        assert (work / "level.bin").read_bytes() == b"level one\n"
        return work

    work_b, work_admin = clone(bob), clone(admin)

    # git lfs lock / git lfs locks
    assert "Locked level.bin" in alice.git("lfs", "lock", "level.bin", cwd=work_a)
    listed = bob.git("lfs", "locks", cwd=work_b)
    assert listed.split("\t")[:2] == ["level.bin", "alice"]
    lock_id = listed.strip().split("ID:")[1]
    assert "already locked by alice" in bob.fails("lfs", "lock", "level.bin", cwd=work_b)

    # git lfs locks --verify: ours for alice, theirs for bob
    assert verify_lines(alice.git("lfs", "locks", "--verify", cwd=work_a)) == {
        "level.bin": (True, "alice")
    }
    assert verify_lines(bob.git("lfs", "locks", "--verify", cwd=work_b)) == {
        "level.bin": (False, "alice")
    }

    # bob's push touching alice's locked file is refused; nothing reaches the remote
    before = alice.git("rev-parse", "main", cwd=remote)
    (work_b / "level.bin").write_bytes(b"bob's level\n")
    bob.git("commit", "-am", "bob edits the level", cwd=work_b)
    refused = bob.fails("push", "origin", "main", cwd=work_b)
    assert "Unable to push locked files" in refused
    assert "level.bin" in refused
    assert alice.git("rev-parse", "main", cwd=remote) == before

    # alice, the owner, pushes her change to the locked file
    (work_a / "level.bin").write_bytes(b"alice's level\n")
    alice.git("commit", "-am", "alice edits the level", cwd=work_a)
    alice.git("push", "origin", "main", cwd=work_a)
    assert alice.git("rev-parse", "main", cwd=remote) != before

    # own unlock
    assert "Unlocked level.bin" in alice.git("lfs", "unlock", "level.bin", cwd=work_a)
    assert alice.git("lfs", "locks", cwd=work_a) == ""

    # bob locks hero.bin: alice may not unlock it, with or without --force; admin may
    bob.git("reset", "--hard", "origin/main", cwd=work_b)
    assert "Locked hero.bin" in bob.git("lfs", "lock", "hero.bin", cwd=work_b)
    assert "locked by bob" in alice.fails("lfs", "unlock", "hero.bin", cwd=work_a)
    assert "needs admin" in alice.fails("lfs", "unlock", "--force", "hero.bin", cwd=work_a)
    assert "hero.bin\tbob" in admin.git("lfs", "locks", cwd=work_admin)
    assert "Unlocked hero.bin" in admin.git("lfs", "unlock", "--force", "hero.bin", cwd=work_admin)
    assert admin.git("lfs", "locks", cwd=work_admin) == ""
    assert lock_api(stack, "team/game", "alice").list().json() == {"locks": []}
    assert lock_id  # the id the client showed went into the unlock URL unescaped


# raw HTTP


def test_statuses(stack: Stack) -> None:
    repo = "team/statuses"
    alice, bob = lock_api(stack, repo, "alice"), lock_api(stack, repo, "bob")
    carol, admin = lock_api(stack, repo, "carol"), lock_api(stack, repo, "admin")
    anonymous = lock_api(stack, repo, None)

    created = alice.create("art/hero.psd", ref={"name": "refs/heads/main"})
    assert created.status_code == 201
    assert created.headers["Content-Type"].startswith(LFS_MEDIA_TYPE)
    lock = created.json()["lock"]
    assert lock["path"] == "art/hero.psd"
    assert lock["owner"] == {"name": "alice"}

    # 401 without credentials, with the challenge git-lfs needs to ask for them
    for response in (
        anonymous.create("x.bin"),
        anonymous.list(),
        anonymous.verify(),
        anonymous.unlock(lock["id"], force=True),
    ):
        assert_lfs_error(response, 401, stack)
        assert response.headers["LFS-Authenticate"].startswith("Basic")
    bad = LockApi.over_http(stack, repo, ("alice", "wrong-password"))
    assert_lfs_error(bad.list(), 401, stack)

    # a reader lists but may not create, verify or unlock
    assert carol.list().json() == {"locks": [lock]}
    assert_lfs_error(carol.create("x.bin"), 403, stack)
    assert_lfs_error(carol.verify(), 403, stack)
    assert_lfs_error(carol.unlock(lock["id"], force=True), 403, stack)

    # 422: bad paths and types
    for path in ("", "/etc/passwd", "\\x", "C:\\x", "../x", "a/../../b", "a//b", 7, None):
        assert_lfs_error(alice.create(path), 422, stack)
    assert_lfs_error(alice.post("", raw="{not json"), 422, stack)
    assert_lfs_error(alice.post("", raw="[]"), 422, stack)
    assert_lfs_error(alice.list(limit="0"), 422, stack)
    assert_lfs_error(alice.list(limit="ten"), 422, stack)
    assert_lfs_error(alice.list(cursor="not-a-cursor"), 422, stack)
    assert_lfs_error(alice.verify(limit="5"), 422, stack)
    assert_lfs_error(alice.verify(limit=-1), 422, stack)
    assert_lfs_error(alice.verify(cursor=5), 422, stack)
    assert_lfs_error(alice.unlock(lock["id"], force="yes"), 422, stack)

    # 409: the path is taken; the body carries the existing lock
    for api in (bob, alice):
        body = assert_lfs_error(api.create("art/hero.psd"), 409, stack)
        assert body["lock"] == lock

    # verify: ours and theirs per caller, both always present
    assert alice.verify().json() == {"ours": [lock], "theirs": []}
    assert bob.verify().json() == {"ours": [], "theirs": [lock]}

    # unlock: someone else's lock without force, force by a non-admin: 403
    assert_lfs_error(bob.unlock(lock["id"]), 403, stack)
    assert_lfs_error(bob.unlock(lock["id"], force=False), 403, stack)
    assert_lfs_error(admin.unlock(lock["id"], force=False), 403, stack)
    assert (
        "needs admin" in assert_lfs_error(bob.unlock(lock["id"], force=True), 403, stack)["message"]
    )
    assert alice.list().json() == {"locks": [lock]}
    # force by an admin of the repo: 200 with the removed lock
    response = admin.unlock(lock["id"], force=True)
    assert response.status_code == 200
    assert response.json() == {"lock": lock}
    assert_lfs_error(admin.unlock(lock["id"], force=True), 404, stack)

    # own unlock
    mine = bob.create("b.bin").json()["lock"]
    response = bob.unlock(mine["id"], force=False)
    assert response.status_code == 200
    assert response.json() == {"lock": mine}
    assert alice.list().json() == {"locks": []}


def test_pages_over_250_locks(stack: Stack) -> None:
    repo = "team/pages"
    alice, bob = lock_api(stack, repo, "alice"), lock_api(stack, repo, "bob")
    made = []
    for i in range(250):
        api = alice if i % 5 else bob
        response = api.create(f"assets/{i:03}.bin")
        assert response.status_code == 201
        made.append(response.json()["lock"])
    made_ids = [lock["id"] for lock in made]

    def walk(limit: int, verify: bool = False) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        cursor = None
        while True:
            extra = {"cursor": cursor} if cursor else {}
            if verify:
                body = alice.verify(limit=limit, **extra).json()
                page = body["ours"] + body["theirs"]
                assert all(lock["owner"]["name"] == "alice" for lock in body["ours"])
                assert all(lock["owner"]["name"] == "bob" for lock in body["theirs"])
            else:
                body = alice.list(limit=limit, **extra).json()
                page = body["locks"]
            assert len(page) <= limit
            seen += page
            cursor = body.get("next_cursor")
            if cursor is None:
                assert len(page) > 0 or not seen
                return seen
            assert len(page) == limit

    for limit in (1, 7, 50, 100, 249, 250, 1000):
        assert [lock["id"] for lock in walk(limit)] == made_ids
    for limit in (9, 250):
        seen = walk(limit, verify=True)
        assert sorted(lock["id"] for lock in seen) == sorted(made_ids)
        assert len(seen) == 250
    # the default page is 100
    first = alice.list().json()
    assert len(first["locks"]) == 100 and "next_cursor" in first

    # deletes between pages (the cursor's own lock, the next one, one in the
    # middle, the last): what is left still appears exactly once
    first = alice.list(limit=20).json()
    seen = first["locks"]
    gone = {made_ids[19], made_ids[20], made_ids[100], made_ids[249]}
    admin = lock_api(stack, repo, "admin")
    for lock_id in gone:
        assert admin.unlock(lock_id, force=True).status_code == 200
    cursor = first["next_cursor"]
    while cursor:
        body = alice.list(limit=20, cursor=cursor).json()
        seen += body["locks"]
        cursor = body.get("next_cursor")
    ids = [lock["id"] for lock in seen]
    assert len(ids) == len(set(ids))
    assert set(ids) == set(made_ids) - (gone - {made_ids[19]})


def test_racing_creates(stack: Stack) -> None:
    repo = "team/race"
    apis = [lock_api(stack, repo, "alice" if i % 2 else "bob") for i in range(20)]
    for api in apis[:2]:  # log in once per user, so the race is about the lock
        assert api.list().status_code == 200
    barrier = threading.Barrier(len(apis))
    results: list[requests.Response] = []

    def attempt(api: LockApi) -> None:
        barrier.wait()
        results.append(api.create("contested.bin"))

    threads = [threading.Thread(target=attempt, args=(api,)) for api in apis]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(response.status_code for response in results)
    assert statuses == [201] + [409] * 19
    winner = next(r for r in results if r.status_code == 201).json()["lock"]
    assert all(r.json()["lock"] == winner for r in results if r.status_code == 409)
    assert apis[0].list().json() == {"locks": [winner]}


def test_locks_are_per_repository(stack: Stack) -> None:
    in_a, in_b = lock_api(stack, "team/a", "alice"), lock_api(stack, "team/b", "alice")
    lock = in_a.create("shared/name.bin").json()["lock"]
    assert in_b.list().json() == {"locks": []}
    assert in_b.list(path="shared/name.bin").json() == {"locks": []}
    assert in_b.list(id=lock["id"]).json() == {"locks": []}
    assert in_b.verify().json() == {"ours": [], "theirs": []}
    assert_lfs_error(in_b.unlock(lock["id"]), 404, stack)
    assert_lfs_error(lock_api(stack, "team/b", "admin").unlock(lock["id"], force=True), 404, stack)
    other = in_b.create("shared/name.bin")
    assert other.status_code == 201
    assert other.json()["lock"]["id"] != lock["id"]
    # `team/a` and `team/a.git` name one repository
    same = requests.get(
        f"{stack.url}/team/a/info/lfs/locks", auth=("bob", USERS["bob"]), timeout=30
    )
    assert same.json() == {"locks": [lock]}
    assert in_a.list().json() == {"locks": [lock]}


def test_admin_command_line(stack: Stack) -> None:
    api = lock_api(stack, "team/cli", "bob")
    lock = api.create("models/ship.blend").json()["lock"]
    listed = stack.cli("locks", "list", "team/cli.git")
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()
    assert rows[0].split() == ["ID", "OWNER", "LOCKED", "PATH"]
    assert rows[1].split()[0] == lock["id"] and rows[1].split()[-1] == "models/ship.blend"

    unknown = stack.cli("locks", "remove", "team/cli", "0" * 32)
    assert unknown.returncode == 2 and "no lock" in unknown.stderr
    bad_repo = stack.cli("locks", "list", "team/../etc")
    assert bad_repo.returncode == 2 and "invalid repository name" in bad_repo.stderr

    removed = stack.cli("locks", "remove", "team/cli", lock["id"])
    assert removed.returncode == 0, removed.stderr
    assert api.list().json() == {"locks": []}
