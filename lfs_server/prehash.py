"""Hash upload bodies while nginx is still writing them.

The upload check must read the whole temp file once nginx has received it:
about 0.7 s per GiB of SHA-256, before the client gets its answer. The
launcher runs a Prehasher instead: a thread that follows every temp file in
LFS_DATA_DIR/tmp/uploads as it grows, feeds the new bytes to SHA-256 and
starts their writeback to disk, so that by the time nginx hands the finished
file to the app, little is left to hash or to fsync.

The app asks for a digest over a unix socket in the launcher's private run
dir (one JSON line each way). The answer is only an optimisation: the store
still compares the digest with the oid, and computes it itself whenever the
Prehasher is not there, does not know the file, or fails. Only nginx's temp
files (all-digit names) are followed; they are read, never written.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# How the launcher tells gunicorn's workers where the Prehasher listens.
PREHASH_SOCKET_ENV = "LFS_PREHASH_SOCKET"
POLL_SECONDS = 0.02
CHUNK = 4 << 20
# Bytes read from one file per pass, so that one large upload does not
# starve the others.
PER_PASS = 64 << 20
CLIENT_TIMEOUT = 30.0
SYNC_FILE_RANGE_WRITE = 2

_libc = ctypes.CDLL(None, use_errno=True)


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range to disk now, without waiting."""
    _libc.sync_file_range(fd, ctypes.c_int64(offset), ctypes.c_int64(length), SYNC_FILE_RANGE_WRITE)


@dataclass
class _Followed:
    fd: int
    inode: int
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    offset: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, path: str, inode: int) -> _Followed | None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        if os.fstat(fd).st_ino != inode:  # replaced between scandir and open
            os.close(fd)
            return None
        return cls(fd, inode)

    def close(self) -> None:
        """Waits for a reader, so a closed (and maybe reused) fd is never read."""
        with self.lock:
            os.close(self.fd)
            self.fd = -1

    def advance(self, until: int, budget: int | None = None) -> None:
        """Hash from the current offset up to `until` bytes (at most `budget`)."""
        end = until if budget is None else min(until, self.offset + budget)
        start = self.offset
        while self.offset < end:
            chunk = os.pread(self.fd, min(CHUNK, end - self.offset), self.offset)
            if not chunk:
                break
            self.digest.update(chunk)
            self.offset += len(chunk)
        if self.offset > start:
            start_writeback(self.fd, start, self.offset - start)


class Prehasher:
    """Follows nginx's upload temp files and answers digest requests."""

    def __init__(self, upload_dir: Path, socket_path: Path) -> None:
        self.upload_dir = upload_dir
        self.socket_path = socket_path
        self._files: dict[str, _Followed] = {}
        self._files_lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    def start(self) -> None:
        self._listener.bind(str(self.socket_path))
        self._listener.listen(64)
        for target in (self._follow_loop, self._accept_loop):
            threading.Thread(target=target, name=f"prehash-{target.__name__}", daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._files_lock:
            for followed in self._files.values():
                followed.close()
            self._files.clear()

    # following

    def _follow_loop(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(OSError):  # a file vanished mid-read: next pass
                self._follow_once()
            time.sleep(POLL_SECONDS)

    def _follow_once(self) -> None:
        sizes = {}
        for entry in os.scandir(self.upload_dir):
            if entry.name.isdigit():
                with contextlib.suppress(FileNotFoundError):
                    sizes[entry.path] = entry.stat(follow_symlinks=False)
        work = []
        with self._files_lock:
            for path in list(self._files):
                info = sizes.get(path)
                if info is None or info.st_ino != self._files[path].inode:
                    self._files.pop(path).close()
            for path, info in sizes.items():
                followed = self._files.get(path) or _Followed.open(path, info.st_ino)
                if followed is not None:
                    self._files[path] = followed
                    work.append((followed, info.st_size))
        for followed, size in work:
            if followed.lock.acquire(blocking=False):
                try:
                    if followed.fd >= 0:
                        followed.advance(size, PER_PASS)
                finally:
                    followed.lock.release()

    # answering

    def digest(self, path: str, size: int) -> str | None:
        """SHA-256 of the first `size` bytes of a followed file, or None."""
        with self._files_lock:
            followed = self._files.get(path)
        if followed is None:
            return None
        with followed.lock:
            if followed.fd < 0:
                return None
            info = os.fstat(followed.fd)
            if info.st_size != size or os.stat(path).st_ino != followed.inode:
                return None
            followed.advance(size)
            return followed.digest.hexdigest() if followed.offset == size else None

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as stream:
            try:
                request = json.loads(stream.readline())
                sha256 = self.digest(str(request["path"]), int(request["size"]))
            except (OSError, ValueError, KeyError, TypeError):
                sha256 = None
            with contextlib.suppress(OSError):
                stream.write(json.dumps({"sha256": sha256}).encode() + b"\n")
                stream.flush()


def ask_digest(socket_path: str, upload: Path, size: int) -> str | None:
    """The Prehasher's digest of an upload, or None when it cannot give one."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(CLIENT_TIMEOUT)
            conn.connect(socket_path)
            with conn.makefile("rwb") as stream:
                stream.write(json.dumps({"path": str(upload), "size": size}).encode() + b"\n")
                stream.flush()
                answer = json.loads(stream.readline())
    except (OSError, ValueError):
        return None
    sha256 = answer.get("sha256") if isinstance(answer, dict) else None
    return sha256 if isinstance(sha256, str) else None
