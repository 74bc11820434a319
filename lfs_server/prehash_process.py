"""The Prehasher as a process of its own, so the launcher can start it as LFS_USER.

`python -m lfs_server.prehash_process`, with the upload folder and the
socket in the environment (not on the command line, which names processes).
SIGTERM stops it; SIGINT (a terminal's Ctrl-C) is left to the launcher.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from lfs_server.prehash import PREHASH_SOCKET_ENV, Prehasher

PREHASH_DIR_ENV = "LFS_PREHASH_UPLOAD_DIR"
# "0" when the store does not keep the temp files (S3): no writeback.
PREHASH_WRITEBACK_ENV = "LFS_PREHASH_WRITEBACK"


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Blocked before the Prehasher's threads exist, so they inherit the mask
    # and only sigwait() below takes the signal.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    prehasher = Prehasher(
        Path(os.environ[PREHASH_DIR_ENV]),
        Path(os.environ[PREHASH_SOCKET_ENV]),
        writeback=os.environ.get(PREHASH_WRITEBACK_ENV) != "0",
    )
    prehasher.start()
    signal.sigwait({signal.SIGTERM})
    prehasher.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
