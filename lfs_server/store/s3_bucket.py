"""One S3 bucket through boto3: the few operations the S3 store is built on.

boto3 (botocore and s3transfer) signs every request (SigV4), retries
transient failures and splits large uploads into parallel parts; nothing here
signs by hand (presigned URLs come from botocore's own signer, see
s3_signing). Credentials come from the AWS SDK's default chain
(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, shared config
files, container and instance roles), never from a setting of ours.

Keys are content-addressed: `<prefix><oid[:2]>/<oid[2:4]>/<oid>`. Every
failure of the bucket surfaces as a BucketError with a one-line message that
names no credential and no signed URL, so callers can log it and answer with
a status the client retries.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import boto3
import botocore.loaders
import botocore.session
from boto3.s3.transfer import ProgressCallbackInvoker, TransferConfig, create_transfer_manager
from botocore import UNSIGNED
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials, ReadOnlyCredentials
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.httpsession import URLLib3Session, get_cert_path
from botocore.utils import get_environ_proxies, percent_encode_sequence

from lfs_server.settings import S3Settings, Settings
from lfs_server.store.base import is_valid_oid
from lfs_server.store.s3_signing import SAMPLE_KEY, QuerySigner, SignedURL
from lfs_server.store.s3_url_cache import URLCache

# The largest object one PUT (and so one presigned upload) may carry on AWS.
MAX_PUT_SIZE = 5 << 30
# Longest lifetime of a SigV4 presigned URL.
MAX_PRESIGN_EXPIRY = 604800
# Where the app's X-Accel-Redirect sends nginx for a download (see s3_nginx).
INTERNAL_PREFIX = "/.lfs-internal/s3/"
# An internal redirect is followed at once; the margin covers clock skew
# between this host and the bucket.
INTERNAL_EXPIRY = 900
OBJECT_CONTENT_TYPE = "application/octet-stream"
# The query every presigned GET carries, encoded as botocore encodes it.
GET_QUERY = "?" + percent_encode_sequence({"response-content-type": OBJECT_CONTENT_TYPE})
# Where the direct-mode start-up check writes (and removes) its probe object.
PROBE_NAME = ".checksum-probe-"
# Bytes read from the bucket at a time when an object is streamed (fsck).
READ_CHUNK = 1 << 20

NO_CREDENTIALS = (
    "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
    "(or AWS_PROFILE with a shared config file, or run with an instance or container role)"
)

# Error codes that mean the bucket refused the bytes of this request, not
# that it is unavailable: sending the same bytes again cannot succeed.
_REJECTED_CODES = frozenset(
    {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "EntityTooLarge", "IncompleteBody"}
)
_THROTTLED_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests"}
)
_CREDENTIAL_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}
)
_REGION_CODES = frozenset({"PermanentRedirect", "AuthorizationHeaderMalformed", "301"})
_ERRNO_TEXT_RE = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")


class BucketError(Exception):
    """The bucket did not do what was asked; `message` is one line, safe to log."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BucketUnavailable(BucketError):
    """The bucket could not answer: unreachable, timed out, throttled, failing
    (5xx), or refusing our credentials or configuration. The same request may
    succeed later: answer 503 on a transfer, 429 with Retry-After on batch.
    `throttled` is True when the bucket asked us to slow down."""

    def __init__(self, message: str, throttled: bool = False) -> None:
        super().__init__(message)
        self.throttled = throttled


class BucketRejected(BucketError):
    """The bucket refused the bytes themselves (a checksum or length that does
    not match): sending the same bytes again cannot succeed."""


@dataclass(frozen=True)
class ObjectHead:
    size: int
    # Base64 SHA-256 of the whole object as the bucket verified it on upload,
    # or None when the bucket has none (a multipart object's checksum is a
    # checksum of its parts' checksums, which says nothing about the oid).
    sha256: str | None


class Listed(NamedTuple):
    """One key of a listing; `etag` names the version listed."""

    key: str
    size: int
    etag: str


@dataclass(frozen=True)
class PresignedPut:
    url: str
    # Headers the client must send with the body (git-lfs sends an action's
    # `header` map verbatim). The signature also covers Content-Length.
    headers: dict[str, str]


@dataclass(frozen=True)
class Origin:
    """Where the bucket's objects live, as botocore addresses them."""

    scheme: str
    netloc: str  # host[:port], exactly as signed in the Host header
    host: str
    port: int
    base_path: str  # "/bucket/" (path addressing) or "/" (virtual)


