"""Hash upload bodies while nginx is still writing them.

The upload check must read the whole temp file once nginx has received it:
about 0.7 s per GiB of SHA-256, before the client gets its answer. The
launcher runs a Prehasher instead (its own process, see prehash_process.py):
a thread that follows every temp file in LFS_DATA_DIR/tmp/uploads as it
grows, feeds the new bytes to SHA-256 and, where the temp file becomes the
object (the local store), starts their writeback to disk, so that by the
time nginx hands the finished file to the app, little is left to hash or to
fsync.

The app asks for a digest over a unix socket in the launcher's private run
dir (one JSON line each way). The answer is only an optimisation: the store
still compares the digest with the oid, and computes it itself whenever the
Prehasher is not there, does not know the file, or fails. Only nginx's temp
files (all-digit names) are followed; they are read, never written.

A digest is tied to a file, not to a name: the store sends the device,
inode and size of the descriptor it opened (and later links from), and gets
an answer only when the Prehasher's own descriptor is that same file at that
size. Should one of the Prehasher's two threads die, it says so to a
`{"ping": true}` request (`/healthz` and the metrics ask), answers no
digest requests (a dead accept loop closes the socket, so a request fails at
once instead of waiting CLIENT_TIMEOUT), and the app hashes uploads itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

# How the launcher tells gunicorn's workers where the Prehasher listens.
PREHASH_SOCKET_ENV = "LFS_PREHASH_SOCKET"
POLL_SECONDS = 0.02
CHUNK = 1 << 20
# Bytes read from one file per pass, so that one large upload does not
# starve the others.
PER_PASS = 64 << 20
CLIENT_TIMEOUT = 30.0
# A ping is answered without touching any file: a slow answer means trouble.
PING_TIMEOUT = 2.0
THREADS = ("follow", "accept")
SYNC_FILE_RANGE_WRITE = 2

_libc = ctypes.CDLL(None, use_errno=True)


class _Buffers:
    """Read buffers of CHUNK bytes, each reused by one reader at a time.

    A new bytes object per read would be allocated and freed by whichever
    thread reads (the follow loop, a digest request); above glibc's adaptive
    mmap threshold every thread's malloc arena then keeps such chunks, and
    the process grows by megabytes per thread that ever read. Reading into
    these instead keeps its memory at one buffer per concurrent reader,
    whatever the size of the uploads.
    """

    def __init__(self) -> None:
        self._free: list[memoryview] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def lend(self) -> Iterator[memoryview]:
        with self._lock:
            buffer = self._free.pop() if self._free else memoryview(bytearray(CHUNK))
        try:
            yield buffer
        finally:
            with self._lock:
                self._free.append(buffer)


_buffers = _Buffers()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range to disk now, without waiting."""
    _libc.sync_file_range(fd, ctypes.c_int64(offset), ctypes.c_int64(length), SYNC_FILE_RANGE_WRITE)


@dataclass
class _Followed:
    fd: int
    device: int
    inode: int
    writeback: bool
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    offset: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, path: str, seen: os.stat_result, writeback: bool) -> _Followed | None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) != (seen.st_dev, seen.st_ino):  # replaced since scandir
            os.close(fd)
            return None
        return cls(fd, info.st_dev, info.st_ino, writeback)

    def close(self) -> None:
        """Waits for a reader, so a closed (and maybe reused) fd is never read."""
        with self.lock:
            os.close(self.fd)
            self.fd = -1

    def advance(self, until: int, budget: int | None = None) -> None:
        """Hash from the current offset up to `until` bytes (at most `budget`)."""
        end = until if budget is None else min(until, self.offset + budget)
        start = self.offset
        with _buffers.lend() as buffer:
            while self.offset < end:
                count = os.preadv(self.fd, [buffer[: min(CHUNK, end - self.offset)]], self.offset)
                if not count:
                    break
                self.digest.update(buffer[:count])
                self.offset += count
        if self.writeback and self.offset > start:
            start_writeback(self.fd, start, self.offset - start)


