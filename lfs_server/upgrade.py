"""The one-time upgrade of a data directory an older version wrote.

Older versions kept each repository's objects apart, at
objects/<repo>.git/<oid[:2]>/<oid[2:4]>/<oid>, with nothing but the files to
say what existed. Now each oid is stored once, at objects/<aa>/<bb>/<oid>,
and the object index in the database says which repositories may see it.
The launcher (and fsck) run this before anything else touches the store;
later starts find it recorded as done in the database and skip it.

Every step is idempotent, so an upgrade cut short (killed, a power loss)
completes at the next start. For each old file, in batches:

1. hard-link it to its new name; a file already there of the same size is
   the same object (two repositories' copies become one); one of another
   size (or, compared byte for byte, other bytes) is not merged: the old
   file is quarantined and its repository gets no row, so that
   repository's next push uploads the object again;
2. fsync the new names and folders;
3. write the index rows (repository, oid, size, the file's mtime);
4. unlink the old name and fsync its folder.

Anything else inside an old repository folder is quarantined, never
deleted; empty old folders are removed at the end.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from lfs_server.db import Database, IndexedObject, open_database
from lfs_server.durable import fsync_dir, fsync_new_dirs, make_dirs
from lfs_server.repos import normalize_repo
from lfs_server.settings import Settings
from lfs_server.store.base import is_valid_oid
from lfs_server.store.local import is_fanout, move_aside, walk_files

NAME = "objects-once-per-oid"
BATCH = 500
CHUNK = 1 << 20
PROGRESS_OBJECTS = 1000
PROGRESS_SECONDS = 5.0


@dataclass(frozen=True)
class OldFile:
    """A file inside an old repository folder: an object (`oid` set) or a stray."""

    path: Path
    repo: str
    oid: str | None


@dataclass
class Upgraded:
    objects: int = 0
    shared: int = 0  # objects another repository's copy already stood for
    repos: set[str] = field(default_factory=set)
    quarantined: list[tuple[Path, Path, str]] = field(default_factory=list)


def _repo_of_root(parts: list[str]) -> str | None:
    """`team/proj` for the parts ["team", "proj.git"] of an old repository folder."""
    if not parts or not parts[-1].endswith(".git"):
        return None
    name = "/".join([*parts[:-1], parts[-1][:-4]])
    return name if normalize_repo(name) == name else None


def classify(objects_dir: Path, path: Path) -> OldFile | None:
    """What an old layout made of `path`; None for anything not inside an old repository."""
    parts = list(path.relative_to(objects_dir).parts)
    name, folders = parts[-1], parts[:-1]
    if len(folders) >= 3 and is_fanout(folders[-2]) and is_fanout(folders[-1]):
        repo = _repo_of_root(folders[:-2])
        if repo is not None and is_valid_oid(name) and name[:4] == folders[-2] + folders[-1]:
            return OldFile(path, repo, name)
    for depth in range(len(folders), 0, -1):
        repo = _repo_of_root(folders[:depth])
        if repo is not None:
            return OldFile(path, repo, None)
    return None


def old_files(objects_dir: Path) -> Iterator[OldFile]:
    for entry in walk_files(objects_dir):
        path = Path(entry.path)
        found = classify(objects_dir, path)
        if found is not None:
            yield found


def upgrade_store(settings: Settings, out: TextIO | None = None) -> Upgraded | None:
    """Upgrade the local store once; None when there was nothing to do."""
    if settings.store != "local":
        return None
    db = open_database(settings)
    try:
        if db.upgrade_done(NAME):
            return None
        done = upgrade(
            settings.objects_dir, settings.data_dir / "quarantine", db, out or sys.stderr
        )
        db.mark_upgrade_done(NAME, int(time.time()))
    finally:
        db.close()
    return done if done.objects or done.quarantined else None


def upgrade(objects_dir: Path, quarantine_dir: Path, db: Database, out: TextIO) -> Upgraded:
    total = sum(1 for _ in old_files(objects_dir))
    done = Upgraded()
    if not total:
        return done
    print(
        f"lfs-server: upgrading the object store: {total} files of repository folders "
        "move to one copy per oid (objects/<aa>/<bb>/<oid>) and into the object index",
        file=out,
        flush=True,
    )
    began = last_shown = time.monotonic()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    handled = shown = 0
    batch: list[OldFile] = []
    for found in old_files(objects_dir):
        batch.append(found)
        if len(batch) == BATCH:
            _move(objects_dir, quarantine_dir, db, batch, stamp, done)
            handled, batch = handled + len(batch), []
            now = time.monotonic()
            if handled - shown >= PROGRESS_OBJECTS or now - last_shown >= PROGRESS_SECONDS:
                print(f"lfs-server: upgrade: {handled}/{total} files", file=out, flush=True)
                shown, last_shown = handled, now
    _move(objects_dir, quarantine_dir, db, batch, stamp, done)
    _remove_empty_folders(objects_dir)
    for old, moved_to, reason in done.quarantined:
        print(
            f"lfs-server: upgrade: quarantined {old.relative_to(objects_dir.parent)}: "
            f"{reason}; moved to {moved_to.relative_to(quarantine_dir.parent)}",
            file=out,
        )
    print(
        f"lfs-server: upgrade done: {done.objects} objects of {len(done.repos)} "
        f"repositories indexed ({done.shared} shared with another repository), "
        f"{len(done.quarantined)} files quarantined, in {time.monotonic() - began:.1f} s",
        file=out,
        flush=True,
    )
    return done


def _move(
    objects_dir: Path,
    quarantine_dir: Path,
    db: Database,
    batch: list[OldFile],
    stamp: str,
    done: Upgraded,
) -> None:
    """Steps 1 to 4 for one batch of old files."""
    rows: list[IndexedObject] = []
    linked: list[OldFile] = []
    new_dirs: list[Path] = []
    touched: set[Path] = set()
    for found in batch:
        try:
            info = found.path.lstat()
        except FileNotFoundError:
            continue
        reason = ""
        if found.oid is None:
            reason = "not an object of the old layout"
        elif not os.path.isfile(found.path) or os.path.islink(found.path):
            reason = "not a regular file"
        else:
            new = objects_dir / found.oid[:2] / found.oid[2:4] / found.oid
            new_dirs += make_dirs(new.parent)
            try:
                os.link(found.path, new)
                touched.add(new.parent)
            except FileExistsError:
                existing = new.lstat()
                if existing.st_size != info.st_size:
                    reason = (
                        f"{info.st_size} bytes, where the stored object of that oid "
                        f"has {existing.st_size}"
                    )
                elif not os.path.samestat(existing, info):
                    if not same_bytes(found.path, new):
                        reason = "its bytes differ from the stored object of that oid"
                    else:
                        done.shared += 1
        if reason:
            target_dir = quarantine_dir / found.path.parent.relative_to(objects_dir)
            done.quarantined.append((found.path, move_aside(found.path, target_dir, stamp), reason))
            continue
        assert found.oid is not None
        rows.append(IndexedObject(found.repo, found.oid, info.st_size, int(info.st_mtime)))
        linked.append(found)
    for folder in touched:
        fsync_dir(folder)
    fsync_new_dirs(new_dirs)
    db.add_objects(rows)
    emptied: set[Path] = set()
    for found in linked:
        os.unlink(found.path)
        emptied.add(found.path.parent)
        done.objects += 1
        done.repos.add(found.repo)
    for folder in emptied:
        fsync_dir(folder)


def same_bytes(first: Path, second: Path) -> bool:
    """Whether two files of one size hold the same bytes (two repositories' copies)."""
    with open(first, "rb") as a, open(second, "rb") as b:
        while chunk := a.read(CHUNK):
            if chunk != b.read(len(chunk)):
                return False
    return True


def _remove_empty_folders(folder: Path) -> bool:
    """Remove every empty folder below `folder`; whether `folder` is empty now."""
    empty = True
    removed = False
    for entry in list(os.scandir(folder)):
        if entry.is_dir(follow_symlinks=False) and _remove_empty_folders(Path(entry.path)):
            os.rmdir(entry.path)
            removed = True
        else:
            empty = False
    if removed:
        fsync_dir(folder)
    return empty