# botocore's data files (the S3 model, endpoint rules, partitions) parsed
# once per process, some 14 MiB, and shared by every session made here. The
# gunicorn master parses them before it forks (load_models), so its workers
# share those pages instead of parsing a copy each. Loaded data is only read.
_loader = botocore.loaders.create_loader()


def _session() -> botocore.session.Session:
    session = botocore.session.Session()
    session.register_component("data_loader", _loader)
    return session


def _unsigned_client(settings: S3Settings) -> Any:  # botocore makes the class at run time
    """A client that signs nothing: it needs no credentials and makes no request here."""
    return boto3.session.Session(botocore_session=_session()).client(
        "s3",
        endpoint_url=settings.endpoint or None,
        config=_config(settings, signature_version=UNSIGNED),
    )


def load_models(settings: S3Settings) -> None:
    """Parse what an S3 client for these settings needs, without a request."""
    _unsigned_client(settings)


def sha256_b64(sha256_hex: str) -> str:
    """The `x-amz-checksum-sha256` form of a SHA-256: base64 of its 32 bytes."""
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode()


def _config(settings: S3Settings, **options: object) -> Config:
    base = {
        "signature_version": "s3v4",
        "region_name": settings.region,
        "s3": {"addressing_style": settings.addressing},
    }
    return Config(**{**base, **options})


def bucket_origin(settings: S3Settings) -> Origin:
    """The scheme, host and base path of the bucket's object URLs.

    Asked of botocore itself (an unsigned URL for a sample key, no network, no
    credentials), so nginx proxies to exactly the place every signed URL names.
    """
    client = _unsigned_client(settings)
    sample = settings.prefix + "0" * 64
    url = urlsplit(
        client.generate_presigned_url(
            "get_object", Params={"Bucket": settings.bucket, "Key": sample}
        )
    )
    if url.hostname is None or not url.path.endswith("/" + sample):
        raise ValueError(f"unexpected object URL layout for bucket {settings.bucket!r}")
    return Origin(
        scheme=url.scheme,
        netloc=url.netloc,
        host=url.hostname,
        port=url.port or (443 if url.scheme == "https" else 80),
        base_path=url.path[: -len(sample)],
    )


def ca_bundle() -> str:
    """The CA certificates botocore trusts (AWS_CA_BUNDLE, the profile's
    ca_bundle, or the bundle it ships), for nginx to verify the same bucket."""
    configured = _session().get_config_variable("ca_bundle")
    return str(configured or get_cert_path(True))


