"""A data directory written by the previous version is upgraded at the first start.

The previous version (commit OLD_COMMIT, run from `git archive` of it) stores
objects per repository; this one keeps each oid once and an object index in
the database. The new server must serve every object the old one stored,
byte-identical, from the repositories that stored it, leave no old folder
behind, and finish an upgrade that an earlier start left half done.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from pathlib import Path

import pytest
import requests

from lfs_server.db import IndexedObject, SQLiteDatabase
from tests.integration.helpers import batch_objects, sha256, upload
from tests.prerequisites import skip_or_fail
from tests.stack import Stack

OLD_COMMIT = "1d306bb"
REPO_ROOT = Path(__file__).resolve().parents[2]
# Repository names that test the old layout's corners: nesting, a team whose
# name looks like a fan-out folder (ab), an oid stored by two repositories.
SHARED = os.urandom(70_000)
PUSHED: dict[str, list[bytes]] = {
    "team/a": [os.urandom(1 << 20), os.urandom(10), b"", SHARED, os.urandom(3000)],
    "team/b": [SHARED, os.urandom(5 << 20), os.urandom(123)],
    "ab/cd": [os.urandom(4096), os.urandom(4097)],
    "ab/cd/ef": [os.urandom(77), os.urandom(78)],
}


@pytest.fixture(scope="module")
def old_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The previous version's source tree."""
    root = tmp_path_factory.mktemp("old-source")
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", OLD_COMMIT], capture_output=True, check=False
    )
    if archive.returncode != 0:
        skip_or_fail(f"no git history with {OLD_COMMIT}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    return root


def old_path(data_dir: Path, repo: str, data: bytes) -> Path:
    oid = sha256(data)
    return data_dir / "objects" / f"{repo}.git" / oid[:2] / oid[2:4] / oid


def new_path(data_dir: Path, data: bytes) -> Path:
    oid = sha256(data)
    return data_dir / "objects" / oid[:2] / oid[2:4] / oid


def upload_retrying(stack: Stack, repo: str, data: bytes, attempts: int = 3) -> None:
    """Upload as git-lfs does, which retries a 503 ("try again"): on a loaded
    machine the previous version's nginx answered one for a PUT once in CI."""
    for attempt in range(attempts):
        try:
            upload(stack, repo, data)
            return
        except AssertionError as exc:
            if "try again" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(1)


def write_with_the_old_server(
    old_source: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Push PUSHED through the previous version's server; its data dir."""
    # Run from the old tree: `python -m` and gunicorn put the working directory
    # first on sys.path, and PYTHONPATH then finds the old package for the rest.
    with monkeypatch.context() as context:
        context.chdir(old_source)
        old = Stack(root, LFS_ANONYMOUS="write", PYTHONPATH=str(old_source)).start()
    try:
        for repo, payloads in PUSHED.items():
            for data in payloads:
                upload_retrying(old, repo, data)
    finally:
        assert old.stop() == 0
    for repo, payloads in PUSHED.items():
        for data in payloads:
            assert old_path(old.data_dir, repo, data).read_bytes() == data  # the old layout
    return old.data_dir


def half_upgraded(data_dir: Path) -> None:
    """What an upgrade killed part way leaves: each step boundary once.

    Started as root, the new server gives the data dir to its user before it
    upgrades, so a cut-short upgrade left files of that user's.
    """
    if os.geteuid() == 0:
        owner = pwd.getpwnam(os.environ.get("LFS_USER", "").strip() or "lfs")
        for folder, _, files in os.walk(data_dir):
            for path in (folder, *(os.path.join(folder, name) for name in files)):
                os.chown(path, owner.pw_uid, owner.pw_gid, follow_symlinks=False)
    db = SQLiteDatabase(data_dir / "lfs.db")  # the new schema, as the killed start made it
    linked = ("team/a", PUSHED["team/a"][0])  # step 1 done: linked to the new name
    indexed = ("team/a", PUSHED["team/a"][1])  # steps 1 to 3: also indexed
    done = [("ab/cd", PUSHED["ab/cd"][0]), ("team/a", SHARED)]  # all four steps
    for repo, data in [linked, indexed, *done]:
        new_path(data_dir, data).parent.mkdir(parents=True, exist_ok=True)
        os.link(old_path(data_dir, repo, data), new_path(data_dir, data))
    db.add_objects(
        [IndexedObject(repo, sha256(data), len(data), 1) for repo, data in [indexed, *done]]
    )
    for repo, data in done:
        os.unlink(old_path(data_dir, repo, data))
    # The rest, team/b's copy of SHARED among them, is untouched.


def assert_served_as_pushed(stack: Stack) -> None:
    for repo, payloads in PUSHED.items():
        items = [{"oid": sha256(data), "size": len(data)} for data in payloads]
        answer = stack.batch(repo, {"operation": "download", "objects": items})
        by_oid = {obj["oid"]: obj for obj in batch_objects(answer, stack)}
        for data in payloads:
            action = by_oid[sha256(data)]["actions"]["download"]
            got = requests.get(action["href"], headers=action["header"], timeout=60)
            assert got.status_code == 200, (repo, got.text[:200])
            assert got.content == data, repo


def test_the_old_data_dir_is_served_after_the_upgrade(
    old_source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = write_with_the_old_server(old_source, tmp_path, monkeypatch)
    half_upgraded(data_dir)

    stack = Stack(tmp_path, LFS_ANONYMOUS="write").start()
    try:
        log = stack.log.read_text(errors="replace")
        # 12 rows in all, 2 of them moved by the earlier, cut-short start.
        assert "lfs-server: upgrading the object store: 10 files" in log, log
        assert "upgrade done: 10 objects of 4 repositories indexed (1 shared" in log, log
        assert_served_as_pushed(stack)
        objects = data_dir / "objects"
        assert not [p for p in objects.rglob("*") if p.name.endswith(".git")]
        distinct = {sha256(data) for payloads in PUSHED.values() for data in payloads}
        stored = sorted(p for p in objects.rglob("*") if p.is_file())
        assert sorted(p.name for p in stored) == sorted(distinct)  # once per oid
        assert not (data_dir / "quarantine").exists()
        # A repository sees only what it stored: team/b never stored team/a's objects.
        only_a = PUSHED["team/a"][0]
        item = {"oid": sha256(only_a), "size": len(only_a)}
        (obj,) = batch_objects(
            stack.batch("team/b", {"operation": "download", "objects": [item]}), stack
        )
        assert obj["error"]["code"] == 404
        fsck = stack.cli("fsck")
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        assert f"checked {len(distinct)} objects" in fsck.stdout, fsck.stdout
    finally:
        assert stack.stop() == 0
    # Later starts find the upgrade done and say nothing of it.
    size = stack.log.stat().st_size
    stack = Stack(tmp_path, LFS_ANONYMOUS="write").start()
    try:
        with open(stack.log, "rb") as log:
            log.seek(size)
            assert b"upgrad" not in log.read()
        assert_served_as_pushed(stack)
    finally:
        stack.stop()