class Prehasher:
    """Follows nginx's upload temp files and answers digest requests."""

    def __init__(self, upload_dir: Path, socket_path: Path, writeback: bool = True) -> None:
        self.upload_dir = upload_dir
        self.socket_path = socket_path
        # Off where the temp files are not what the store keeps (S3): their
        # bytes then never need to reach the disk.
        self.writeback = writeback
        self._files: dict[str, _Followed] = {}
        self._files_lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._threads: dict[str, threading.Thread] = {}
        # Follow passes completed: lets a caller wait until the loop has looked.
        self.passes = 0

    def start(self) -> None:
        self._listener.bind(str(self.socket_path))
        self._listener.listen(64)
        for name, loop in zip(THREADS, (self._follow_loop, self._accept_loop), strict=True):
            thread = threading.Thread(
                target=self._run, args=(name, loop), name=f"prehash-{name}", daemon=True
            )
            self._threads[name] = thread
            thread.start()

    def alive(self) -> dict[str, bool]:
        """Whether each of the two threads still runs."""
        return {name: self._threads[name].is_alive() for name in THREADS if name in self._threads}

    def _run(self, name: str, loop: Callable[[], None]) -> None:
        """Run a loop; should it die, say so and stop promising anything."""
        try:
            loop()
        except BaseException:
            if not self._stopping.is_set():
                print(
                    f"lfs-server: the Prehasher's {name} loop died; uploads are hashed "
                    f"by the app from now on:\n{traceback.format_exc()}",
                    file=sys.stderr,
                    flush=True,
                )
            if name == "accept":
                with contextlib.suppress(OSError):
                    self._listener.close()  # requests fail at once instead of timing out
            else:
                self._forget_all()  # nginx's removed temp files must not stay open

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._forget_all()

    def _forget_all(self) -> None:
        with self._files_lock:
            for followed in self._files.values():
                followed.close()
            self._files.clear()

    # following

    def _follow_loop(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(OSError):  # a file vanished mid-read: next pass
                self._follow_once()
            self.passes += 1
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
                followed = self._files[path]
                if info is None or (info.st_dev, info.st_ino) != (followed.device, followed.inode):
                    self._files.pop(path).close()
            for path, info in sizes.items():
                followed = self._files.get(path) or _Followed.open(path, info, self.writeback)
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

    def digest(self, path: str, size: int, device: int, inode: int) -> str | None:
        """SHA-256 of a followed file, or None.

        Only when the file followed under `path` is the one the asker has open
        (same device and inode) and now holds exactly `size` bytes.
        """
        if not self.alive().get("follow"):
            return None
        with self._files_lock:
            followed = self._files.get(path)
        if followed is None:
            return None
        with followed.lock:
            if followed.fd < 0:
                return None
            info = os.fstat(followed.fd)
            if (info.st_dev, info.st_ino, info.st_size) != (device, inode, size):
                return None
            followed.advance(size)
            return followed.digest.hexdigest() if followed.offset == size else None

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(POLL_SECONDS)  # out of descriptors or memory for now: again
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as stream:
            try:
                request = json.loads(stream.readline())
                if request.get("ping") is True:
                    answer: dict[str, object] = self.alive()
                else:
                    fields = (int(request[key]) for key in ("size", "dev", "ino"))
                    answer = {"sha256": self.digest(str(request["path"]), *fields)}
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                answer = {"sha256": None}
            with contextlib.suppress(OSError):
                stream.write(json.dumps(answer).encode() + b"\n")
                stream.flush()


def _request(socket_path: str, request: dict[str, object], timeout: float) -> object:
    """Send one JSON line, read one back; None when there is no answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(socket_path)
            with conn.makefile("rwb") as stream:
                stream.write(json.dumps(request).encode() + b"\n")
                stream.flush()
                return json.loads(stream.readline())
    except (OSError, ValueError):
        return None


def ask_digest(socket_path: str, upload: Path, opened: os.stat_result) -> str | None:
    """The Prehasher's digest of the upload open with fstat `opened`, or None."""
    request = {
        "path": str(upload),
        "size": opened.st_size,
        "dev": opened.st_dev,
        "ino": opened.st_ino,
    }
    answer = _request(socket_path, request, CLIENT_TIMEOUT)
    sha256 = answer.get("sha256") if isinstance(answer, dict) else None
    return sha256 if isinstance(sha256, str) else None


def ping(socket_path: str) -> str:
    """What is wrong with the Prehasher at `socket_path`, or "ok"."""
    answer = _request(socket_path, {"ping": True}, PING_TIMEOUT)
    if not isinstance(answer, dict):
        return "not answering"
    dead = [name for name in THREADS if answer.get(name) is not True]
    return f"{' and '.join(dead)} loop stopped" if dead else "ok"
