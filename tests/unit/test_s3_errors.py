"""What a bucket failure becomes: unavailable (retry later, maybe throttled) or
rejected (these bytes will never do), with one line naming what to fix."""

from __future__ import annotations

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
)

from lfs_server.settings import S3Settings
from lfs_server.store.s3_bucket import (
    NO_CREDENTIALS,
    BucketRejected,
    BucketUnavailable,
    S3Bucket,
    sha256_b64,
)

ENDPOINT = "http://127.0.0.1:9"


@pytest.fixture
def bucket(s3_env: dict[str, str]) -> S3Bucket:
    return S3Bucket(S3Settings(bucket="lfs", endpoint=ENDPOINT, addressing="path"))


def client_error(code: str, status: int, **headers: str) -> ClientError:
    response = {
        "Error": {"Code": code, "Message": "..."},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers},
    }
    return ClientError(response, "PutObject")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "message", "throttled"),
    [
        (
            client_error("SlowDown", 503),
            "bucket 'lfs' at http://127.0.0.1:9 answered 503 SlowDown",
            True,
        ),
        (client_error("", 429), "bucket 'lfs' at http://127.0.0.1:9 answered 429", True),
        (
            client_error("InternalError", 500),
            "bucket 'lfs' at http://127.0.0.1:9 answered 500 InternalError",
            False,
        ),
        (
            client_error("NoSuchBucket", 404),
            "LFS_S3_BUCKET: bucket 'lfs' at http://127.0.0.1:9 does not exist",
            False,
        ),
        (
            client_error("AccessDenied", 403),
            "LFS_S3_BUCKET: access to bucket 'lfs' at http://127.0.0.1:9 denied for these credentials",
            False,
        ),
        (
            client_error("InvalidAccessKeyId", 403),
            "the credentials are not accepted by http://127.0.0.1:9 (InvalidAccessKeyId)",
            False,
        ),
        (
            client_error("PermanentRedirect", 301, **{"x-amz-bucket-region": "eu-west-1"}),
            "LFS_S3_REGION: bucket 'lfs' at http://127.0.0.1:9 is not in region 'us-east-1' "
            "(it is in eu-west-1)",
            False,
        ),
        (NoCredentialsError(), NO_CREDENTIALS, False),
        (
            ConnectTimeoutError(endpoint_url=ENDPOINT),
            "LFS_S3_ENDPOINT: http://127.0.0.1:9 did not answer in time",
            False,
        ),
        (
            EndpointConnectionError(
                endpoint_url=ENDPOINT + "/lfs/key?X-Amz-Signature=secret",
                error="NewConnectionError: Failed to establish a new connection: [Errno 111] Connection refused",
            ),
            "LFS_S3_ENDPOINT: cannot reach http://127.0.0.1:9 (Connection refused)",
            False,
        ),
    ],
)
def test_failures_that_may_pass(
    bucket: S3Bucket, error: Exception, message: str, throttled: bool
) -> None:
    found = bucket._error(error, "upload")
    assert isinstance(found, BucketUnavailable)
    assert (found.message, found.throttled) == ("upload: " + message, throttled)
    assert "Signature" not in found.message


@pytest.mark.parametrize("code", ["BadDigest", "XAmzContentSHA256Mismatch", "IncompleteBody"])
def test_bytes_the_bucket_refused(bucket: S3Bucket, code: str) -> None:
    found = bucket._error(client_error(code, 400), "upload")
    assert isinstance(found, BucketRejected)
    assert found.message == f"upload: the bucket refused the bytes ({code})"


def test_checksum_header_form() -> None:
    assert sha256_b64("00" * 31 + "ff") == "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAP8="


def test_presigning_checks_its_limits(bucket: S3Bucket) -> None:
    key = bucket.key_for("ab" * 32)
    with pytest.raises(ValueError):
        bucket.presign_get(key, 0)
    with pytest.raises(ValueError):
        bucket.presign_get(key, 604801)
    with pytest.raises(ValueError):
        bucket.presign_put(key, (5 << 30) + 1, "ab" * 32, 60)
