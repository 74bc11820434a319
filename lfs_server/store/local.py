"""Objects on the local filesystem, served by nginx.

Layout: objects/<repo>.git/<oid[:2]>/<oid[2:4]>/<oid>. Repository roots end
in `.git` and fan-out folders and object files never contain a dot, so one
repository's files can never be another repository's folder.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO

from lfs_server.durable import fsync_dir, fsync_new_dirs, make_dirs
from lfs_server.prehash import ask_digest, ping
from lfs_server.store.base import CommitError, is_valid_oid

INTERNAL_PREFIX = "/.lfs-internal/objects/"
# Kept free for what else lives on the data filesystem: fan-out folders,
# the database and its WAL. Uploads that would eat into it are refused (507).
RESERVED_BYTES = 1 << 20

log = logging.getLogger(__name__)


class LocalStore:
    def __init__(self, root: Path, upload_tmp_dir: Path, prehash_socket: str | None = None) -> None:
        self.root = root
        self.upload_tmp_dir = upload_tmp_dir
        self.prehash_socket = prehash_socket
        self._root = str(root)

    def _relative(self, repo: str, oid: str) -> str:
        if not is_valid_oid(oid):
            raise ValueError("invalid oid")
        return f"{repo}.git/{oid[:2]}/{oid[2:4]}/{oid}"

    def path(self, repo: str, oid: str) -> Path:
        return self.root / self._relative(repo, oid)

    def size(self, repo: str, oid: str) -> int | None:
        # Called for every object of every batch: a plain string stat, no Path.
        try:
            return os.stat(f"{self._root}/{self._relative(repo, oid)}").st_size
        except FileNotFoundError:
            return None

    def internal_uri(self, repo: str, oid: str) -> str:
        return INTERNAL_PREFIX + self._relative(repo, oid)

    def health(self) -> dict[str, str]:
        checks = {"store": self._writable()}
        if self.prehash_socket:
            checks["prehasher"] = ping(self.prehash_socket)
        return checks

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
        try:
            info = os.statvfs(self.upload_tmp_dir)
        except OSError:
            return None
        if info.f_files and not info.f_favail:
            return 0  # no inode left: not even an empty object can be stored
        return max(0, info.f_bavail * info.f_frsize - RESERVED_BYTES)

    def commit(self, repo: str, oid: str, size: int, upload: Path) -> bool:
        final = self.path(repo, oid)
        if final.exists():
            return False
        try:
            with open(upload, "rb") as src:
                opened = os.fstat(src.fileno())
                if opened.st_size != size:
                    raise CommitError(
                        422,
                        f"size mismatch: expected {size} bytes, received {opened.st_size}",
                        "size",
                    )
                if self._digest(src, upload, opened) != oid:
                    raise CommitError(
                        422, "SHA-256 of the uploaded data does not match the oid", "sha256"
                    )
                new_dirs = make_dirs(final.parent)
                try:
                    link_open_file(src.fileno(), upload, final)
                except FileExistsError:
                    return False
            fsync_dir(final.parent)
            fsync_new_dirs(new_dirs)
            return True
        except CommitError:
            raise
        except OSError as exc:
            # The client learns only the status; the cause and the paths go
            # to the server log.
            log.error(
                "lfs-server: could not store object %s of %s: %s (%s) on %s",
                oid,
                repo,
                errno.errorcode.get(exc.errno or 0, exc.errno),
                exc.strerror,
                " -> ".join(str(name) for name in (exc.filename, exc.filename2) if name) or upload,
            )
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise CommitError(507, "insufficient storage on the server") from None
            raise CommitError(500, "could not store the object") from None

    def _digest(self, src: BinaryIO, upload: Path, opened: os.stat_result) -> str:
        """SHA-256 of the upload open as `src`, which is also fsynced when this returns.

        The launcher's Prehasher has usually hashed that very file (the
        device and inode of `opened`) while nginx wrote it, and started its
        writeback; otherwise it is hashed here.
        """
        if self.prehash_socket:
            digest = ask_digest(self.prehash_socket, upload, opened)
            if digest is not None:
                os.fsync(src.fileno())
                return digest
        return _hash_while_flushing(src)


def _hash_while_flushing(src: BinaryIO) -> str:
    """SHA-256 of an open file, fsyncing it at the same time.

    The hash reads the page cache and the fsync waits on the disk; neither
    holds the GIL, so together they take about as long as the slower one.
    """
    failed: list[OSError] = []

    def flush() -> None:
        try:
            os.fsync(src.fileno())
        except OSError as exc:
            failed.append(exc)

    flusher = threading.Thread(target=flush, name="fsync")
    flusher.start()
    try:
        digest = hashlib.file_digest(src, "sha256").hexdigest()
    finally:
        flusher.join()
    if failed:
        raise failed[0]
    return digest


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
