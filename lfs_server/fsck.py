"""`lfs-server fsck [REPO]`: re-hash stored objects, quarantine the bad ones.

Objects live at objects/<repo>.git/<oid[:2]>/<oid[2:4]>/<oid> and are
immutable once linked into place, so this runs safely beside a live server.
A corrupted object (its SHA-256 is not its name, it cannot be read) and any
file with an unexpected name or place is MOVED (one rename, atomic) to
quarantine/<repo>.git/<name>.<UTC timestamp>: never deleted. The store then
no longer has it, so the next push of that oid uploads a good copy.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from lfs_server.cleanup import human_bytes
from lfs_server.durable import fsync_dir, fsync_new_dirs, make_dirs
from lfs_server.repos import normalize_repo
from lfs_server.store import is_valid_oid

CHUNK = 1 << 20
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class Entry:
    """A file found in the object tree."""

    path: Path
    repo: str | None  # the repository it belongs to, when its place says so
    quarantine_dir: str  # folder under quarantine/, relative: "<repo>.git" or the file's place
    unexpected: str  # why its name or place is wrong; empty for a proper object


@dataclass
class Problem:
    entry: Entry
    reason: str
    moved_to: Path | None = None
    move_error: str = ""


@dataclass
class Report:
    objects: int = 0
    bytes: int = 0
    repos: set[str] = field(default_factory=set)
    problems: list[Problem] = field(default_factory=list)

    @property
    def quarantined(self) -> int:
        return sum(1 for problem in self.problems if problem.moved_to is not None)


def _is_fanout(name: str) -> bool:
    return len(name) == 2 and set(name) <= _HEX


def _repo_of_root(parts: list[str]) -> str | None:
    """`team/proj` for the parts ["team", "proj.git"] of a repository root."""
    if not parts or not parts[-1].endswith(".git"):
        return None
    name = "/".join([*parts[:-1], parts[-1][:-4]])
    return name if normalize_repo(name) == name else None


def classify(objects_dir: Path, path: Path) -> Entry:
    """Where a file sits in the tree says which repository and oid it should be."""
    parts = list(path.relative_to(objects_dir).parts)
    name = parts[-1]
    folders = parts[:-1]
    if len(folders) >= 3 and _is_fanout(folders[-2]) and _is_fanout(folders[-1]):
        repo = _repo_of_root(folders[:-2])
        if repo is not None:
            root = "/".join(folders[:-2])
            if not is_valid_oid(name):
                return Entry(path, repo, root, "unexpected file name")
            if name[:2] != folders[-2] or name[2:4] != folders[-1]:
                return Entry(path, repo, root, "object in the wrong fan-out folder")
            return Entry(path, repo, root, "")
    for depth in range(len(folders), 0, -1):
        repo = _repo_of_root(folders[:depth])
        if repo is not None:
            return Entry(path, repo, "/".join(folders[:depth]), "unexpected file in the store")
    return Entry(path, None, "/".join(folders), "unexpected file in the store")


def _walk_files(folder: Path, skip_repo_roots: bool = False) -> Iterator[Path]:
    """Every non-directory below `folder` (symlinks not followed), in name order."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            if skip_repo_roots and not _is_fanout(entry.name):
                continue  # another repository's root, or part of its name
            yield from _walk_files(Path(entry.path), skip_repo_roots=False)
        else:
            yield Path(entry.path)


def entries(objects_dir: Path, repo: str | None = None) -> Iterator[Entry]:
    """Files of the whole store, or of one repository (not its nested neighbours)."""
    if repo is None:
        files = _walk_files(objects_dir)
    else:
        files = _walk_files(objects_dir / f"{repo}.git", skip_repo_roots=True)
    for path in files:
        yield classify(objects_dir, path)


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


def _hash(path: Path, progress: Progress) -> tuple[str, os.stat_result]:
    """SHA-256 and identity of a regular file (never through a symlink)."""
    # O_NONBLOCK: a FIFO planted in the tree must not hang the check.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise IsADirectoryError("not a regular file")
        digest = hashlib.sha256()
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        with open(fd, "rb", buffering=0, closefd=False) as src:
            while count := src.readinto(buffer):
                digest.update(view[:count])
                progress.add(nbytes=count)
        return digest.hexdigest(), info
    finally:
        os.close(fd)


def quarantine(data_dir: Path, entry: Entry, stamp: str) -> Path:
    """Move the file aside, keeping every byte: quarantine/<place>/<name>.<stamp>."""
    target_dir = data_dir / "quarantine" / entry.quarantine_dir
    new_dirs = make_dirs(target_dir)
    target = target_dir / f"{entry.path.name}.{stamp}"
    serial = 1
    while os.path.lexists(target):
        target = target_dir / f"{entry.path.name}.{stamp}-{serial}"
        serial += 1
    try:
        os.rename(entry.path, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:  # objects/ on another filesystem than quarantine/
            raise
        shutil.copy2(entry.path, target, follow_symlinks=False)
        os.unlink(entry.path)
    fsync_dir(target_dir)
    fsync_dir(entry.path.parent)
    fsync_new_dirs(new_dirs)
    return target


def check(
    data_dir: Path,
    repo: str | None = None,
    progress_out: TextIO | None = None,
    report_out: TextIO | None = None,
) -> Report:
    """Re-hash the store (or one repository) and quarantine what is wrong."""
    objects_dir = data_dir / "objects"
    progress_out = progress_out or sys.stderr
    report_out = report_out or sys.stdout
    total_files = total_bytes = 0
    for entry in entries(objects_dir, repo):
        total_files += 1
        if not entry.unexpected:
            try:
                total_bytes += entry.path.lstat().st_size
            except FileNotFoundError:
                continue
    progress = Progress(progress_out, total_files, total_bytes)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report = Report()
    try:
        for entry in entries(objects_dir, repo):
            reason = entry.unexpected
            identity: os.stat_result | None = None
            if not reason:
                try:
                    digest, identity = _hash(entry.path, progress)
                except FileNotFoundError:
                    continue  # gone meanwhile (an earlier fsck run, say)
                except OSError as exc:
                    if exc.errno == errno.ELOOP:
                        reason = "a symbolic link, not an object file"
                    else:
                        reason = f"cannot be read ({exc.strerror or exc})"
                else:
                    report.objects += 1
                    report.bytes += identity.st_size
                    if entry.repo:
                        report.repos.add(entry.repo)
                    if digest != entry.path.name:
                        reason = f"SHA-256 mismatch (content hashes to {digest})"
            progress.add(files=1)
            if not reason:
                continue
            problem = Problem(entry, reason)
            report.problems.append(problem)
            try:
                if identity is not None:
                    now = entry.path.lstat()
                    if (now.st_dev, now.st_ino) != (identity.st_dev, identity.st_ino):
                        raise OSError("replaced while being checked; run fsck again")
                problem.moved_to = quarantine(data_dir, entry, stamp)
            except FileNotFoundError:
                problem.move_error = "vanished before it could be moved"
            except OSError as exc:
                problem.move_error = str(exc.strerror or exc)
    finally:
        progress.close()
    for problem in report.problems:
        where = problem.entry.repo or "(no repository)"
        shown = problem.entry.path.relative_to(data_dir)
        outcome = (
            f"moved to {problem.moved_to.relative_to(data_dir)}"
            if problem.moved_to
            else f"NOT moved: {problem.move_error}"
        )
        print(f"corrupted: {where}: {shown}: {problem.reason}; {outcome}", file=report_out)
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
