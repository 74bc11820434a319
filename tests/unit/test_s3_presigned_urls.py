"""The bucket's presigned URLs are exactly those botocore's generate_presigned_url
gives for the same request at the same instant: GETs and the direct-mode PUT
(its signed Content-Length, Content-Type and x-amz-checksum-sha256), on path
and virtual addressing, for keys that need percent-encoding, with a session
token. Nothing here talks to a bucket."""

from __future__ import annotations

import datetime

import boto3
import botocore.auth
import pytest
from botocore.config import Config

from lfs_server.settings import S3Settings
from lfs_server.store.s3_bucket import OBJECT_CONTENT_TYPE, S3Bucket, sha256_b64

NOW = datetime.datetime(2026, 12, 1, 12, 0, 7)
KEYS = [
    "team/lfs/ab/cd/" + "ab" * 32,
    "a b/ü~+=&%?#/x",
    "dots/./and/../slashes//end/",
    "uploads/" + "0f" * 32 + "/" + "9" * 32,
]
PLACES = [
    S3Settings(bucket="lfs-objects", endpoint="http://127.0.0.1:9", addressing="path"),
    S3Settings(bucket="lfs-objects", endpoint="https://s3.example.com:8443", addressing="virtual"),
    S3Settings(bucket="lfs-objects", region="eu-west-1", addressing="virtual"),
    S3Settings(bucket="lfs.objects", region="us-west-2", addressing="path"),
]


@pytest.fixture
def token(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    value = "FwoGZXIvYXdzE+session/token=="
    monkeypatch.setenv("AWS_SESSION_TOKEN", value)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: NOW)
    return value


def botocore_client(settings: S3Settings) -> object:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.endpoint or None,
        config=Config(
            signature_version="s3v4",
            region_name=settings.region,
            s3={"addressing_style": settings.addressing},
        ),
    )


@pytest.mark.parametrize("settings", PLACES, ids=lambda s: f"{s.addressing}-{s.endpoint or 'aws'}")
def test_presigned_urls_are_botocores(settings: S3Settings, token: str) -> None:
    bucket = S3Bucket(settings)
    client = botocore_client(settings)
    for key in KEYS:
        get = client.generate_presigned_url(  # type: ignore[attr-defined]
            "get_object",
            Params={
                "Bucket": settings.bucket,
                "Key": key,
                "ResponseContentType": OBJECT_CONTENT_TYPE,
            },
            ExpiresIn=3600,
        )
        assert bucket.presign_get(key, 3600) == get
        oid = "5e" * 32
        put = client.generate_presigned_url(  # type: ignore[attr-defined]
            "put_object",
            Params={
                "Bucket": settings.bucket,
                "Key": key,
                "ContentLength": 12345,
                "ContentType": OBJECT_CONTENT_TYPE,
                "ChecksumSHA256": sha256_b64(oid),
            },
            ExpiresIn=900,
        )
        assert bucket.presign_put(key, 12345, oid, 900).url == put
    assert "X-Amz-Security-Token=" in get
    assert "content-length%3Bcontent-type%3Bhost%3Bx-amz-checksum-sha256" in put


def test_the_bucket_is_resolved_once_not_per_url(
    token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = S3Bucket(PLACES[0])
    calls = []
    full = bucket._client.generate_presigned_url
    monkeypatch.setattr(
        bucket._client, "generate_presigned_url", lambda *a, **k: calls.append(a) or full(*a, **k)
    )
    for key in KEYS:
        bucket.presign_get(key, 60)
        bucket.presign_put(key, 1, "00" * 32, 60)
    assert len(calls) == 1
