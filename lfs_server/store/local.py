"""Objects on the local filesystem, served by nginx.

Layout: objects/<oid[:2]>/<oid[2:4]>/<oid>, one file per oid whichever
repositories may see it (the object index says which). A verified upload
is hard-linked into place from nginx's temp file on the same filesystem,
so an object is visible only complete; its data, the link, and every folder
made for it, are fsynced before the upload is acknowledged.

A large upload is fsynced (while it is hashed) before it is linked. A small
one is linked first and then fsynced with its names, in one wait for the
disk instead of two: until then its name may lead to bytes not yet durable
(after a power loss: to a short or empty file). No index row names it before
put() returns, so nobody sees it; a later upload that finds the name taken
checks the file there instead of trusting it (see _keep_existing); and if
the fsync fails the name is taken away again before the error is returned.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from lfs_server.durable import fsync_dir, fsync_new_dirs, fsync_together, make_dirs
from lfs_server.store.base import (
    RESERVED_BYTES,
    Action,
    CommitError,
    Links,
    StoredItem,
    VerifiedUpload,
    is_valid_oid,
    storage_failure,
    upload_room,
    upload_through_server,
)
from lfs_server.store.verify import SMALL_UPLOAD

INTERNAL_PREFIX = "/.lfs-internal/objects/"
CHUNK = 1 << 20
_HEX = frozenset("0123456789abcdef")

log = logging.getLogger(__name__)


def is_fanout(name: str) -> bool:
    return len(name) == 2 and set(name) <= _HEX


def relative_path(oid: str) -> str:
    """Where `oid` lives under objects/; ValueError for anything but a valid oid."""
    if not is_valid_oid(oid):
        raise ValueError("invalid oid")
    return f"{oid[:2]}/{oid[2:4]}/{oid}"


class LocalStore:
    downloads_through_server = True
    takes_direct_uploads = False
    keeps_upload_file = True

    def __init__(self, root: Path, upload_tmp_dir: Path, quarantine_dir: Path | None = None):
        self.root = root
        self.upload_tmp_dir = upload_tmp_dir
        self.quarantine_dir = quarantine_dir or root.parent / "quarantine"

    def path(self, oid: str) -> Path:
        return self.root / relative_path(oid)

    def upload_actions(self, links: Links, oid: str, size: int) -> dict[str, Action]:
        return upload_through_server(links, oid, size)

    def download_action(self, links: Links, oid: str, size: int) -> Action:
        return links.ours("download", oid, size)

    def take_direct(self, oid: str, size: int, verify_token: str) -> bool:
        raise CommitError(404, "object was not stored; upload it again")

    def internal_uri(self, oid: str) -> str:
        return INTERNAL_PREFIX + relative_path(oid)

    def size(self, oid: str) -> int | None:
        try:
            return self.path(oid).stat().st_size
        except FileNotFoundError:
            return None

    def put(self, upload: VerifiedUpload) -> bool:
        final = self.path(upload.oid)
        try:
            stored = self._commit(final, upload)
        except OSError as exc:
            # The client learns only the status; the cause and the paths go
            # to the server log.
            log.error(
                "lfs-server: could not store object %s: %s (%s) on %s",
                upload.oid,
                errno.errorcode.get(exc.errno or 0, exc.errno),
                exc.strerror,
                " -> ".join(str(name) for name in (exc.filename, exc.filename2) if name)
                or upload.path,
            )
            raise storage_failure(exc) from None
        return stored

    def _commit(self, final: Path, upload: VerifiedUpload) -> bool:
        """Link the upload as `final` and make it durable; whether this call stored it.

        A name this call made is taken away again if anything after it fails
        (a failed fsync above all): left there, the next upload of the oid
        would find it, read the right bytes from the page cache and fsync
        them with success (Linux reports a write-back error to one fsync
        only), and acknowledge an object the disk may not hold.
        """
        new_dirs = make_dirs(final.parent)
        try:
            link_open_file(upload.file.fileno(), upload.path, final)
            stored = True
        except FileExistsError:
            # The first writer won, if what it left is the object.
            stored = not _keep_existing(final, upload)
            if stored:
                self._replace(final, upload)
        try:
            # Its data, its name and the names of new folders, in one wait.
            unsynced = stored and not upload.synced
            fsync_together(
                upload.file.fileno() if unsynced else None,
                [final.parent, *(folder.parent for folder in new_dirs)],
            )
        except BaseException:
            if stored:
                _withdraw(final, upload)
            raise
        return stored

    def _replace(self, final: Path, upload: VerifiedUpload) -> None:
        """Put the upload, durable first, in place of what `final` names (one rename)."""
        if not upload.synced:
            os.fsync(upload.file.fileno())
        spare = final.with_name(f"{final.name}.{secrets.token_hex(8)}.new")
        link_open_file(upload.file.fileno(), upload.path, spare)
        try:
            os.replace(spare, final)
        except OSError:
            spare.unlink(missing_ok=True)
            raise
        log.warning("lfs-server: replaced a damaged or incomplete copy of object %s", upload.oid)

    def health(self) -> dict[str, str]:
        return {"store": self._writable()}

    def _writable(self) -> str:
        """Whether uploads can be stored, judged without writing anything.

        A write error only a real write meets (a failing disk, a quota, a
        security module's veto) is not seen here; uploads still report it.
        """
        for folder in (self.upload_tmp_dir, self.root):
            if not os.access(folder, os.W_OK | os.X_OK):  # also false on a read-only mount
                return "not writable"
        try:
            info = os.statvfs(self.upload_tmp_dir)
        except OSError:
            return "not writable"
        if info.f_bavail * info.f_frsize <= RESERVED_BYTES:
            return "full"
        if info.f_files and not info.f_favail:  # f_files is 0 where inodes are unlimited
            return "out of inodes"
        return "ok"

    def free_space(self) -> int | None:
        # Where nginx writes upload bodies: the same filesystem as the objects.
        return upload_room(self.upload_tmp_dir)

    # fsck

    def scan(self) -> Iterator[StoredItem]:
        """Every file under objects/ (symlinks not followed), in name order.

        Names order objects by oid: objects/<aa>/<bb>/<oid> with aa and bb
        taken from the oid. Anything else is an item that does not belong.
        """
        for entry in walk_files(self.root):
            key = os.path.relpath(entry.path, self.root)
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone meanwhile
            version = f"{info.st_dev}:{info.st_ino}"
            parts = key.split("/")
            if entry.is_symlink():
                reason = "a symbolic link, not an object file"
            elif not stat.S_ISREG(info.st_mode):
                reason = "not a regular file"
            elif len(parts) != 3 or not (is_fanout(parts[0]) and is_fanout(parts[1])):
                reason = "unexpected file in the store"
            elif not is_valid_oid(parts[2]):
                reason = "unexpected file name"
            elif parts[2][:2] != parts[0] or parts[2][2:4] != parts[1]:
                reason = "object in the wrong fan-out folder"
            else:
                yield StoredItem(key, parts[2], info.st_size, "", version)
                continue
            yield StoredItem(key, None, info.st_size, reason, version)

    def hash_object(self, item: StoredItem, on_bytes: Callable[[int], None]) -> str:
        fd = open_regular(self.root / item.key)
        try:
            return sha256_of(fd, on_bytes)
        finally:
            os.close(fd)

    def quarantine(self, item: StoredItem, stamp: str) -> str:
        path = self.root / item.key
        now = path.lstat()
        if item.version and f"{now.st_dev}:{now.st_ino}" != item.version:
            raise OSError(errno.ESTALE, "replaced while being checked; run fsck again")
        target = move_aside(path, self.quarantine_dir / os.path.dirname(item.key), stamp)
        return os.path.relpath(target, self.root.parent)


def open_regular(path: Path) -> int:
    """A read-only descriptor of the regular file at `path`; OSError for anything else.

    O_NOFOLLOW and O_NONBLOCK: neither a symlink nor a FIFO planted under an
    object's name is followed or hangs the reader.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise IsADirectoryError(errno.EISDIR, "not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def sha256_of(fd: int, on_bytes: Callable[[int], None] = lambda count: None) -> str:
    """SHA-256 (hex) of an open file from its current offset, CHUNK bytes at a time."""
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with open(fd, "rb", buffering=0, closefd=False) as src:
        while count := src.readinto(buffer):
            digest.update(view[:count])
            on_bytes(count)
    return digest.hexdigest()


def walk_files(folder: Path) -> Iterator[os.DirEntry[str]]:
    """Every non-directory below `folder` (symlinks not followed), in name order."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from walk_files(Path(entry.path))
        else:
            yield entry


def move_aside(path: Path, target_dir: Path, stamp: str) -> Path:
    """Move a file to target_dir/<name>.<stamp> (one rename), keeping every byte."""
    new_dirs = make_dirs(target_dir)
    target = target_dir / f"{path.name}.{stamp}"
    serial = 1
    while os.path.lexists(target):
        target = target_dir / f"{path.name}.{stamp}-{serial}"
        serial += 1
    try:
        os.rename(path, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:  # objects/ on another filesystem than quarantine/
            raise
        shutil.copy2(path, target, follow_symlinks=False)
        os.unlink(path)
    fsync_dir(target_dir)
    fsync_dir(path.parent)
    fsync_new_dirs(new_dirs)
    return target


class LinkCheckError(Exception):
    """Uploads could not be hard-linked into the store; the message says why."""


def check_hard_links(upload_tmp_dir: Path, objects_dir: Path) -> None:
    """Hard-link a new file from `upload_tmp_dir` into `objects_dir`, or raise LinkCheckError.

    Every commit is such a link. With the two folders on different
    filesystems (a separate mount for tmp/ or objects/) each one would fail
    with EXDEV and every upload with it, so the server refuses to start.
    """
    try:
        fd, name = tempfile.mkstemp(dir=upload_tmp_dir, prefix="link-check-")
    except OSError as exc:
        raise LinkCheckError(f"cannot create a file in {upload_tmp_dir}: {exc.strerror}") from None
    os.close(fd)
    target = objects_dir / Path(name).name
    try:
        os.link(name, target)
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            raise LinkCheckError(
                f"{upload_tmp_dir} and {objects_dir} are on different filesystems; "
                "uploads are hard-linked from one into the other, so both must be on one"
            ) from None
        raise LinkCheckError(
            f"cannot hard-link from {upload_tmp_dir} into {objects_dir}: {exc.strerror}"
        ) from None
    else:
        os.unlink(target)
    finally:
        os.unlink(name)


def _withdraw(final: Path, upload: VerifiedUpload) -> None:
    """Best effort: unlink `final` if it still names the upload's file, durably if possible."""
    try:
        here = os.stat(final, follow_symlinks=False)
        ours = os.fstat(upload.file.fileno())
        if (here.st_dev, here.st_ino) != (ours.st_dev, ours.st_ino):
            return  # no longer ours: another upload replaced it
        os.unlink(final)
        fsync_dir(final.parent)
    except OSError as exc:
        log.error(
            "lfs-server: could not take back the name of object %s after a failure: %s",
            upload.oid,
            exc.strerror,
        )


def _keep_existing(final: Path, upload: VerifiedUpload) -> bool:
    """Whether the file already named `final` is the object, made durable here.

    A large object is linked only once durable and checked: its size is
    enough. A small one may have been linked by an upload still on its way
    to its fsync, or left short by a power loss before it: it is hashed
    again (cheap at this size) and fsynced before anyone relies on it.
    """
    try:
        fd = os.open(final, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False  # a symlink or something unreadable: not the object
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size != upload.size:
            return False
        if upload.size < SMALL_UPLOAD:
            with open(fd, "rb", buffering=0, closefd=False) as existing:
                if hashlib.sha256(existing.read()).hexdigest() != upload.oid:
                    return False
            os.fsync(fd)
        return True
    finally:
        os.close(fd)


def link_open_file(fd: int, upload: Path, final: Path) -> None:
    """Hard-link the file open as `fd` (not whatever `upload` names now) as `final`.

    linkat(2) of /proc/self/fd/N with AT_SYMLINK_FOLLOW links the inode the
    descriptor holds, without privileges, so a file swapped in under the temp
    name after the check can never become the object. Without /proc the name
    is linked, as long as it still names the open file.
    """
    # With a directory fd Python calls linkat(2); without, link(2), which never follows.
    dir_fd = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            os.link(f"/proc/self/fd/{fd}", final.name, dst_dir_fd=dir_fd, follow_symlinks=True)
        except FileNotFoundError:
            if os.path.isdir("/proc/self/fd") or not os.path.samestat(
                os.stat(upload), os.fstat(fd)
            ):
                raise  # the open file has no name left, or the name is another file's now
            os.link(upload, final.name, dst_dir_fd=dir_fd)
    except OSError as exc:  # named by the real paths, not /proc/self/fd/N and a bare name
        raise OSError(exc.errno, exc.strerror, str(upload), None, str(final)) from None
    finally:
        os.close(dir_fd)
