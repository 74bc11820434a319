"""`lfs-server migrate-store --to s3` against a real SeaweedFS: a local store
filled through a real server is copied into a bucket byte for byte, served
from there by a server on LFS_STORE=s3, resumed after an interruption without
copying anything twice, with a corrupt local file refused; the local store is
never changed."""

from __future__ import annotations

import hashlib
import os
import pty
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import requests

from tests.cutter import Cutter
from tests.engines.seaweedfs import HOST_AWS_VARIABLES, SeaweedFS, aws_env, free_ports
from tests.integration.helpers import download_action, sha256, upload
from tests.migrating import (
    MIGRATE_STORE,
    Summary,
    key_for,
    migrate_store,
    run_until_some_copied,
    summary,
)
from tests.stack import Stack
from tests.stores import LOCAL, S3_PROXY, BucketView, StoreEnv
from tests.waiting import wait_until

MIB = 1 << 20
PART = 5 * MIB
REPOS = ("team/alpha", "team/beta", "other/gamma")


@dataclass(frozen=True)
class Filled:
    """A data dir filled through a real server on the local store, which is stopped."""

    root: Path
    env: dict[str, str]
    objects: dict[str, tuple[str, bytes]]  # oid -> (a repository that has it, bytes)

    @property
    def objects_dir(self) -> Path:
        return self.root / "data" / "objects"


def fill(root: Path, blobs: dict[str, list[bytes]]) -> Filled:
    stack = Stack(root, StoreEnv(LOCAL), LFS_ANONYMOUS="write").start()
    objects: dict[str, tuple[str, bytes]] = {}
    try:
        for repo, datas in blobs.items():
            for data in datas:
                upload(stack, repo, data)
                objects.setdefault(sha256(data), (repo, data))
    finally:
        stack.stop()
    return Filled(root, stack.env, objects)


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Filled:
    """60 objects in three repositories: empty, one byte, 16 to 256 KiB, and one
    larger than a part (a multipart upload); one oid in two repositories."""
    blobs = [b"", b"x", os.urandom(PART + MIB + 1)]
    blobs += [os.urandom(1024 * (16 + 37 * n % 240)) for n in range(57)]
    by_repo = {repo: blobs[n :: len(REPOS)] for n, repo in enumerate(REPOS)}
    by_repo[REPOS[1]].append(blobs[3])  # team/beta has team/alpha's object too
    done = fill(tmp_path_factory.mktemp("migrate"), by_repo)
    assert len(done.objects) == len(blobs)
    return done


def migration_env(
    base: dict[str, str], seaweedfs: SeaweedFS, bucket: str, root: Path, **env: str
) -> dict[str, str]:
    """The server's environment plus the LFS_S3_* settings of `bucket` and the test key."""
    return {
        **{name: value for name, value in base.items() if name not in HOST_AWS_VARIABLES},
        **aws_env(root),
        "LFS_S3_BUCKET": bucket,
        "LFS_S3_ENDPOINT": seaweedfs.endpoint,
        "LFS_S3_PART_SIZE": "5M",
        **env,
    }


def assert_plain(done: subprocess.CompletedProcess[str] | tuple[str, str]) -> None:
    """Without a terminal: whole lines, no bar redrawn, no escape sequence, no traceback."""
    out, err = (done.stdout, done.stderr) if not isinstance(done, tuple) else done
    for text in (out, err):
        assert "\r" not in text and "\x1b" not in text, text
        assert "Traceback" not in text, text
    assert all(line.startswith("migrate-store: ") for line in err.splitlines()), err


def files_of(folder: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every file below `folder`: size, inode, modification time, SHA-256."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            info = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            found[str(path.relative_to(folder))] = (
                info.st_size,
                info.st_ino,
                info.st_mtime_ns,
                digest,
            )
    return found


def versions(view: BucketView) -> dict[str, tuple[datetime, str]]:
    """LastModified and ETag of every key: what a second write would change."""
    result = {}
    keys = view.keys()
    for key in keys:
        head = view.client.head_object(Bucket=view.name, Key=key)
        result[key] = (head["LastModified"], head["ETag"])
    return result


def assert_bucket_holds(view: BucketView, oids: set[str]) -> None:
    assert set(view.keys()) == {key_for(oid) for oid in oids}
    for oid in oids:
        assert sha256(view.read(key_for(oid))) == oid


@pytest.fixture
def s3_stack(filled: Filled) -> Iterator[list[Stack]]:
    """Stacks a test starts on the filled data dir; stopped at the end."""
    started: list[Stack] = []
    yield started
    for stack in started:
        stack.stop()


