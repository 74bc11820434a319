"""`lfs-server fsck [REPO]`: re-hash stored objects, quarantine the bad ones.

It works from the store interface (store.base.ObjectStore): the store lists
what it holds, hashes an object and moves an item aside. Objects are
immutable once stored, so this runs safely beside a live server. A
corrupted object (its SHA-256 is not its oid, it cannot be read) and
anything in the store that is not an object where it belongs (an unexpected
name or place, a symlink) is MOVED to quarantine, never deleted (the local
store: one rename to quarantine/<folder>/<name>.<UTC timestamp>), and a
quarantined object's index rows are dropped: the store no longer has it,
so the next push of that oid uploads a good copy. With REPO only the
objects the index names for that repository are checked.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TextIO

from lfs_server.cleanup import human_bytes
from lfs_server.db import Database, SQLiteDatabase
from lfs_server.settings import Settings
from lfs_server.store import ObjectStore, StoredItem
from lfs_server.store.factory import open_store
from lfs_server.upgrade import upgrade_store

PAGE = 1000


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

    @property
    def quarantined(self) -> int:
        return sum(1 for problem in self.problems if problem.moved_to)


def index_rows(db: Database, repo: str | None = None) -> Iterator[tuple[str, list[str]]]:
    """(oid, the repositories that may see it) for every indexed oid, in oid order."""
    after = ("", "")
    oid, repos = "", []
    while rows := db.list_objects(repo=repo, after=after, limit=PAGE):
        for row in rows:
            if row.oid != oid:
                if repos:
                    yield oid, repos
                oid, repos = row.oid, []
            repos.append(row.repo)
        after = (rows[-1].oid, rows[-1].repo)
    if repos:
        yield oid, repos


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
    """Re-hash the store (or one repository's objects) and quarantine what is wrong."""
    progress_out = progress_out or sys.stderr
    upgrade_store(settings, progress_out)  # a store of an older version, never served yet
    store = open_store(settings)
    db = SQLiteDatabase(settings.database_path)
    return run(store, db, repo, progress_out, report_out or sys.stdout)


def run(
    store: ObjectStore, db: Database, repo: str | None, progress_out: TextIO, report_out: TextIO
) -> Report:
    holders = dict(index_rows(db))
    wanted = None if repo is None else {oid for oid, _ in index_rows(db, repo)}

    def chosen() -> Iterator[StoredItem]:
        for item in store.scan():
            if wanted is None or item.oid in wanted:
                yield item

    total_files = total_bytes = 0
    for item in chosen():
        total_files += 1
        if item.oid is not None:
            total_bytes += item.size
    progress = Progress(progress_out, total_files, total_bytes)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report = Report()
    try:
        for item in chosen():
            reason = item.unexpected
            repos = holders.get(item.oid or "", [])
            if not reason:
                try:
                    digest = store.hash_object(item, lambda count: progress.add(nbytes=count))
                except FileNotFoundError:
                    continue  # gone meanwhile (an earlier fsck run, say)
                except OSError as exc:
                    reason = f"cannot be read ({exc.strerror or exc})"
                else:
                    report.objects += 1
                    report.bytes += item.size
                    report.repos.update(repos)
                    if digest != item.oid:
                        reason = f"SHA-256 mismatch (content hashes to {digest})"
            progress.add(files=1)
            if not reason:
                continue
            problem = Problem(item, reason, repos)
            report.problems.append(problem)
            try:
                problem.moved_to = store.quarantine(item, stamp)
            except FileNotFoundError:
                problem.move_error = "vanished before it could be moved"
            except OSError as exc:
                problem.move_error = str(exc.strerror or exc)
            else:
                if item.oid is not None and repos:
                    db.remove_objects(item.oid, repos)
    finally:
        progress.close()
    for problem in report.problems:
        where = ", ".join(problem.repos) or "(no repository)"
        outcome = (
            f"moved to {problem.moved_to}"
            if problem.moved_to
            else f"NOT moved: {problem.move_error}"
        )
        print(
            f"corrupted: {where}: {problem.item.key}: {problem.reason}; {outcome}",
            file=report_out,
        )
    count = len(report.repos)
    scope = f"repository {repo}" if repo else f"{count} repositor{'y' if count == 1 else 'ies'}"
    print(
        f"fsck: checked {report.objects} objects, {report.bytes} bytes "
        f"({human_bytes(report.bytes)}) in {scope}; "
        f"corrupted: {len(report.problems)}; quarantined: {report.quarantined}",
        file=report_out,
        flush=True,
    )
    return report
