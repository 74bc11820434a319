"""Objects in an S3 bucket (LFS_STORE=s3), one key per oid.

Proxy transfer (the default): uploads come to nginx as for the local store,
are verified there, then go to the bucket (S3Bucket.put_file: the bucket
checks the SHA-256 again) before the client gets its answer; downloads are
an X-Accel-Redirect that makes nginx stream a presigned GET from the bucket.
A bucket that cannot take an upload makes it fail with 503 and Retry-After,
which clients retry; nothing is acknowledged, and no index row written,
before the bucket acknowledged the whole object.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from lfs_server.store.base import (
    Action,
    CommitError,
    Links,
    StoredItem,
    VerifiedUpload,
    upload_through_server,
)
from lfs_server.store.s3_bucket import BucketError, BucketRejected, S3Bucket

UNAVAILABLE = "object storage unavailable; try again"

log = logging.getLogger(__name__)


def bucket_failure(exc: BucketError, oid: str) -> CommitError:
    """What the client hears when the bucket failed: a status it retries.

    The one-line cause goes to the server log, never to the client.
    """
    log.error("lfs-server: could not store object %s in the bucket: %s", oid, exc.message)
    if isinstance(exc, BucketRejected):
        return CommitError(500, "could not store the object; try again")
    return CommitError(503, UNAVAILABLE)


class S3Store:
    downloads_through_server = True

    def __init__(self, bucket: S3Bucket) -> None:
        self.bucket = bucket

    def upload_actions(self, links: Links, oid: str, size: int) -> dict[str, Action]:
        return upload_through_server(links, oid, size)

    def download_action(self, links: Links, oid: str, size: int) -> Action:
        return links.ours("download", oid, size)

    def internal_uri(self, oid: str) -> str:
        return self.bucket.internal_get_location(self.bucket.key_for(oid))

    def size(self, oid: str) -> int | None:
        head = self.bucket.head(self.bucket.key_for(oid), checksum=False)
        return None if head is None else head.size

    def put(self, upload: VerifiedUpload) -> bool:
        key = self.bucket.key_for(upload.oid)
        try:
            existing = self.bucket.head(key, checksum=False)
            if existing is not None and existing.size == upload.size:
                return False  # content-addressed: the bytes are those already stored
            self.bucket.put_file(key, upload.file.fileno(), upload.size, upload.oid)
        except BucketError as exc:
            raise bucket_failure(exc, upload.oid) from None
        return True

    def health(self) -> dict[str, str]:
        return {"bucket": self.bucket.check()}

    def free_space(self) -> int | None:
        return None  # a bucket has no size a client could run into

    # fsck

    def scan(self) -> Iterator[StoredItem]:
        raise NotImplementedError("fsck does not check the S3 store yet")

    def hash_object(self, item: StoredItem, on_bytes: Callable[[int], None]) -> str:
        raise NotImplementedError("fsck does not check the S3 store yet")

    def quarantine(self, item: StoredItem, stamp: str) -> str:
        raise NotImplementedError("fsck does not check the S3 store yet")
