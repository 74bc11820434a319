"""The real git-lfs client against the real stack: push, clone, pull, re-push.

Everything runs as a GitUser (tests/gitclient.py): a throw-away HOME with its
own .gitconfig and `git lfs install`, GIT_CONFIG_NOSYSTEM and
GIT_TERMINAL_PROMPT=0, so neither the developer's configuration nor a
credential prompt can change the outcome.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from tests.gitclient import GitUser
from tests.integration.helpers import access_log, batch_objects, log_size, sha256
from tests.stack import Stack
from tests.stores import ALL_STORES

STORES = ALL_STORES

REPO = "team/proj"
MIB = 1 << 20
# (folder, size, count): 300 files, about 160 MiB in all.
FILE_SETS = (
    ("tiny", 1, 168),
    ("small", 16 * 1024, 100),
    ("medium", MIB, 30),
    ("large", 64 * MIB, 2),
)
POINTER_PREFIX = b"version https://git-lfs.github.com/spec/v1\n"


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory) -> GitUser:
    user = GitUser(tmp_path_factory.mktemp("home"), "lfs-test")
    config = (user.home / ".gitconfig").read_text()
    assert "git-lfs filter-process" in config, config
    return user


def make_files(work: Path) -> dict[str, str]:
    """Write the test files; their repo-relative paths and SHA-256."""
    expected = {}
    for folder, size, count in FILE_SETS:
        (work / folder).mkdir()
        for index in range(count):
            data = bytes([index]) if size == 1 else os.urandom(size)
            relative = f"{folder}/{index:03d}.bin"
            (work / relative).write_bytes(data)
            expected[relative] = sha256(data)
    return expected


def tree_hashes(root: Path, paths: list[str]) -> dict[str, str]:
    return {relative: sha256((root / relative).read_bytes()) for relative in paths}


def test_push_clone_pull_and_repush(stack: Stack, user: GitUser, tmp_path: Path) -> None:
    lfs_url = stack.lfs_base(REPO)
    remote = tmp_path / "remote.git"
    work = tmp_path / "work"
    user.git("init", "--bare", str(remote), cwd=tmp_path)
    user.git("init", str(work), cwd=tmp_path)
    user.git("config", "lfs.url", lfs_url, cwd=work)
    user.git("lfs", "track", "*.bin", cwd=work)
    expected = make_files(work)
    assert len(expected) == 300
    oids = Counter(expected.values())
    assert len(oids) == 300, "every file must be a distinct object"
    user.git("add", ".", cwd=work)
    user.git("commit", "-q", "-m", "300 LFS files", cwd=work)
    user.git("remote", "add", "origin", str(remote), cwd=work)

    # First push: every object goes up exactly once and is stored verified.
    before_push = log_size(stack)
    user.git("push", "-q", "origin", "main", cwd=work)
    pushed = access_log(stack, before_push)
    puts = [(uri, status) for method, uri, status in pushed if method == "PUT"]
    if stack.store.direct:
        # The bodies went to the bucket itself; each verified one is there
        # under its oid, and no upload key is left.
        assert puts == []
        assert stack.bucket is not None
        assert stack.bucket.keys() == sorted(f"{o[:2]}/{o[2:4]}/{o}" for o in oids)
    else:
        assert sorted(uri.rsplit("/", 1)[1] for uri, _ in puts) == sorted(oids), (
            "each object must be uploaded exactly once"
        )
        assert {status for _, status in puts} == {200}, puts
    verified = [
        status for method, uri, status in pushed if (method, uri) == ("POST", "/.lfs/verify")
    ]
    if stack.store.direct:
        assert verified == [200] * len(oids), "the client verifies every direct upload"
    else:
        # The PUT's 200 is the commit: the batch offers no verify, the client sends none.
        assert verified == [], verified
    assert not [entry for entry in pushed if entry[2] >= 500], pushed
    stored = batch_objects(
        stack.batch(
            REPO,
            {
                "operation": "download",
                "objects": [{"oid": oid, "size": size} for oid, size in _sizes(work, expected)],
            },
        ),
        stack,
    )
    assert sorted(obj["oid"] for obj in stored) == sorted(oids)
    assert all("download" in obj.get("actions", {}) for obj in stored), [
        obj for obj in stored if "actions" not in obj
    ][:3]

    # Second push of the same objects: the server says it has them all,
    # and the client uploads nothing.
    before_repush = log_size(stack)
    user.git("lfs", "push", "--all", "origin", cwd=work)
    repushed = access_log(stack, before_repush)
    assert [entry for entry in repushed if entry[0] == "POST" and entry[1].endswith("/batch")], (
        "the second push must ask the server (batch) which objects it lacks"
    )
    assert not [entry for entry in repushed if entry[0] in ("PUT", "POST") and "/.lfs/" in entry[1]]
    again = batch_objects(
        stack.batch(
            REPO,
            {
                "operation": "upload",
                "objects": [{"oid": oid, "size": size} for oid, size in _sizes(work, expected)],
            },
        ),
        stack,
    )
    assert len(again) == 300
    assert [obj for obj in again if "actions" in obj or "error" in obj] == []

    # Clone without smudging: pointers only; then `git lfs pull` fetches all.
    clone = tmp_path / "clone"
    user.git("clone", "-q", str(remote), str(clone), cwd=tmp_path, GIT_LFS_SKIP_SMUDGE="1")
    for relative in expected:
        assert (clone / relative).read_bytes().startswith(POINTER_PREFIX), relative
    user.git("config", "lfs.url", lfs_url, cwd=clone)
    before_pull = log_size(stack)
    user.git("lfs", "pull", cwd=clone)
    assert tree_hashes(clone, list(expected)) == expected
    gets = [
        (uri, status) for method, uri, status in access_log(stack, before_pull) if method == "GET"
    ]
    if stack.store.direct:
        assert gets == []  # presigned GETs from the bucket
    else:
        assert sorted(uri.rsplit("/", 1)[1] for uri, _ in gets) == sorted(oids)
        assert {status for _, status in gets} == {200}, gets
    assert "modified:" not in user.git("status", cwd=clone)


def test_clone_smudges_with_lfs_url_from_config(
    stack: Stack, user: GitUser, tmp_path: Path
) -> None:
    """A plain clone fetches the objects through the smudge filter when the
    LFS URL comes from a committed `.lfsconfig`."""
    repo = "team/smudge"
    remote = tmp_path / "remote.git"
    work = tmp_path / "work"
    user.git("init", "--bare", str(remote), cwd=tmp_path)
    user.git("init", str(work), cwd=tmp_path)
    (work / ".lfsconfig").write_text(f'[lfs]\n\turl = "{stack.lfs_base(repo)}"\n')
    user.git("lfs", "track", "*.bin", cwd=work)
    expected = {}
    for index, size in enumerate((1, 100, 16 * 1024, 3 * MIB)):
        data = os.urandom(size)
        (work / f"{index}.bin").write_bytes(data)
        expected[f"{index}.bin"] = sha256(data)
    user.git("add", ".", cwd=work)
    user.git("commit", "-q", "-m", "objects", cwd=work)
    user.git("remote", "add", "origin", str(remote), cwd=work)
    user.git("push", "-q", "origin", "main", cwd=work)

    clone = tmp_path / "clone"
    user.git("clone", "-q", str(remote), str(clone), cwd=tmp_path)
    assert tree_hashes(clone, list(expected)) == expected
    # The objects went to this repository only.
    other = batch_objects(
        stack.batch(
            "team/proj-other",
            {
                "operation": "download",
                "objects": [{"oid": oid, "size": 1} for oid in expected.values()],
            },
        ),
        stack,
    )
    assert {obj["error"]["code"] for obj in other} == {404}, other


def _sizes(work: Path, expected: dict[str, str]) -> list[tuple[str, int]]:
    return [(oid, (work / relative).stat().st_size) for relative, oid in expected.items()]
