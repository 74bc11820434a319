"""`lfs-server fsck [REPO]`: re-hash stored objects and reconcile the store
with the object index, both ways.

It works from the store interface (store.base.ObjectStore): the store lists
what it holds (objects in oid order), hashes an object and moves an item
aside; the index is read page by page in the same order, so one pass
compares the two with flat memory. Objects are immutable once stored and a
row is written only after its object, so this runs safely beside a live
server.

- A corrupted object (its SHA-256 is not its oid, it cannot be read) and
  anything in the store that is not an object where it belongs (an
  unexpected name or place, a symlink) is MOVED to quarantine, never
  deleted (the local store: one rename to quarantine/<folder>/<name>.<UTC
  timestamp>; the S3 store: a copy to <prefix>quarantine/<key>.<UTC
  timestamp>, then the key deleted); a quarantined object's index rows are dropped, so the next
  push of that oid uploads a good copy.
- A row whose object the store lacks is reported and dropped (asked of the
  store again first: an object stored after the scan passed its place is
  not missing).
- An object no row names (an upload cut short between storing and
  indexing, a database restored from an older backup) is reported and
  kept; the next push of that oid indexes it.

With REPO only the objects the index names for that repository are checked.
Exit code 1 when something was corrupted or missing. A bucket that fails
during the check raises BucketError (never blamed on the objects); the
command then says so in one line, exit code 2.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TextIO

from lfs_server.db import Database, open_database
from lfs_server.settings import Settings
from lfs_server.store import ObjectStore, StoredItem
from lfs_server.store.factory import open_store
from lfs_server.units import human_bytes
from lfs_server.upgrade import upgrade_store

PAGE = 1000


@dataclass(frozen=True)
class Indexed:
    """An oid of the index, its size and the repositories that may see it."""

    oid: str
    size: int
    repos: list[str]


@dataclass
class Problem:
    item: StoredItem
    reason: str
    repos: list[str] = field(default_factory=list)
    moved_to: str = ""
    move_error: str = ""


@dataclass
class Report:
    objects: int = 0
    bytes: int = 0
    repos: set[str] = field(default_factory=set)
    problems: list[Problem] = field(default_factory=list)
    missing: list[Indexed] = field(default_factory=list)
    unindexed: list[StoredItem] = field(default_factory=list)

    @property
    def quarantined(self) -> int:
        return sum(1 for problem in self.problems if problem.moved_to)

    @property
    def failed(self) -> bool:
        """Something was corrupted or lost (an object no row names is neither)."""
        return bool(self.problems or self.missing)


def index_rows(db: Database, repo: str | None = None) -> Iterator[Indexed]:
    """Every indexed oid (of one repository, or all), in oid order, page by page."""
    after = ("", "")
    current: Indexed | None = None
    while rows := db.list_objects(repo=repo, after=after, limit=PAGE):
        for row in rows:
            if current is None or row.oid != current.oid:
                if current is not None:
                    yield current
                current = Indexed(row.oid, row.size, [])
            current.repos.append(row.repo)
        after = (rows[-1].oid, rows[-1].repo)
    if current is not None:
        yield current


class Progress:
    """A progress bar on a terminal; a plain count line now and then otherwise."""

    WIDTH = 30

    def __init__(self, out: TextIO, total_files: int, total_bytes: int) -> None:
        self.out = out
        self.tty = out.isatty()
        self.total_files = total_files
        self.total_bytes = total_bytes
        self.files = 0
        self.bytes = 0
        self.interval = 0.1 if self.tty else 30.0
        if not self.tty:
            print(
                f"fsck: checking {total_files} files ({human_bytes(total_bytes)})",
                file=out,
                flush=True,
            )
        self.last = time.monotonic()

    def add(self, files: int = 0, nbytes: int = 0) -> None:
        self.files += files
        self.bytes += nbytes
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self.show()

    def show(self) -> None:
        done = min(self.bytes / self.total_bytes, 1.0) if self.total_bytes else 1.0
        counts = (
            f"{self.files}/{self.total_files} files, "
            f"{human_bytes(self.bytes)}/{human_bytes(self.total_bytes)}"
        )
        if self.tty:
            filled = int(done * self.WIDTH)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            self.out.write(f"\rfsck [{bar}] {done:4.0%} {counts}\x1b[K")
        else:
            self.out.write(f"fsck: {counts}\n")
        self.out.flush()

    def close(self) -> None:
        if self.tty:
            self.show()
            self.out.write("\n")
            self.out.flush()


def check(
    settings: Settings,
    repo: str | None = None,
    progress_out: TextIO | None = None,
    report_out: TextIO | None = None,
) -> Report:
    """Re-hash the store (or one repository's objects) and reconcile it with the index."""
    progress_out = progress_out or sys.stderr
    upgrade_store(settings, progress_out)  # a store of an older version, never served yet
    store = open_store(settings)
    db = open_database(settings)
    return run(store, db, repo, progress_out, report_out or sys.stdout)


def run(
    store: ObjectStore, db: Database, repo: str | None, progress_out: TextIO, report_out: TextIO
) -> Report:
    """One pass over the store and the index side by side, both in oid order."""
    progress = _progress(store, db, repo, progress_out)
    check = _Check(store, db, progress, datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"))
    rows = index_rows(db, repo)
    pending = next(rows, None)
    try:
        for item in store.scan():
            if item.oid is None:
                if repo is None:
                    check.problem(item, item.unexpected, [])
                continue
            while pending is not None and pending.oid < item.oid:
                check.missing(pending)
                pending = next(rows, None)
            named = pending if pending is not None and pending.oid == item.oid else None
            if named is not None:
                pending = next(rows, None)
            elif repo is not None:
                continue  # not that repository's
            check.object(item, named)
        while pending is not None:
            check.missing(pending)
            pending = next(rows, None)
    finally:
        progress.close()
    _print(check.report, repo, report_out)
    return check.report


def _progress(store: ObjectStore, db: Database, repo: str | None, out: TextIO) -> Progress:
    files = size = 0
    if repo is None:
        for item in store.scan():
            files += 1
            size += item.size if item.oid is not None else 0
    else:
        for indexed in index_rows(db, repo):
            files += 1
            size += indexed.size
    return Progress(out, files, size)


class _Check:
    def __init__(self, store: ObjectStore, db: Database, progress: Progress, stamp: str) -> None:
        self.store = store
        self.db = db
        self.progress = progress
        self.stamp = stamp
        self.report = Report()

    def object(self, item: StoredItem, named: Indexed | None) -> None:
        """Re-hash one object; quarantine it when it is not what its oid says."""
        assert item.oid is not None
        repos = named.repos if named is not None else []
        try:
            digest = self.store.hash_object(item, lambda count: self.progress.add(nbytes=count))
        except FileNotFoundError:  # gone meanwhile (an earlier fsck run, say)
            if named is not None:
                self.missing(named)
            return
        except OSError as exc:
            self.problem(item, f"cannot be read ({exc.strerror or exc})", repos)
            return
        self.report.objects += 1
        self.report.bytes += item.size
        self.report.repos.update(repos)
        if digest != item.oid:
            self.problem(item, f"SHA-256 mismatch (content hashes to {digest})", repos)
            return
        self.progress.add(files=1)
        if named is None and not _indexed_anywhere(self.db, item.oid):
            self.report.unindexed.append(item)

    def problem(self, item: StoredItem, reason: str, repos: list[str]) -> None:
        """Move it aside; a quarantined object's index rows go with it."""
        self.progress.add(files=1)
        problem = Problem(item, reason, repos)
        self.report.problems.append(problem)
        try:
            problem.moved_to = self.store.quarantine(item, self.stamp)
        except FileNotFoundError:
            problem.move_error = "vanished before it could be moved"
        except OSError as exc:
            problem.move_error = str(exc.strerror or exc)
        else:
            if item.oid is not None and repos:
                self.db.remove_objects(item.oid, repos)

    def missing(self, indexed: Indexed) -> None:
        """Rows whose object the store lacks: reported and dropped, unless it
        was stored after the scan went past it (a row follows its object)."""
        self.progress.add(files=1)
        if self.store.size(indexed.oid) is not None:
            return
        self.db.remove_objects(indexed.oid, indexed.repos)
        self.report.missing.append(indexed)


def _indexed_anywhere(db: Database, oid: str) -> bool:
    """Whether some repository's row names `oid` now (rows are ordered by oid, then repo)."""
    rows = db.list_objects(after=(oid, ""), limit=1)
    return bool(rows) and rows[0].oid == oid


def _print(report: Report, repo: str | None, out: TextIO) -> None:
    for problem in report.problems:
        where = ", ".join(problem.repos) or "(no repository)"
        outcome = (
            f"moved to {problem.moved_to}"
            if problem.moved_to
            else f"NOT moved: {problem.move_error}"
        )
        print(f"corrupted: {where}: {problem.item.key}: {problem.reason}; {outcome}", file=out)
    for indexed in report.missing:
        print(
            f"missing: {', '.join(indexed.repos)}: {indexed.oid} ({indexed.size} bytes): "
            "in the object index, not in the store; dropped from the index "
            "(the next push of it uploads it again)",
            file=out,
        )
    for item in report.unindexed:
        print(
            f"not indexed: {item.key} ({item.size} bytes): no repository may see it; kept "
            "(an upload cut short after storing it leaves one; the next push of it "
            "indexes it)",
            file=out,
        )
    count = len(report.repos)
    scope = f"repository {repo}" if repo else f"{count} repositor{'y' if count == 1 else 'ies'}"
    print(
        f"fsck: checked {report.objects} objects, {report.bytes} bytes "
        f"({human_bytes(report.bytes)}) in {scope}; "
        f"corrupted: {len(report.problems)}; quarantined: {report.quarantined}; "
        f"missing: {len(report.missing)}; not indexed: {len(report.unindexed)}",
        file=out,
        flush=True,
    )
