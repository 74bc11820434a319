"""The objects each repository may see: bytes in the store, visibility in the index.

The store holds every object once, by oid; the index (rows in the database:
repository, oid, size, stored at) is the one truth of what exists where.
A row is written only after the backend's put returned, so everything it
names is durable and verified. An upload of an oid the store already holds
for another repository is still received and verified in full before the
row is added: a repository learns nothing of what others hold, and cannot
claim an object without having its bytes. Rows of concurrent uploads are
written together (group_commit.py): one transaction, one fsync for all.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from lfs_server.db import Database, IndexedObject
from lfs_server.group_commit import GroupCommit
from lfs_server.store.base import ObjectStore
from lfs_server.store.verify import UploadVerifier


class ObjectIndex:
    def __init__(self, store: ObjectStore, db: Database, verifier: UploadVerifier) -> None:
        self.store = store
        self.db = db
        self.verifier = verifier
        self._rows: GroupCommit[IndexedObject] = GroupCommit(db.add_objects)

    def sizes(self, repo: str, oids: Sequence[str]) -> dict[str, int]:
        """Which of `oids` `repo` may see, with their sizes: one query, no store access."""
        return self.db.object_sizes(repo, oids)

    def size(self, repo: str, oid: str) -> int | None:
        return self.db.object_sizes(repo, [oid]).get(oid)

    def accept(self, repo: str, oid: str, size: int, upload: Path) -> bool:
        """Verify an upload nginx wrote to `upload`, store it, then let `repo` see it.

        Raises CommitError (nothing becomes visible) when the data does not
        match or storing fails. True when the store did not hold the oid before.
        """
        with self.verifier.verified(upload, oid, size) as verified:
            stored = self.store.put(verified)
        self.record(repo, oid, size)
        return stored

    def accept_direct(self, repo: str, oid: str, size: int, verify_token: str) -> bool:
        """Check and commit an upload the client sent to the backend itself,
        then let `repo` see it. CommitError when there is none or it does not match."""
        stored = self.store.take_direct(oid, size, verify_token)
        self.record(repo, oid, size)
        return stored

    def record(self, repo: str, oid: str, size: int) -> None:
        """Let `repo` see a stored object whose bytes were verified for it."""
        self._rows.add(IndexedObject(repo, oid, size, int(time.time())))