class S3Bucket:
    """The bucket named by the settings, through one thread-safe boto3 client.

    Share one per process (`shared_bucket`): boto3 clients are thread-safe and
    keep a connection pool; sessions are not, so the session is used only here.
    """

    def __init__(self, settings: S3Settings, max_connections: int = 10) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self.prefix = settings.prefix
        self._where = settings.endpoint or f"AWS S3 ({settings.region})"
        self._botocore = _session()
        self._credentials_lock = threading.Lock()
        self._credentials: Credentials | None = None
        self._signer: QuerySigner | None = None
        self._downloads = URLCache()
        session = boto3.session.Session(botocore_session=self._botocore)
        endpoint = settings.endpoint or None
        # Transfers: a few retries (standard mode backs off and retries
        # throttling, 5xx and connection errors), patient reads.
        self._client = session.client(
            "s3",
            endpoint_url=endpoint,
            config=_config(
                settings,
                retries={"mode": "standard", "max_attempts": 4},
                connect_timeout=5,
                read_timeout=60,
                max_pool_connections=max(max_connections, settings.concurrency),
                tcp_keepalive=True,
            ),
        )
        # Health and start-up checks: one attempt, a short wait.
        self._probe = session.client(
            "s3",
            endpoint_url=endpoint,
            config=_config(
                settings,
                retries={"mode": "standard", "total_max_attempts": 1},
                connect_timeout=3,
                read_timeout=5,
            ),
        )
        # Objects below one part go in a single PUT carrying the whole
        # object's SHA-256, which the bucket verifies. Larger ones go in parts
        # read straight from the file (memory flat in object size), each
        # part's SHA-256 verified by the bucket; AWS (and SeaweedFS) refuse a
        # whole-object SHA-256 on multipart uploads. s3transfer aborts the
        # multipart upload when any part fails, and completing it is atomic:
        # nothing is visible under the key before the whole object is.
        self._transfer_config = TransferConfig(
            multipart_threshold=settings.part_size,
            multipart_chunksize=settings.part_size,
            max_concurrency=settings.concurrency,
            use_threads=True,
            preferred_transfer_client="classic",
        )

    # --- keys ---------------------------------------------------------------

    def key_for(self, oid: str) -> str:
        if not is_valid_oid(oid):
            raise ValueError("invalid oid")
        return f"{self.prefix}{oid[:2]}/{oid[2:4]}/{oid}"

    def oid_for(self, key: str) -> str | None:
        """The oid a content-addressed key names, or None for any other key."""
        oid = key.rpartition("/")[2]
        if is_valid_oid(oid) and key == self.key_for(oid):
            return oid
        return None

    # --- objects ------------------------------------------------------------

    def put_file(
        self,
        key: str,
        source: str | os.PathLike[str] | int,
        size: int,
        sha256_hex: str,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        """Upload a local file whose size and SHA-256 the caller verified.

        `source` is a path or an open file descriptor (read through
        /proc/self/fd, so each part reads its own range of the same file).
        Returns once the bucket acknowledged the whole object; raises
        BucketUnavailable or BucketRejected otherwise, leaving nothing visible.
        `on_bytes` hears of the bytes sent as they go, from s3transfer's
        threads (a negative count when a retried request starts over).
        """
        path = f"/proc/self/fd/{source}" if isinstance(source, int) else os.fspath(source)
        actual = os.stat(path).st_size
        if actual != size:
            raise ValueError(f"file holds {actual} bytes, expected {size}")
        extra: dict[str, str] = {"ContentType": OBJECT_CONTENT_TYPE}
        if size < self._transfer_config.multipart_threshold:
            extra["ChecksumSHA256"] = sha256_b64(sha256_hex)
        else:
            extra["ChecksumAlgorithm"] = "SHA256"
        try:
            with create_transfer_manager(self._client, self._transfer_config) as manager:
                subscribers = [ProgressCallbackInvoker(on_bytes)] if on_bytes else None
                manager.upload(
                    path, self.bucket, key, extra_args=extra, subscribers=subscribers
                ).result()
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "upload") from exc

    def head(self, key: str, checksum: bool = True) -> ObjectHead | None:
        """Size (and verified SHA-256) of an object, or None when it is absent.

        A HEAD cannot tell a missing key from a missing bucket (both 404):
        check() does, at start and in /healthz. The credentials need
        s3:ListBucket, or the bucket answers 403 for a missing key.
        """
        args = {"Bucket": self.bucket, "Key": key}
        if checksum:
            args["ChecksumMode"] = "ENABLED"
        try:
            answer = self._client.head_object(**args)
        except ClientError as exc:
            if _status(exc) == 404:
                return None
            raise self._error(exc, "head") from exc
        except BotoCoreError as exc:
            raise self._error(exc, "head") from exc
        sha256 = answer.get("ChecksumSHA256")
        if sha256 and (answer.get("ChecksumType") == "COMPOSITE" or "-" in sha256):
            sha256 = None
        return ObjectHead(size=int(answer["ContentLength"]), sha256=sha256 or None)

    def copy(self, source: str, target: str, if_match: str = "") -> None:
        """Copy an object inside the bucket (at most one PUT's size), the copy
        checksummed with SHA-256 by the bucket. With `if_match` (an ETag) only
        that version is copied: BucketRejected when the source changed."""
        extra = {"CopySourceIfMatch": if_match} if if_match else {}
        try:
            self._client.copy_object(
                Bucket=self.bucket,
                Key=target,
                CopySource={"Bucket": self.bucket, "Key": source},
                ChecksumAlgorithm="SHA256",
                ContentType=OBJECT_CONTENT_TYPE,
                MetadataDirective="REPLACE",
                **extra,
            )
        except ClientError as exc:
            if if_match and _status(exc) == 412:
                raise BucketRejected("copy: the source changed since it was listed") from exc
            raise self._error(exc, "copy") from exc
        except BotoCoreError as exc:
            raise self._error(exc, "copy") from exc

    def chunks(self, key: str, size: int = READ_CHUNK) -> Iterator[bytes]:
        """An object's bytes, `size` at a time (memory flat in object size).

        Raises FileNotFoundError when the key is absent, BucketError when the
        bucket fails, also part way through.
        """
        try:
            body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except ClientError as exc:
            if _status(exc) == 404:
                raise FileNotFoundError(key) from None
            raise self._error(exc, "read") from exc
        except BotoCoreError as exc:
            raise self._error(exc, "read") from exc
        try:
            yield from body.iter_chunks(size)
        except BotoCoreError as exc:
            raise self._error(exc, "read") from exc
        finally:
            body.close()

    def delete(self, key: str) -> None:
        """Remove an object; removing an absent one succeeds."""
        try:
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "delete") from exc

    def list_keys(self) -> Iterator[Listed]:
        """Every key under the prefix, a page of 1000 at a time, in UTF-8
        binary order of the keys (as S3 lists them)."""
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix, PaginationConfig={"PageSize": 1000}
        )
        try:
            for page in pages:
                for item in page.get("Contents", ()):
                    yield Listed(item["Key"], int(item["Size"]), item.get("ETag", ""))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "list") from exc

    # --- presigned URLs -------------------------------------------------------

    def presign_get(self, key: str, expires: int) -> str:
        """A GET URL valid for `expires` seconds; Range works on it. The answer's
        Content-Type is forced to application/octet-stream, whatever was stored."""
        return self._presign("GET", key, expires, GET_QUERY).url

    def download_url(self, key: str, expires: int) -> SignedURL:
        """A presigned GET as presign_get gives, or one given a moment ago
        that is still valid for about `expires` seconds (see s3_url_cache)."""
        self._check_expiry(expires)
        try:
            credentials = self._frozen_credentials()
        except BotoCoreError as exc:
            raise self._error(exc, "sign") from exc
        return self._downloads.get(
            key,
            expires,
            credentials,
            lambda: self._presign("GET", key, expires, GET_QUERY, credentials=credentials),
        )

    def presign_put(self, key: str, size: int, sha256_hex: str, expires: int) -> PresignedPut:
        """A PUT URL the bucket honours only for exactly `size` bytes whose
        SHA-256 is `sha256_hex`: the signature covers Content-Length,
        Content-Type and x-amz-checksum-sha256, and the bucket checks the body
        against that checksum (400 BadDigest, nothing stored)."""
        if not 0 <= size <= MAX_PUT_SIZE:
            raise ValueError(f"one PUT carries at most {MAX_PUT_SIZE} bytes")
        headers = {
            "Content-Type": OBJECT_CONTENT_TYPE,
            "x-amz-checksum-sha256": sha256_b64(sha256_hex),
        }
        signed = {"Content-Length": str(size), **headers}
        url = self._presign("PUT", key, expires, headers=signed).url
        return PresignedPut(url=url, headers=headers)

    def internal_get_location(self, key: str, expires: int = INTERNAL_EXPIRY) -> str:
        """The X-Accel-Redirect value that makes nginx stream the object from
        the bucket: INTERNAL_PREFIX, the key, and a presigned GET's query."""
        url = urlsplit(self.download_url(key, expires).url)
        base = self.origin.base_path
        if not url.path.startswith(base):
            raise ValueError("presigned URL outside the bucket's base path")
        return f"{INTERNAL_PREFIX}{url.path[len(base) :]}?{url.query}"

    @cached_property
    def origin(self) -> Origin:
        return bucket_origin(self.settings)

    def _presign(
        self,
        method: str,
        key: str,
        expires: int,
        query: str = "",
        headers: dict[str, str] | None = None,
        credentials: ReadOnlyCredentials | None = None,
    ) -> SignedURL:
        self._check_expiry(expires)
        try:
            signer = self._signer or self._first_signer()
            signing = credentials or self._frozen_credentials()
            return signer.sign(signing, method, key, expires, query, headers)
        except BotoCoreError as exc:
            raise self._error(exc, "sign") from exc

    @staticmethod
    def _check_expiry(expires: int) -> None:
        if not 1 <= expires <= MAX_PRESIGN_EXPIRY:
            raise ValueError(f"expiry must be 1 .. {MAX_PRESIGN_EXPIRY} seconds")

    def _first_signer(self) -> QuerySigner:
        """The bucket's signer, from one URL botocore presigns the usual way."""
        sample = self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": SAMPLE_KEY}, ExpiresIn=60
        )
        self._signer = QuerySigner.from_sample(sample)
        return self._signer

    def _frozen_credentials(self) -> ReadOnlyCredentials:
        """The credentials to sign with now (refreshed by botocore when they
        come from a role and are about to expire)."""
        credentials = self._credentials
        if credentials is None:
            with self._credentials_lock:
                credentials = self._credentials = self._botocore.get_credentials()
            if credentials is None:
                raise NoCredentialsError()
        return credentials.get_frozen_credentials()

    # --- checks ---------------------------------------------------------------

    def check(self) -> str:
        """ "ok", or one line saying what is wrong (for /healthz and start-up)."""
        if not self.bucket:
            return "LFS_S3_BUCKET is not set"
        if not self._has_credentials():
            return NO_CREDENTIALS
        try:
            self._probe.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except (ClientError, BotoCoreError) as exc:
            return self._error(exc, "").message
        return "ok"

    def proves_checksum_enforcement(self) -> bool:
        """Whether the bucket refuses a presigned PUT whose body does not match
        its signed SHA-256, and takes one whose body does. Direct transfers
        rely on it; a bucket that does not enforce it must use proxy mode.

        Writes (and removes) one small object under the prefix. Raises
        BucketUnavailable when the bucket cannot be asked.
        """
        key = f"{self.prefix}{PROBE_NAME}{secrets.token_hex(8)}"
        body = secrets.token_bytes(64)
        wrong = bytes(b ^ 0xFF for b in body)
        http = URLLib3Session(
            verify=self._botocore.get_config_variable("ca_bundle") or True,
            proxies=get_environ_proxies(self.settings.endpoint or "https://s3.amazonaws.com"),
            timeout=(5, 10),
        )
        try:
            refused = not self._probe_put(http, key, body, _sha256_hex(wrong))
            accepted = self._probe_put(http, key, body, _sha256_hex(body))
        finally:
            self.delete(key)
            http.close()
        return refused and accepted

    def _probe_put(self, http: URLLib3Session, key: str, body: bytes, sha256_hex: str) -> bool:
        put = self.presign_put(key, len(body), sha256_hex, 60)
        request = AWSRequest(method="PUT", url=put.url, data=body, headers=put.headers)
        try:
            answer = http.send(request.prepare())
        except BotoCoreError as exc:
            raise self._error(exc, "checksum probe") from exc
        if answer.status_code >= 500 or answer.status_code == 429:
            raise BucketUnavailable(f"checksum probe: the bucket answered {answer.status_code}")
        return 200 <= answer.status_code < 300

    def _has_credentials(self) -> bool:
        with self._credentials_lock:
            try:
                return self._botocore.get_credentials() is not None
            except (BotoCoreError, OSError):
                return False

    def _error(self, exc: BaseException, doing: str) -> BucketError:
        """One line for a failure: what went wrong, naming the setting to fix."""
        lead = f"{doing}: " if doing else ""
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "") or ""
            status = _status(exc)
            if code in _REJECTED_CODES:
                return BucketRejected(f"{lead}the bucket refused the bytes ({code})")
            throttled = status in (429, 503) or code in _THROTTLED_CODES
            return BucketUnavailable(lead + self._describe(exc, code, status), throttled=throttled)
        if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
            return BucketUnavailable(lead + NO_CREDENTIALS)
        if isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
            return BucketUnavailable(f"{lead}LFS_S3_ENDPOINT: {self._where} did not answer in time")
        cause = getattr(exc, "kwargs", {}).get("error", "")
        found = _ERRNO_TEXT_RE.search(str(cause)) or _ERRNO_TEXT_RE.search(str(exc))
        reason = f" ({found.group(1).strip()})" if found else ""
        return BucketUnavailable(f"{lead}LFS_S3_ENDPOINT: cannot reach {self._where}{reason}")

    def _describe(self, exc: ClientError, code: str, status: int) -> str:
        bucket = f"bucket {self.bucket!r} at {self._where}"
        if code == "NoSuchBucket" or (status == 404 and code in ("", "404", "NotFound")):
            return f"LFS_S3_BUCKET: {bucket} does not exist"
        if code in _CREDENTIAL_CODES:
            return f"the credentials are not accepted by {self._where} ({code})"
        if code in _REGION_CODES or status == 301:
            headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
            actual = headers.get("x-amz-bucket-region")
            where = f" (it is in {actual})" if actual else ""
            return f"LFS_S3_REGION: {bucket} is not in region {self.settings.region!r}{where}"
        if code == "AccessDenied" or status == 403:
            return f"LFS_S3_BUCKET: access to {bucket} denied for these credentials"
        return f"{bucket} answered {status or '?'} {code}".rstrip()


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_shared: dict[tuple[int, S3Settings], S3Bucket] = {}
_shared_lock = threading.Lock()


def shared_bucket(settings: Settings) -> S3Bucket:
    """The process's one S3Bucket for these settings (a new one after fork:
    connection pools must not cross processes). Its pool holds a connection
    for every part of every upload the worker's threads may run at once."""
    key = (os.getpid(), settings.s3)
    with _shared_lock:
        bucket = _shared.get(key)
        if bucket is None:
            connections = settings.threads * settings.s3.concurrency
            bucket = _shared[key] = S3Bucket(settings.s3, max_connections=connections)
        return bucket
