"""Checking an upload nginx wrote to a temp file, before any backend takes it.

The same for every store: the file is opened once, its size and SHA-256
are compared with what the signed token names, and the open descriptor is
what the backend then stores. For a store that keeps the temp file as the
object (local), a large upload is fsynced while it is hashed (the two
overlap); a small one is left to the store, which makes its data and its
name durable in one wait. A store that sends the bytes elsewhere (S3) needs
no local copy on disk at all, and nothing is fsynced. The launcher's
Prehasher has usually hashed that very file (device, inode, size) while
nginx wrote it; otherwise it is hashed here. Small uploads are always hashed
here: reading a few hundred KiB costs less than asking the Prehasher.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from lfs_server.prehash import ask_digest, ping
from lfs_server.store.base import CommitError, VerifiedUpload, storage_failure

log = logging.getLogger(__name__)

# Below this size an upload is hashed in the request's own thread (SHA-256 of
# 1 MiB: about 1.5 ms), without a round trip to the Prehasher, and not fsynced.
SMALL_UPLOAD = 1 << 20


class UploadVerifier:
    def __init__(self, prehash_socket: str | None = None, fsync_large: bool = True) -> None:
        self.prehash_socket = prehash_socket
        self.fsync_large = fsync_large

    @contextmanager
    def verified(self, upload: Path, oid: str, size: int) -> Iterator[VerifiedUpload]:
        """The upload, open and checked; CommitError when it does not match or cannot be read."""
        try:
            src = open(upload, "rb")  # noqa: SIM115 (closed below; open errors are CommitErrors)
        except OSError as exc:
            raise _failed(exc, oid, upload) from None
        with src:
            self._check(src, upload, oid, size)
            synced = self.fsync_large and size >= SMALL_UPLOAD
            yield VerifiedUpload(oid, size, upload, src, synced=synced)

    def _check(self, src: BinaryIO, upload: Path, oid: str, size: int) -> None:
        try:
            opened = os.fstat(src.fileno())
            if opened.st_size != size:
                raise CommitError(
                    422, f"size mismatch: expected {size} bytes, received {opened.st_size}", "size"
                )
            if self._digest(src, upload, opened) != oid:
                raise CommitError(
                    422, "SHA-256 of the uploaded data does not match the oid", "sha256"
                )
        except OSError as exc:
            raise _failed(exc, oid, upload) from None

    def _digest(self, src: BinaryIO, upload: Path, opened: os.stat_result) -> str:
        """SHA-256 of the upload open as `src`; a large one is also fsynced
        when this returns, if `fsync_large`."""
        if opened.st_size < SMALL_UPLOAD:
            return hashlib.sha256(src.read()).hexdigest()
        if self.prehash_socket:
            digest = ask_digest(self.prehash_socket, upload, opened)
            if digest is not None:
                if self.fsync_large:
                    os.fsync(src.fileno())
                return digest
        if not self.fsync_large:
            return hashlib.file_digest(src, "sha256").hexdigest()
        return _hash_while_flushing(src)

    def health(self) -> dict[str, str]:
        """The Prehasher's state, when the launcher runs one."""
        return {"prehasher": ping(self.prehash_socket)} if self.prehash_socket else {}


def _failed(exc: OSError, oid: str, upload: Path) -> CommitError:
    log.error(
        "lfs-server: could not check the upload of object %s: %s (%s) on %s",
        oid,
        errno.errorcode.get(exc.errno or 0, exc.errno),
        exc.strerror,
        exc.filename or upload,
    )
    return storage_failure(exc)


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