def test_every_object_is_copied_and_served_from_the_bucket(
    filled: Filled, seaweedfs: SeaweedFS, tmp_path: Path, s3_stack: list[Stack]
) -> None:
    before = files_of(filled.objects_dir)
    bucket = seaweedfs.new_bucket()
    view = BucketView(seaweedfs.client, bucket)
    # Already switched to the bucket: LFS_STORE does not change where it copies from.
    env = migration_env(filled.env, seaweedfs, bucket, tmp_path, LFS_STORE="s3")
    done = migrate_store(env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_plain(done)
    count = len(filled.objects)
    total = sum(len(data) for _, data in filled.objects.values())
    assert summary(done.stdout) == Summary(count, 0, 0, count, total)
    assert_bucket_holds(view, set(filled.objects))
    large = max(filled.objects, key=lambda oid: len(filled.objects[oid][1]))
    etag = seaweedfs.client.head_object(Bucket=bucket, Key=key_for(large))["ETag"]
    assert "-" in etag, etag  # uploaded in parts

    again = migrate_store(env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert summary(again.stdout) == Summary(0, count, 0, count, 0)

    # A server on the bucket, on the same data dir and database, serves every object.
    s3 = {name: env[name] for name in env if name.startswith(("LFS_S3_", "LFS_STORE", "AWS_"))}
    store = StoreEnv(S3_PROXY, s3, view, unset=HOST_AWS_VARIABLES)
    s3_stack.append(stack := Stack(filled.root, store, LFS_ANONYMOUS="write", **s3))
    stack.start()
    for oid, (repo, data) in filled.objects.items():
        action = download_action(stack, repo, data)
        got = requests.get(action["href"], headers=action["header"], timeout=60)
        assert got.status_code == 200, got.text[:300]
        assert sha256(got.content) == oid
    stack.stop()
    assert files_of(filled.objects_dir) == before


def test_an_interrupted_run_resumes_and_copies_only_the_rest(
    filled: Filled, seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    before = files_of(filled.objects_dir)
    count = len(filled.objects)
    bucket = seaweedfs.new_bucket()
    view = BucketView(seaweedfs.client, bucket)
    env = migration_env(filled.env, seaweedfs, bucket, tmp_path)

    # One object at a time; Ctrl-C once the progress shows some are done.
    code, out, err = run_until_some_copied(env, lambda run: run.send_signal(signal.SIGINT), 120)
    assert code == 130, out + err
    assert_plain((out, err))
    assert "stopping once the objects being copied are in the bucket" in err, err
    assert "interrupted: run `lfs-server migrate-store --to s3` again to resume" in out, out
    one = summary(out)
    assert 0 < one.copied < count, out
    assert (one.skipped, one.failed) == (0, 0), out
    copied_first = versions(view)
    assert set(copied_first) < {key_for(oid) for oid in filled.objects}, sorted(copied_first)
    assert len(copied_first) == one.copied  # every one counted is in the bucket, no other

    # A rewrite of the same bytes keeps the ETag; past the next second it
    # would change LastModified.
    newest = max(modified.timestamp() for modified, _ in copied_first.values())
    assert wait_until(lambda: time.time() > newest + 1.5, 10), "the clock did not move"

    second = migrate_store(env, "--jobs", "4")
    assert second.returncode == 0, second.stdout + second.stderr
    assert_plain(second)
    two = summary(second.stdout)
    assert (two.copied, two.skipped, two.failed) == (count - one.copied, one.copied, 0)
    assert two.objects == count
    assert_bucket_holds(view, set(filled.objects))
    after = versions(view)
    assert {key: after[key] for key in copied_first} == copied_first
    assert files_of(filled.objects_dir) == before


def test_a_corrupt_local_file_is_refused_and_the_rest_copied(
    seaweedfs: SeaweedFS, tmp_path_factory: pytest.TempPathFactory
) -> None:
    good, bad, replaced = os.urandom(3000), os.urandom(4000), os.urandom(5000)
    source = fill(tmp_path_factory.mktemp("corrupt"), {"team/a": [good, bad], "team/b": [replaced]})
    corrupt = source.objects_dir / key_for(sha256(bad))
    with open(corrupt, "r+b") as file:  # one bit flipped in place, the size kept
        file.seek(100)
        byte = file.read(1)[0]
        file.seek(100)
        file.write(bytes([byte ^ 0x01]))
    hashes_to = hashlib.sha256(corrupt.read_bytes()).hexdigest()
    before = files_of(source.objects_dir)
    bucket = seaweedfs.new_bucket()
    view = BucketView(seaweedfs.client, bucket)
    # Wrong bytes of the right size under an object's key, with their SHA-256
    # recorded by the bucket: not taken for the object.
    wrong = os.urandom(len(replaced))
    seaweedfs.client.put_object(
        Bucket=bucket, Key=key_for(sha256(replaced)), Body=wrong, ChecksumAlgorithm="SHA256"
    )
    env = migration_env(source.env, seaweedfs, bucket, source.root)

    done = migrate_store(env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert_plain(done)
    expected = (
        f"failed: {sha256(bad)}: content does not match its oid "
        f"(it hashes to {hashes_to}); not copied"
    )
    assert expected in done.stdout.splitlines(), done.stdout
    assert f"replaced: {sha256(replaced)}: the bucket held other bytes" in done.stdout
    assert str(source.root) not in done.stdout + done.stderr
    assert summary(done.stdout) == Summary(2, 0, 1, 3, len(good) + len(replaced))
    assert_bucket_holds(view, {sha256(good), sha256(replaced)})

    # On a terminal: the bar redrawn in place; the corrupt file is still refused.
    main, side = pty.openpty()
    again = subprocess.Popen(
        MIGRATE_STORE, env=env, stdout=subprocess.PIPE, stderr=side, text=True, close_fds=True
    )
    os.close(side)
    screen = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # EIO: the terminal's other side is closed
            break
        if not chunk:
            break
        screen += chunk
    os.close(main)
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 1, out
    text = screen.decode()
    assert re.search(r"\r\[#+-*\] +\d+% \d+/3 objects, ", text), text
    assert "\x1b[K" in text and text.endswith("\n"), text
    assert summary(out) == Summary(0, 2, 1, 3, 0)
    assert expected in out.splitlines(), out
    assert files_of(source.objects_dir) == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"LFS_S3_BUCKET": ""}, "LFS_S3_BUCKET is not set"),
        ({"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}, "no AWS credentials found"),
        ({"LFS_S3_BUCKET": "lfs-no-such-bucket"}, "LFS_S3_BUCKET: bucket 'lfs-no-such-bucket'"),
        ({"LFS_S3_ENDPOINT": "http://127.0.0.1:{port}"}, "LFS_S3_ENDPOINT: cannot reach"),
    ],
)
def test_the_bucket_is_checked_before_anything_is_read(
    filled: Filled, seaweedfs: SeaweedFS, tmp_path: Path, change: dict[str, str], message: str
) -> None:
    port = str(free_ports(1)[0])
    changes = {name: value.replace("{port}", port) for name, value in change.items()}
    env = migration_env(filled.env, seaweedfs, seaweedfs.new_bucket(), tmp_path, **changes)
    for name in [name for name, value in changes.items() if name.startswith("AWS_") and not value]:
        del env[name]
    done = migrate_store(env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("lfs-server: migrate-store --to s3: "), lines
    assert message in lines[0], lines


def test_a_bucket_that_fails_mid_run_stops_it_and_a_rerun_resumes(
    filled: Filled, seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    count = len(filled.objects)
    bucket = seaweedfs.new_bucket()
    view = BucketView(seaweedfs.client, bucket)
    env = migration_env(filled.env, seaweedfs, bucket, tmp_path)
    # The bucket becomes unreachable mid-run (connections dropped, new ones
    # refused) while the server behind it stays up and keeps what it took.
    cutter = Cutter(("127.0.0.1", seaweedfs.s3_port))
    stopped = False

    def stop_the_bucket(_: object) -> None:
        nonlocal stopped
        cutter.cut()
        stopped = True

    code, out, err = run_until_some_copied(
        {**env, "LFS_S3_ENDPOINT": cutter.url}, stop_the_bucket, 180
    )
    assert stopped, "no progress line before the end"
    assert code == 2, out + err
    assert "Traceback" not in out + err
    assert re.search(
        r"^stopped: [^\n]*LFS_S3_ENDPOINT: cannot reach [^\n]*; run `lfs-server migrate-store "
        r"--to s3` again to resume",
        out,
        re.MULTILINE,
    ), out
    one = summary(out)
    assert 0 < one.copied < count and one.failed == 0, out

    second = migrate_store(env)
    assert second.returncode == 0, second.stdout + second.stderr
    two = summary(second.stdout)
    assert two.copied + two.skipped == count and two.failed == 0, second.stdout
    # What the bucket acknowledged before it went down is not copied again.
    assert two.skipped >= one.copied, second.stdout
    assert_bucket_holds(view, set(filled.objects))
