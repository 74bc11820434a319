"""The Prehasher reads into buffers it reuses: its memory does not grow with uploads."""

from __future__ import annotations

import hashlib
import os
import threading
import tracemalloc
from pathlib import Path

from lfs_server.prehash import CHUNK, Prehasher, ask_digest
from tests.waiting import wait_until

MIB = 1 << 20
READERS = 4


def write_upload(path: Path, size: int) -> str:
    block = os.urandom(MIB)
    with open(path, "wb") as out:
        for _ in range(size // MIB):
            out.write(block)
    with open(path, "rb") as written:
        return hashlib.file_digest(written, "sha256").hexdigest()


def peak_while_hashing(tmp_path: Path, size: int) -> int:
    """Python's peak allocation (every thread) while READERS uploads of `size`
    bytes are each hashed through a digest request of their own, at once."""
    uploads = tmp_path / f"uploads-{size}"
    uploads.mkdir()
    names = [uploads / str(1000 + index) for index in range(READERS)]
    oids = [write_upload(path, size) for path in names]
    hasher = Prehasher(uploads, tmp_path / f"prehash-{size}.sock")
    answers: dict[Path, str | None] = {}

    def ask(path: Path) -> None:
        answers[path] = ask_digest(str(hasher.socket_path), path, os.stat(path))

    tracemalloc.start()
    # Started inside the trace, the follow loop's reads are counted too.
    hasher.start()
    try:
        # Ask once the follow loop has looked at every upload: a request it
        # answers before it has seen the file gets None.
        looked = hasher.passes + 2
        assert wait_until(lambda: hasher.passes >= looked, 30), "the follow loop never looked"
        threads = [threading.Thread(target=ask, args=(path,)) for path in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        hasher.stop()
    assert [answers[path] for path in names] == oids
    return peak


def test_hashing_memory_is_one_buffer_per_reader_whatever_the_size(tmp_path: Path) -> None:
    small = peak_while_hashing(tmp_path, 8 * MIB)
    large = peak_while_hashing(tmp_path, 64 * MIB)
    # Each of the concurrent readers (the follow loop and the digest requests)
    # holds at most one CHUNK buffer, and reads allocate nothing more.
    assert large <= (READERS + 1) * CHUNK + MIB, (small, large)
    assert large <= small + MIB, (small, large)
