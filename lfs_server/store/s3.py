"""Objects in an S3 bucket (LFS_STORE=s3), one key per oid.

Proxy transfer (the default): uploads come to nginx as for the local store,
are verified there, then go to the bucket (S3Bucket.put_file: the bucket
checks the SHA-256 again) before the client gets its answer; downloads are
an X-Accel-Redirect that makes nginx stream a presigned GET from the bucket.
A bucket that cannot take an upload makes it fail with 503 and Retry-After,
which clients retry; nothing is acknowledged, and no index row written,
before the bucket acknowledged the whole object.

Direct transfer: the upload action is a presigned PUT that signs the size
and `x-amz-checksum-sha256`, so the bucket refuses any other body; it goes
to a key of its own (`<prefix>uploads/<oid>/<digest of the verify token>`),
never to the oid's key, so a repository cannot claim an object another one
stored without sending the bytes. The verify call (take_direct) checks that
key's size and SHA-256, copies it to the oid's key inside the bucket and
removes it; only then is the index row written, so nothing is downloadable
before it is verified. The upload key is derived from the signed verify
token, never taken from the client. Downloads are presigned GETs. Objects
larger than one PUT allows are uploaded through the server as in proxy mode.
"""

from __future__ import annotations

import errno
import hashlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

from lfs_server.settings import Settings
from lfs_server.store.base import (
    Action,
    CommitError,
    Links,
    StoredItem,
    VerifiedUpload,
    upload_room,
    upload_through_server,
)
from lfs_server.store.s3_bucket import (
    MAX_PUT_SIZE,
    PROBE_NAME,
    BucketError,
    BucketRejected,
    S3Bucket,
    sha256_b64,
    shared_bucket,
)

# Under the prefix: direct uploads waiting for their verify call, and what
# fsck moved aside. Neither is an object; fsck leaves both alone.
UPLOADS = "uploads/"
QUARANTINE = "quarantine/"
UNAVAILABLE = "object storage unavailable; try again"
NOT_UPLOADED = "object was not stored; upload it again"
USE_PROXY = (
    "LFS_S3_TRANSFER=direct: the bucket does not refuse a body that does not match "
    "its signed SHA-256, so clients could store wrong bytes; use LFS_S3_TRANSFER=proxy"
)

log = logging.getLogger(__name__)


def bucket_failure(exc: BucketError, oid: str) -> CommitError:
    """What the client hears when the bucket failed: a status it retries.

    The one-line cause goes to the server log, never to the client.
    """
    log.error("lfs-server: could not store object %s in the bucket: %s", oid, exc.message)
    if isinstance(exc, BucketRejected):
        return CommitError(500, "could not store the object; try again")
    return CommitError(503, UNAVAILABLE)


def open_s3_store(settings: Settings) -> S3Store:
    return S3Store(
        shared_bucket(settings),
        settings.upload_tmp_dir,
        direct=settings.s3.transfer == "direct",
    )


def s3_problem(settings: Settings) -> str:
    """What keeps the bucket from serving in the configured mode, in one line, or ""."""
    bucket = shared_bucket(settings)
    state = bucket.check()
    if state != "ok":
        return state
    if settings.s3.transfer == "direct":
        try:
            if not bucket.proves_checksum_enforcement():
                return USE_PROXY
        except BucketError as exc:
            return exc.message
    return ""


