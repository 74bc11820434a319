"""Stale upload temp files: what a crash between temp file and commit leaves.

nginx writes each upload body to a temp file in LFS_DATA_DIR/tmp/uploads and
removes it when the request ends, committed or not; only a crash (nginx
killed, the machine losing power) leaves one behind. A live upload keeps a
fresh mtime (nginx writes as the bytes arrive, and the commit follows at
once), so anything not modified for an hour is garbage. The launcher sweeps
at start and periodically; `lfs-server cleanup` does it on demand.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_OLDER_THAN = 3600.0


@dataclass(frozen=True)
class Swept:
    files: int = 0
    bytes: int = 0


def sweep_stale_uploads(
    upload_tmp_dir: Path, older_than: float = DEFAULT_OLDER_THAN, now: float | None = None
) -> Swept:
    """Remove regular files in `upload_tmp_dir` not modified for `older_than` seconds.

    One scandir of one flat folder: cheap enough to run every few minutes.
    A missing folder counts as empty; a file that vanishes meanwhile is skipped.
    """
    cutoff = (time.time() if now is None else now) - older_than
    files = removed_bytes = 0
    try:
        entries = list(os.scandir(upload_tmp_dir))
    except FileNotFoundError:
        return Swept()
    for entry in entries:
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            info = entry.stat(follow_symlinks=False)
            if info.st_mtime >= cutoff:
                continue
            os.unlink(entry.path)
        except FileNotFoundError:
            continue
        files += 1
        removed_bytes += info.st_size
    return Swept(files, removed_bytes)
