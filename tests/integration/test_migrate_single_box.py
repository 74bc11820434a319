"""From one box to the scaled-out set-up, end to end, the way an operator goes.

A single-box server (local store, SQLite) is filled through its CLI and the
real git-lfs client: users with passwords, an admin, grants on three
repositories, access tokens, locks taken with `git lfs lock`, and 300 objects
pushed by `git push`. It is stopped. With the replica's settings in the
environment (LFS_DATABASE_URL, LFS_STORE=s3, LFS_S3_*) and the old
LFS_DATA_DIR, `lfs-server migrate-db --to $LFS_DATABASE_URL` and
`lfs-server migrate-store --to s3` run through the real CLI; migrate-store is
interrupted with Ctrl-C half-way and run again. Then a server on PostgreSQL
and the bucket, with a new empty data dir (the old one moved away), serves
the same people: their passwords and tokens log in, the locks are theirs,
fresh clones pull every object byte-identical, and a new push lands in the
bucket.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lfs_server.units import human_bytes
from tests.engines.postgres import PostgresServer
from tests.engines.seaweedfs import HOST_AWS_VARIABLES, SeaweedFS, aws_env
from tests.gitclient import GitUser
from tests.integration.helpers import UI, sha256, web_sign_in
from tests.migrating import Summary, key_for, migrate_store, run_until_some_copied, summary
from tests.stack import Stack, run_cli
from tests.stores import S3_PROXY, BucketView, StoreEnv

MIB = 1 << 20
PASSWORDS = {
    "ops": "ops-password-1234",
    "alice": "alice-password-5678",
    "bob": "bob-password-91011",
}
GRANTS = {
    "alice": (("team/*", "write"), ("other/gamma", "read")),
    "bob": (("other/gamma", "write"), ("team/*", "read"), ("team/alpha", "write")),
    "carol": (("team/*", "read"),),  # no password: her access token only
}
TOKEN_OWNERS = ("carol", "bob")
# Files per repository; who pushes it on the single box and who clones it
# afresh from the new server (carol with her token, the others with passwords).
REPOS = {
    "team/alpha": (120, "alice", "bob"),
    "team/beta": (100, "alice", "carol"),
    "other/gamma": (80, "bob", "alice"),
}
# One file of team/alpha is in team/beta too: one object, two index rows.
SHARED = "from-alpha/000.bin"
LOCKED = {
    "team/alpha": "alpha/007.bin",
    "team/beta": "beta/010.bin",
    "other/gamma": "gamma/000.bin",
}
POINTER_PREFIX = b"version https://git-lfs.github.com/spec/v1\n"


def contents(index: int) -> bytes:
    """The index-th file: 1 B to 64 KiB, every 50th 1 MiB, one 6 MiB (two parts of 5 MiB)."""
    if index == 150:
        return os.urandom(6 * MIB + 1)
    if index % 50 == 25:
        return os.urandom(MIB)
    return os.urandom(1 + index * 211 % (64 * 1024))


@dataclass
class SingleBox:
    """The stopped single box and what its people hold."""

    stack: Stack
    people: dict[str, GitUser]
    secrets: dict[str, str]  # what each person logs in with: a password, carol a token
    tokens: dict[str, str]
    remotes: dict[str, Path]
    trees: dict[str, Path]  # the pusher's work tree of each repository
    files: dict[str, dict[str, bytes]]  # repo -> path -> bytes
    locks: dict[str, list[str]] = field(default_factory=dict)  # `git lfs locks` lines

    @property
    def objects(self) -> dict[str, int]:
        """Every distinct object: oid -> size."""
        return {sha256(data): len(data) for files in self.files.values() for data in files.values()}


@dataclass(frozen=True)
class Migration:
    db: subprocess.CompletedProcess[str]
    interrupted: tuple[int, str, str]  # exit code, stdout, stderr
    resumed: subprocess.CompletedProcess[str]


def lock_lines(output: str) -> list[str]:
    return sorted(line for line in output.splitlines() if line.strip())


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> SingleBox:
    """The single box filled through its CLI and the real git-lfs client, then stopped."""
    stack = Stack(tmp_path_factory.mktemp("single-box")).start()
    homes = tmp_path_factory.mktemp("people")
    try:
        admin = stack.cli(
            "user", "add", "ops", "--admin", "--password-stdin", stdin=PASSWORDS["ops"]
        )
        assert admin.returncode == 0, admin.stderr
        for name in ("alice", "bob"):
            stack.add_user(name, PASSWORDS[name], *GRANTS[name])
        assert stack.cli("user", "add", "carol", "--no-password").returncode == 0
        for pattern, right in GRANTS["carol"]:
            assert stack.cli("grant", "carol", pattern, right).returncode == 0
        tokens = {}
        for name in TOKEN_OWNERS:
            made = stack.cli("token", "create", name, "--note", "migrated", "--expires", "90d")
            assert made.returncode == 0, made.stderr
            tokens[name] = made.stdout.strip()
        secrets = {**PASSWORDS, "carol": tokens["carol"]}
        people = {
            name: GitUser(homes / name, name, secrets[name], stack.url)
            for name in ("alice", "bob", "carol")
        }
        files: dict[str, dict[str, bytes]] = {}
        index = 0
        for repo, (count, _, _) in REPOS.items():
            folder = repo.split("/")[1]
            files[repo] = {f"{folder}/{n:03d}.bin": contents(index + n) for n in range(count)}
            index += count
        files["team/beta"][SHARED] = files["team/alpha"]["alpha/000.bin"]
        filled = SingleBox(stack, people, secrets, tokens, {}, {}, files)
        assert len(filled.objects) == 300
        for repo, (_, pusher, _) in REPOS.items():
            person = people[pusher]
            remote = homes / "git" / f"{repo}.git"
            remote.parent.mkdir(parents=True, exist_ok=True)
            tree = person.new_repo(homes / pusher / repo, stack.lfs_base(repo), remote)
            person.commit_files(tree, files[repo], f"{len(files[repo])} files")
            person.git("push", "-q", "origin", "main", cwd=tree)
            assert f"Locked {LOCKED[repo]}" in person.git("lfs", "lock", LOCKED[repo], cwd=tree)
            filled.remotes[repo], filled.trees[repo] = remote, tree
            filled.locks[repo] = lock_lines(person.git("lfs", "locks", cwd=tree))
            assert len(filled.locks[repo]) == 1 and f"\t{pusher}" in filled.locks[repo][0]
    finally:
        stack.stop()
    return filled


@pytest.fixture(scope="module")
def replica_settings(
    postgres: PostgresServer, seaweedfs: SeaweedFS, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """What every replica of the scaled-out set-up is given: one database, one bucket."""
    return {
        "LFS_DATABASE_URL": postgres.new_database(),
        "LFS_STORE": "s3",
        "LFS_S3_BUCKET": seaweedfs.new_bucket(),
        "LFS_S3_ENDPOINT": seaweedfs.endpoint,
        "LFS_S3_PART_SIZE": "5M",
        **aws_env(tmp_path_factory.mktemp("aws")),
    }


@pytest.fixture(scope="module")
def bucket(seaweedfs: SeaweedFS, replica_settings: dict[str, str]) -> BucketView:
    return BucketView(seaweedfs.client, replica_settings["LFS_S3_BUCKET"])


@pytest.fixture(scope="module")
def migration(box: SingleBox, replica_settings: dict[str, str]) -> Migration:
    """Both commands, run on the stopped box with the replica's settings set."""
    env = {
        **{name: value for name, value in box.stack.env.items() if name not in HOST_AWS_VARIABLES},
        **replica_settings,
    }
    db = run_cli(env, "migrate-db", "--to", replica_settings["LFS_DATABASE_URL"], timeout=300)
    assert db.returncode == 0, db.stdout + db.stderr
    interrupted = run_until_some_copied(env, lambda run: run.send_signal(signal.SIGINT), 300)
    resumed = migrate_store(env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    return Migration(db, interrupted, resumed)


@pytest.fixture(scope="module")
def replica(
    box: SingleBox,
    migration: Migration,
    replica_settings: dict[str, str],
    bucket: BucketView,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """A server on PostgreSQL and the bucket with a new, empty data dir; the
    old data dir moved away meanwhile. Everyone's git now points at it."""
    s3 = {name: value for name, value in replica_settings.items() if name != "LFS_DATABASE_URL"}
    store = StoreEnv(S3_PROXY, s3, bucket, unset=HOST_AWS_VARIABLES)
    retired = box.stack.root / "data-retired"
    box.stack.data_dir.rename(retired)
    stack = Stack(tmp_path_factory.mktemp("replica"), store, **replica_settings)
    try:
        stack.start()
        for name, person in box.people.items():
            person.set_password(name, box.secrets[name], stack.url)
        for repo, tree in box.trees.items():
            person = box.people[REPOS[repo][1]]
            person.git("config", "lfs.url", stack.lfs_base(repo), cwd=tree)
        yield stack
    finally:
        stack.stop()
        retired.rename(box.stack.data_dir)


def fresh_clone(person: GitUser, box: SingleBox, repo: str, replica: Stack, name: str) -> Path:
    where = person.home / "clones" / name / repo
    return person.clone(box.remotes[repo], where, replica.lfs_base(repo))


def assert_nothing_kept_locally(stack: Stack) -> None:
    """No object, database or signing key of its own in the replica's data dir."""
    kept = [
        path.relative_to(stack.data_dir) for path in stack.data_dir.rglob("*") if path.is_file()
    ]
    assert kept == [], kept


def test_migrate_db_copies_every_account_lock_and_index_row(
    box: SingleBox, migration: Migration
) -> None:
    out = migration.db.stdout
    assert out.startswith("migrated LFS_DATA_DIR's database to PostgreSQL"), out
    index_rows = sum(len(files) for files in box.files.values())
    for table, rows in (("users", 4), ("tokens", 2), ("locks", 3), ("objects", index_rows)):
        assert re.search(rf"^{table} +{rows}$", out, re.MULTILINE), out
    assert "secret.key is now the key kept in the database" in out, out


def test_migrate_store_interrupted_then_resumed_copies_each_object_once(
    box: SingleBox, migration: Migration, bucket: BucketView
) -> None:
    code, out, err = migration.interrupted
    assert code == 130, out + err
    assert "interrupted: run `lfs-server migrate-store --to s3` again to resume" in out, out
    assert "Traceback" not in out + err
    objects = box.objects
    first, second = summary(out), summary(migration.resumed.stdout)
    assert 0 < first.copied < len(objects), out
    assert (first.skipped, first.failed, first.objects) == (0, 0, len(objects)), out
    assert second == Summary(
        len(objects) - first.copied,
        first.copied,
        0,
        len(objects),
        sum(objects.values()) - first.copied_bytes,
    ), migration.resumed.stdout
    assert bucket.keys() == sorted(key_for(oid) for oid in objects)


def test_fsck_of_the_new_set_up_finds_every_object_indexed_and_intact(
    box: SingleBox, replica: Stack
) -> None:
    done = replica.cli("fsck")
    assert done.returncode == 0, done.stdout + done.stderr
    objects = box.objects
    assert (
        f"fsck: checked {len(objects)} objects, {sum(objects.values())} bytes "
        f"({human_bytes(sum(objects.values()))}) in {len(REPOS)} repositories; "
        "corrupted: 0; quarantined: 0; missing: 0; not indexed: 0"
    ) in done.stdout.splitlines(), done.stdout


def test_the_same_people_log_in_with_their_passwords(box: SingleBox, replica: Stack) -> None:
    listing = {"operation": "download", "objects": []}
    for name in PASSWORDS:
        assert replica.batch("team/alpha", listing, auth=(name, PASSWORDS[name])).status_code == 200
        wrong = replica.batch("team/alpha", listing, auth=(name, PASSWORDS[name] + "x"))
        assert wrong.status_code == 401, wrong.text
    # alice may write team/*, only read other/gamma: her grants came along.
    upload = {"operation": "upload", "objects": [{"oid": "a" * 64, "size": 1}]}
    assert replica.batch("team/beta", upload, auth=("alice", PASSWORDS["alice"])).status_code == 200
    refused = replica.batch("other/gamma", upload, auth=("alice", PASSWORDS["alice"]))
    assert refused.status_code == 403, refused.text
    # The admin is still the admin on the web pages; alice is not.
    admin = web_sign_in(replica, "ops", PASSWORDS["ops"])
    assert admin.get(f"{replica.url}{UI}/admin/users", timeout=30).status_code == 200
    alice = web_sign_in(replica, "alice", PASSWORDS["alice"])
    assert alice.get(f"{replica.url}{UI}/admin/users", timeout=30).status_code == 403


def test_the_tokens_work_with_their_owners_rights(box: SingleBox, replica: Stack) -> None:
    carol = ("carol", box.tokens["carol"])
    listing = {"operation": "download", "objects": []}
    upload = {"operation": "upload", "objects": [{"oid": "b" * 64, "size": 1}]}
    assert replica.batch("team/beta", listing, auth=carol).status_code == 200
    assert replica.batch("team/beta", upload, auth=carol).status_code == 403
    assert replica.batch("other/gamma", upload, auth=("bob", box.tokens["bob"])).status_code == 200
    token = box.tokens["bob"]
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert replica.batch("other/gamma", listing, auth=("bob", forged)).status_code == 401


def test_the_locks_are_there_with_their_owners(box: SingleBox, replica: Stack) -> None:
    for repo, (_, pusher, reader) in REPOS.items():
        person = box.people[reader]
        clone = fresh_clone(person, box, repo, replica, "locks")
        assert lock_lines(person.git("lfs", "locks", cwd=clone)) == box.locks[repo], repo
        # The lock is the pusher's own (their identity came along), nobody else's.
        owner = box.people[pusher]
        ours = owner.git("lfs", "locks", "--verify", cwd=box.trees[repo])
        assert ours.startswith(f"O {LOCKED[repo]}"), ours
    bob = box.people["bob"]
    clone = fresh_clone(bob, box, "team/alpha", replica, "unlock")
    assert "locked by alice" in bob.fails("lfs", "unlock", LOCKED["team/alpha"], cwd=clone)


def test_fresh_clones_pull_every_object_byte_identical(box: SingleBox, replica: Stack) -> None:
    pulled: set[str] = set()
    for repo, (_, _, reader) in REPOS.items():
        person = box.people[reader]
        clone = fresh_clone(person, box, repo, replica, "pull")
        for path in box.files[repo]:
            assert (clone / path).read_bytes().startswith(POINTER_PREFIX), path
        person.git("lfs", "pull", cwd=clone)
        got = {path: sha256((clone / path).read_bytes()) for path in box.files[repo]}
        assert got == {path: sha256(data) for path, data in box.files[repo].items()}, repo
        pulled |= set(got.values())
    assert pulled == set(box.objects)
    assert_nothing_kept_locally(replica)


def test_a_push_of_a_new_object_goes_to_the_bucket(
    box: SingleBox, replica: Stack, bucket: BucketView
) -> None:
    bob, repo = box.people["bob"], "other/gamma"
    data = os.urandom(200_000)
    bob.commit_files(box.trees[repo], {"gamma/new.bin": data}, "after the move")
    bob.git("push", "-q", "origin", "main", cwd=box.trees[repo])
    assert bucket.read(key_for(sha256(data))) == data
    alice = box.people["alice"]
    clone = fresh_clone(alice, box, repo, replica, "after-push")
    alice.git("lfs", "pull", "--include", "gamma/new.bin", cwd=clone)
    assert (clone / "gamma/new.bin").read_bytes() == data
    assert_nothing_kept_locally(replica)
