"""`lfs-server migrate-store --to s3`: copy every object of the local store into the bucket.

The source is LFS_DATA_DIR/objects, only ever read; the target is the bucket
the LFS_S3_* settings name, whatever LFS_STORE says. Objects go to the keys
the S3 store reads (S3Bucket.key_for) through its own upload
(S3Bucket.put_file: one PUT carrying the oid as its SHA-256, or parts of
LFS_S3_PART_SIZE), so the layout cannot drift from what the server expects.
The object index needs no change: its rows are the same for both stores.

Each object's SHA-256 is computed from the local file (1 MiB at a time,
memory flat in object size) before a byte is sent; a file whose content is
not its oid is reported by oid and never written. The upload then reads
that same open file; the bucket checks a single PUT against the oid again.

Resumable: the bucket's listing, merged with the local scan (both in oid
order: flat memory, one request per 1000 keys), says what is there already.
A key of the right size whose recorded SHA-256 is the oid's (or that records
none: multipart objects) is skipped without reading the local file. An S3
write is atomic, so a key that exists is complete: a run stopped anywhere
leaves only whole objects, and the next one copies the rest.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TextIO

from lfs_server.migrate_progress import Progress
from lfs_server.settings import Settings
from lfs_server.store.base import StoredItem
from lfs_server.store.local import LocalStore, open_regular, sha256_of
from lfs_server.store.s3 import s3_problem
from lfs_server.store.s3_bucket import BucketError, BucketRejected, S3Bucket, sha256_b64
from lfs_server.units import human_bytes
from lfs_server.upgrade import classify

# How often the main thread redraws the progress (and notices Ctrl-C).
TICK = 0.2
OLD_LAYOUT = (
    "LFS_DATA_DIR: the local store still has an older version's layout "
    "(objects/<repo>.git/...); run `lfs-server fsck` once with LFS_STORE=local "
    "to upgrade it, then migrate"
)
RESUME = "run `lfs-server migrate-store --to s3` again to resume (what is in the bucket is skipped)"


class MigrationError(Exception):
    """The migration cannot start; the message says why in one line, naming the setting."""


@dataclass
class Result:
    objects: int = 0
    bytes: int = 0
    copied: int = 0
    copied_bytes: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    # Oids whose key held other bytes (another size or SHA-256), now the verified ones.
    replaced: list[str] = field(default_factory=list)
    # Files under objects/ that are not objects (fsck's business), left alone.
    strays: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    # Why the run stopped before the end: the bucket failed ("" when it did not).
    stopped: str = ""

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        if self.stopped:
            return 2
        return 1 if self.failed else 0


def migrate(settings: Settings, jobs: int, progress_out: TextIO, report_out: TextIO) -> Result:
    """Check the source and the bucket, then copy; the report goes to `report_out`."""
    if not settings.objects_dir.is_dir():
        raise MigrationError(f"LFS_DATA_DIR: no local store at {settings.objects_dir}")
    problem = s3_problem(settings)
    if problem:
        raise MigrationError(f"migrate-store --to s3: {problem}")
    local = LocalStore(settings.objects_dir, settings.upload_tmp_dir)
    result = survey(local)
    bucket = S3Bucket(settings.s3, max_connections=jobs * settings.s3.concurrency)
    where = f"bucket {settings.s3.bucket!r}" + (
        f" under {settings.s3.prefix!r}" if settings.s3.prefix else ""
    )
    print(
        f"migrate-store: {result.objects} objects ({human_bytes(result.bytes)}) "
        f"from the local store to {where}, {jobs} at a time",
        file=progress_out,
        flush=True,
    )
    progress = Progress(progress_out, result.objects, result.bytes)
    started = time.monotonic()
    _Copy(local, bucket, progress, result).run(jobs)
    result.seconds = time.monotonic() - started
    # Objects stored since the survey were copied too.
    result.objects = max(result.objects, result.copied + result.skipped + len(result.failed))
    progress.close()
    report(result, report_out)
    return result


def survey(local: LocalStore) -> Result:
    """Count what there is to copy (a first scan: the progress needs the totals)."""
    result = Result()
    for item in local.scan():
        if item.oid is not None:
            result.objects += 1
            result.bytes += item.size
        elif classify(local.root, local.root / item.key) is not None:
            raise MigrationError(OLD_LAYOUT)
        else:
            result.strays += 1
    return result


def with_listed_sizes(
    items: Iterator[StoredItem], bucket: S3Bucket
) -> Iterator[tuple[StoredItem, int | None]]:
    """Each local object with the size its key has in the bucket (None: absent).

    One listing merged with the scan: S3 lists keys in binary order, which
    for `<prefix><aa>/<bb>/<oid>` is oid order, as the local scan yields them.
    """
    listed = (
        (oid, entry.size)
        for entry in bucket.list_keys()
        if (oid := bucket.oid_for(entry.key)) is not None
    )
    current = next(listed, None)
    for item in items:
        if item.oid is None:
            continue
        while current is not None and current[0] < item.oid:
            current = next(listed, None)
        yield item, current[1] if current is not None and current[0] == item.oid else None


class _Copy:
    """Worker threads taking objects one at a time from one shared scan."""

    def __init__(
        self, local: LocalStore, bucket: S3Bucket, progress: Progress, result: Result
    ) -> None:
        self.local = local
        self.bucket = bucket
        self.progress = progress
        self.result = result
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.finished = threading.Event()
        self.running = 0
        self.work = with_listed_sizes(local.scan(), bucket)
        self.crashed = False

    def run(self, jobs: int) -> None:
        """Copy until done; Ctrl-C lets the objects in flight finish, a second one kills."""
        self.running = jobs
        for n in range(jobs):
            threading.Thread(target=self.worker, name=f"migrate-{n}", daemon=True).start()
        try:
            self.wait()
        except KeyboardInterrupt:
            # What is in the bucket is whole: a second Ctrl-C may kill at once.
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            self.stop.set()
            self.result.interrupted = True
            self.progress.say(
                "migrate-store: stopping once the objects being copied are in the bucket "
                "(Ctrl-C again to stop at once)"
            )
            self.wait()
        if self.crashed and not self.result.stopped:
            self.result.stopped = "an unexpected error (above)"

    def wait(self) -> None:
        """Until every worker is done, drawing the progress meanwhile. (Not
        Thread.join: interrupted by Ctrl-C, Python 3.11 may take a running
        thread for finished.)"""
        while not self.finished.wait(TICK):
            self.progress.tick()

    def worker(self) -> None:
        try:
            while not self.stop.is_set():
                with self.lock:
                    pair = next(self.work, None)
                if pair is None:
                    return
                self.copy(*pair)
        except BucketError as exc:  # unavailable: the next objects would fail alike
            with self.lock:
                self.result.stopped = self.result.stopped or exc.message
            self.stop.set()
        except BaseException:
            self.crashed = True
            self.stop.set()
            raise
        finally:
            with self.lock:
                self.running -= 1
                if not self.running:
                    self.finished.set()

    def copy(self, item: StoredItem, listed: int | None) -> None:
        """One object: skipped when the bucket has it, else verified and uploaded."""
        oid = item.oid
        assert oid is not None
        key = self.bucket.key_for(oid)
        if listed is not None and listed == item.size:
            head = self.bucket.head(key, checksum=True)
            if (
                head is not None
                and head.size == item.size
                and head.sha256 in (None, sha256_b64(oid))
            ):
                self.skip(item.size)
                return
            differs = head is not None
        else:
            differs = listed is not None
        try:
            fd = open_regular(self.local.path(oid))
        except OSError as exc:
            self.fail(oid, item.size, f"cannot be read ({exc.strerror or exc}); not copied")
            return
        sent = [0]

        def moved(count: int) -> None:
            sent[0] += count
            self.progress.sent_bytes(count)

        try:
            size = os.fstat(fd).st_size
            digest = sha256_of(fd)
            if digest != oid:
                self.fail(
                    oid,
                    item.size,
                    f"content does not match its oid (it hashes to {digest}); not copied",
                )
                return
            self.bucket.put_file(key, fd, size, oid, on_bytes=moved)
        except BucketRejected as exc:
            self.fail(oid, item.size, f"{exc.message}; not copied", sent[0])
            return
        except BucketError:  # the bucket is unavailable: the run stops (worker)
            self.progress.sent_bytes(-sent[0])
            raise
        except OSError as exc:
            self.fail(oid, item.size, f"cannot be read ({exc.strerror or exc}); not copied")
            return
        finally:
            os.close(fd)
        with self.lock:
            self.result.copied += 1
            self.result.copied_bytes += size
            if differs:
                self.result.replaced.append(oid)
        self.progress.finished(size, sent[0], copied=True)

    def skip(self, size: int) -> None:
        with self.lock:
            self.result.skipped += 1
        self.progress.finished(size, 0, copied=False)

    def fail(self, oid: str, size: int, reason: str, sent: int = 0) -> None:
        with self.lock:
            self.result.failed.append((oid, reason))
        self.progress.finished(size, sent, copied=False)


def report(result: Result, out: TextIO) -> None:
    for oid in sorted(result.replaced):
        print(f"replaced: {oid}: the bucket held other bytes under its key", file=out)
    for oid, reason in sorted(result.failed):
        print(f"failed: {oid}: {reason}", file=out)
    if result.strays:
        print(
            f"left alone: {result.strays} files under objects/ that are not objects "
            "(lfs-server fsck with LFS_STORE=local lists them)",
            file=out,
        )
    if result.stopped:
        print(f"stopped: {result.stopped}; {RESUME}", file=out)
    elif result.interrupted:
        print(f"interrupted: {RESUME}", file=out)
    print(
        f"migrate-store: copied {result.copied}, skipped {result.skipped}, "
        f"failed {len(result.failed)} of {result.objects} objects; "
        f"{result.copied_bytes} bytes ({human_bytes(result.copied_bytes)}) "
        f"copied in {result.seconds:.1f} s",
        file=out,
        flush=True,
    )