class S3Store:
    def __init__(self, bucket: S3Bucket, upload_tmp_dir: Path, direct: bool = False) -> None:
        self.bucket = bucket
        self.upload_tmp_dir = upload_tmp_dir
        self.direct = direct
        self.downloads_through_server = not direct
        self.takes_direct_uploads = direct
        self.keeps_upload_file = False

    def upload_key(self, oid: str, verify_token: str) -> str:
        """Where one direct upload's body goes: unique to it, and derived from
        its signed verify token, so verify finds it without trusting the client."""
        digest = hashlib.sha256(verify_token.encode()).hexdigest()[:32]
        return f"{self.bucket.prefix}{UPLOADS}{oid}/{digest}"

    def upload_actions(self, links: Links, oid: str, size: int) -> dict[str, Action]:
        if not self.direct or size > MAX_PUT_SIZE:
            return upload_through_server(links, oid, size)
        verify = links.ours("verify", oid, size)
        token = verify["header"]["Authorization"].removeprefix("Bearer ")
        put = self.bucket.presign_put(self.upload_key(oid, token), size, oid, links.ttl)
        return {"upload": links.external(put.url, put.headers), "verify": verify}

    def download_action(self, links: Links, oid: str, size: int) -> Action:
        if not self.direct:
            return links.ours("download", oid, size)
        signed = self.bucket.download_url(self.bucket.key_for(oid), links.ttl)
        return links.external(signed.url, {}, expires_at=signed.expires_at)

    def take_direct(self, oid: str, size: int, verify_token: str) -> bool:
        source = self.upload_key(oid, verify_token)
        key = self.bucket.key_for(oid)
        try:
            head = self.bucket.head(source, checksum=True)
            if head is None:
                raise CommitError(404, NOT_UPLOADED)
            if head.size != size:
                self.bucket.delete(source)
                raise CommitError(
                    422, f"size mismatch: expected {size} bytes, received {head.size}", "size"
                )
            if head.sha256 != sha256_b64(oid):
                self.bucket.delete(source)
                raise CommitError(
                    422, "SHA-256 of the uploaded data does not match the oid", "sha256"
                )
            existing = self.bucket.head(key, checksum=False)
            stored = existing is None or existing.size != size
            if stored:
                self.bucket.copy(source, key)
            self.bucket.delete(source)
        except BucketError as exc:
            raise bucket_failure(exc, oid) from None
        return stored

    def internal_uri(self, oid: str) -> str:
        return self.bucket.internal_get_location(self.bucket.key_for(oid))

    def size(self, oid: str) -> int | None:
        head = self.bucket.head(self.bucket.key_for(oid), checksum=False)
        return None if head is None else head.size

    def put(self, upload: VerifiedUpload) -> bool:
        """A proxied upload (every one in proxy mode, the largest in direct mode)."""
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
        """In proxy mode every upload body lands in nginx's temp dir before it
        goes to the bucket, so that disk's room (less the reserve the local
        store keeps) is what an upload may fill: a nearly full one is refused
        with 507 at batch and before the body, as on the local store. In
        direct mode bodies go to the bucket, which has no size a client
        could run into; None (an object too large for one PUT, uploaded
        through the server, then fails part way on a full temp disk with a
        500 the client retries)."""
        return None if self.direct else upload_room(self.upload_tmp_dir)

    # fsck

    def scan(self) -> Iterator[StoredItem]:
        """Every key under the prefix but the server's own transient ones.

        S3 lists keys in binary order, and `<aa>/<bb>/<oid>` sorts as its
        oid, so objects come in ascending oid order. Pending direct uploads
        (`uploads/`: one may be verified any moment; a lifecycle rule clears
        the abandoned), the start-up check's probe and `quarantine/` are
        skipped; any other key is an item that does not belong.
        """
        prefix = self.bucket.prefix
        skipped = tuple(prefix + name for name in (UPLOADS, QUARANTINE, PROBE_NAME))
        for listed in self.bucket.list_keys():
            if listed.key.startswith(skipped):
                continue
            oid = self.bucket.oid_for(listed.key)
            reason = "" if oid is not None else "unexpected key in the bucket"
            yield StoredItem(listed.key, oid, listed.size, reason, listed.etag)

    def hash_object(self, item: StoredItem, on_bytes: Callable[[int], None]) -> str:
        """Streamed with one GET, a chunk at a time. A bucket that fails raises
        BucketError (not an OSError): fsck stops rather than blame the object."""
        digest = hashlib.sha256()
        for chunk in self.bucket.chunks(item.key):
            digest.update(chunk)
            on_bytes(len(chunk))
        return digest.hexdigest()

    def quarantine(self, item: StoredItem, stamp: str) -> str:
        """Copy the listed version to `<prefix>quarantine/<key>.<stamp>`, then
        delete the key. An item over one copy's limit (5 GiB) stays in place."""
        if item.size > MAX_PUT_SIZE:
            raise OSError(errno.EFBIG, "too large to copy inside the bucket; move it by hand")
        target = f"{self.bucket.prefix}{QUARANTINE}{item.key[len(self.bucket.prefix) :]}.{stamp}"
        try:
            self.bucket.copy(item.key, target, if_match=item.version)
        except BucketRejected:
            raise OSError(errno.ESTALE, "replaced while being checked; run fsck again") from None
        self.bucket.delete(item.key)
        return target
