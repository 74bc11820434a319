"""Every S3Bucket operation against a real S3 server (SeaweedFS)."""

from __future__ import annotations

import datetime
import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

import botocore.auth
import pytest
import requests
from botocore.exceptions import EndpointConnectionError

from lfs_server.settings import S3Settings
from lfs_server.store.s3_bucket import (
    NO_CREDENTIALS,
    BucketRejected,
    BucketUnavailable,
    S3Bucket,
    sha256_b64,
)
from tests.engines.seaweedfs import SeaweedFS
from tests.stack import free_port

PART = 5 << 20


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def bucket_name(seaweedfs: SeaweedFS) -> str:
    return seaweedfs.new_bucket()


def settings_for(seaweedfs: SeaweedFS, bucket: str, **changes: Any) -> S3Settings:
    values: dict[str, Any] = {
        "bucket": bucket,
        "prefix": f"t-{uuid.uuid4().hex[:8]}/",
        "endpoint": seaweedfs.endpoint,
        "addressing": "path",
        "part_size": PART,
        "concurrency": 4,
    }
    return S3Settings(**{**values, **changes})


@pytest.fixture
def bucket(seaweedfs: SeaweedFS, bucket_name: str, s3_env: dict[str, str]) -> S3Bucket:
    """A bucket under a prefix of its own, so each test sees only its keys."""
    return S3Bucket(settings_for(seaweedfs, bucket_name))


def stored(seaweedfs: SeaweedFS, bucket: S3Bucket, key: str) -> bytes | None:
    """The object's bytes as the server holds them, asked behind the code's back."""
    try:
        answer = seaweedfs.client.get_object(Bucket=bucket.bucket, Key=key)
    except seaweedfs.client.exceptions.NoSuchKey:
        return None
    return answer["Body"].read()


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / uuid.uuid4().hex
    path.write_bytes(data)
    return path


def test_keys_are_content_addressed_under_the_prefix(bucket: S3Bucket) -> None:
    oid = sha256(b"x")
    key = bucket.key_for(oid)
    assert key == f"{bucket.prefix}{oid[:2]}/{oid[2:4]}/{oid}"
    assert bucket.oid_for(key) == oid
    assert bucket.oid_for(f"{bucket.prefix}{oid}") is None
    assert bucket.oid_for(f"{bucket.prefix}.checksum-probe-00") is None
    with pytest.raises(ValueError):
        bucket.key_for("../" + oid[3:])


def test_small_object_goes_in_one_put_the_bucket_verifies(
    bucket: S3Bucket, seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    data = os.urandom(1000)
    oid = sha256(data)
    key = bucket.key_for(oid)
    assert bucket.head(key) is None
    bucket.put_file(key, write(tmp_path, data), len(data), oid)
    head = bucket.head(key)
    assert head is not None
    assert (head.size, head.sha256) == (len(data), sha256_b64(oid))
    assert stored(seaweedfs, bucket, key) == data
    assert bucket.head(key, checksum=False).size == len(data)  # type: ignore[union-attr]


def test_put_from_an_open_descriptor(
    bucket: S3Bucket, seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    data = os.urandom(PART + 12345)
    oid = sha256(data)
    key = bucket.key_for(oid)
    path = write(tmp_path, data)
    with open(path, "rb") as source:
        path.unlink()  # the descriptor is all there is, as for an upload temp file
        bucket.put_file(key, source.fileno(), len(data), oid)
    assert stored(seaweedfs, bucket, key) == data


def test_large_object_goes_in_parallel_parts(
    bucket: S3Bucket, seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    data = os.urandom(20 << 20)
    oid = sha256(data)
    key = bucket.key_for(oid)
    bucket.put_file(key, write(tmp_path, data), len(data), oid)
    answer = seaweedfs.client.head_object(Bucket=bucket.bucket, Key=key, ChecksumMode="ENABLED")
    assert answer["ETag"].strip('"').endswith("-4"), "20 MiB in 5 MiB parts is four parts"
    assert answer.get("ChecksumType") == "COMPOSITE", "each part's SHA-256 was checked"
    head = bucket.head(key)
    assert head is not None
    # A checksum of part checksums says nothing about the oid: none is reported.
    assert (head.size, head.sha256) == (len(data), None)
    assert stored(seaweedfs, bucket, key) == data


def test_a_body_that_does_not_match_its_sha256_is_refused_and_not_stored(
    bucket: S3Bucket, tmp_path: Path
) -> None:
    data = os.urandom(1000)
    key = bucket.key_for(sha256(data))
    with pytest.raises(BucketRejected) as caught:
        bucket.put_file(key, write(tmp_path, data), len(data), sha256(b"other bytes"))
    assert "BadDigest" in caught.value.message
    assert bucket.head(key) is None


def test_a_file_of_another_size_is_not_uploaded(bucket: S3Bucket, tmp_path: Path) -> None:
    data = os.urandom(100)
    key = bucket.key_for(sha256(data))
    with pytest.raises(ValueError, match="100 bytes, expected 101"):
        bucket.put_file(key, write(tmp_path, data), 101, sha256(data))
    assert bucket.head(key) is None


def test_a_failed_part_aborts_the_upload_and_leaves_nothing(
    bucket: S3Bucket, seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    data = os.urandom(4 * PART)
    oid = sha256(data)
    key = bucket.key_for(oid)
    parts: list[int] = []

    def drop_the_third_part(params: dict[str, Any], **_: Any) -> None:
        parts.append(params["PartNumber"])
        if params["PartNumber"] == 3:
            raise EndpointConnectionError(endpoint_url=seaweedfs.endpoint)

    events = bucket._client.meta.events
    events.register("provide-client-params.s3.UploadPart", drop_the_third_part)
    try:
        with pytest.raises(BucketUnavailable) as caught:
            bucket.put_file(key, write(tmp_path, data), len(data), oid)
    finally:
        events.unregister("provide-client-params.s3.UploadPart", drop_the_third_part)
    assert 3 in parts
    assert "LFS_S3_ENDPOINT: cannot reach" in caught.value.message
    assert bucket.head(key) is None
    uploads = seaweedfs.client.list_multipart_uploads(Bucket=bucket.bucket, Prefix=key)
    assert not uploads.get("Uploads"), "the multipart upload was aborted"


def test_presigned_put_takes_exactly_the_signed_body(
    bucket: S3Bucket, seaweedfs: SeaweedFS
) -> None:
    data = os.urandom(2000)
    oid = sha256(data)
    key = bucket.key_for(oid)
    put = bucket.presign_put(key, len(data), oid, 300)
    assert put.headers == {
        "Content-Type": "application/octet-stream",
        "x-amz-checksum-sha256": sha256_b64(oid),
    }

    wrong = requests.put(put.url, data=os.urandom(len(data)), headers=put.headers, timeout=10)
    assert (wrong.status_code, "BadDigest" in wrong.text) == (400, True)
    longer = requests.put(put.url, data=data + b"!", headers=put.headers, timeout=10)
    assert longer.status_code == 403, "the signature covers Content-Length"
    bare = requests.put(put.url, data=data, timeout=10)
    assert bare.status_code == 403, "the signature covers the checksum header"
    assert bucket.head(key) is None

    right = requests.put(put.url, data=data, headers=put.headers, timeout=10)
    assert right.status_code == 200, right.text
    head = bucket.head(key)
    assert head is not None
    assert (head.size, head.sha256) == (len(data), sha256_b64(oid))
    assert stored(seaweedfs, bucket, key) == data


def test_presigned_get_serves_ranges_as_octet_stream(bucket: S3Bucket, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    oid = sha256(data)
    key = bucket.key_for(oid)
    bucket.put_file(key, write(tmp_path, data), len(data), oid)
    url = bucket.presign_get(key, 300)
    whole = requests.get(url, timeout=10)
    assert (whole.status_code, whole.content) == (200, data)
    assert whole.headers["Content-Type"] == "application/octet-stream"
    part = requests.get(url, headers={"Range": "bytes=1000-1999"}, timeout=10)
    assert (part.status_code, part.content) == (206, data[1000:2000])
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"


def test_expired_presigned_urls_are_refused(
    bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = os.urandom(500)
    oid = sha256(data)
    key = bucket.key_for(oid)
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    with monkeypatch.context() as patch:
        # Signed ten minutes ago for one minute: expired now.
        patch.setattr(
            botocore.auth, "get_current_datetime", lambda: now - datetime.timedelta(minutes=10)
        )
        put = bucket.presign_put(key, len(data), oid, 60)
        get = bucket.presign_get(key, 60)
    refused = requests.put(put.url, data=data, headers=put.headers, timeout=10)
    assert refused.status_code == 403
    assert bucket.head(key) is None
    bucket.put_file(key, write(tmp_path, data), len(data), oid)
    assert requests.get(get, timeout=10).status_code == 403
    assert requests.get(bucket.presign_get(key, 60), timeout=10).content == data


def test_list_and_delete(bucket: S3Bucket, tmp_path: Path) -> None:
    blobs = [os.urandom(n) for n in (1, 10, 100)]
    for blob in blobs:
        bucket.put_file(
            bucket.key_for(sha256(blob)), write(tmp_path, blob), len(blob), sha256(blob)
        )
    listed = {item.key: item.size for item in bucket.list_keys()}
    assert listed == {bucket.key_for(sha256(blob)): len(blob) for blob in blobs}
    gone = bucket.key_for(sha256(blobs[0]))
    bucket.delete(gone)
    bucket.delete(gone)  # deleting what is absent succeeds
    assert bucket.head(gone) is None
    assert gone not in {item.key for item in bucket.list_keys()}


def test_check_says_ok_and_the_store_enforces_checksums(bucket: S3Bucket) -> None:
    assert bucket.check() == "ok"
    assert bucket.proves_checksum_enforcement() is True
    assert list(bucket.list_keys()) == [], "the probe removed its object"


def unreachable(seaweedfs: SeaweedFS, bucket_name: str) -> S3Bucket:
    return S3Bucket(
        settings_for(seaweedfs, bucket_name, endpoint=f"http://127.0.0.1:{free_port()}")
    )


def test_an_unreachable_bucket_is_an_error_not_an_absence(
    seaweedfs: SeaweedFS, bucket_name: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    bucket = unreachable(seaweedfs, bucket_name)
    key = bucket.key_for(sha256(b"x"))
    with pytest.raises(BucketUnavailable) as caught:
        bucket.head(key)
    message = caught.value.message
    assert message.startswith("head: LFS_S3_ENDPOINT: cannot reach http://127.0.0.1:")
    assert "\n" not in message
    with pytest.raises(BucketUnavailable):
        bucket.put_file(key, write(tmp_path, b"x"), 1, sha256(b"x"))
    with pytest.raises(BucketUnavailable):
        list(bucket.list_keys())
    check = bucket.check()
    assert check.startswith("LFS_S3_ENDPOINT: cannot reach http://127.0.0.1:"), check
    assert "\n" not in check


def test_check_names_what_is_wrong(
    seaweedfs: SeaweedFS, bucket_name: str, s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert S3Bucket(settings_for(seaweedfs, "")).check() == "LFS_S3_BUCKET is not set"
    missing = S3Bucket(settings_for(seaweedfs, "no-such-bucket-here")).check()
    assert missing == (
        f"LFS_S3_BUCKET: bucket 'no-such-bucket-here' at {seaweedfs.endpoint} does not exist"
    )
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    refused = S3Bucket(settings_for(seaweedfs, bucket_name)).check()
    assert (
        refused
        == f"the credentials are not accepted by {seaweedfs.endpoint} (SignatureDoesNotMatch)"
    )
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    nobody = S3Bucket(settings_for(seaweedfs, bucket_name))
    assert nobody.check() == NO_CREDENTIALS
    with pytest.raises(BucketUnavailable) as caught:
        nobody.head(nobody.key_for(sha256(b"x")))
    assert caught.value.message == "head: " + NO_CREDENTIALS


def test_the_server_stopped_and_started_again(
    bucket: S3Bucket, seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    data = os.urandom(3000)
    oid = sha256(data)
    key = bucket.key_for(oid)
    bucket.put_file(key, write(tmp_path, data), len(data), oid)
    seaweedfs.stop()
    try:
        with pytest.raises(BucketUnavailable):
            bucket.head(key)
        assert bucket.check().startswith("LFS_S3_ENDPOINT: cannot reach")
    finally:
        seaweedfs.start()
    assert bucket.check() == "ok"
    assert bucket.head(key).size == len(data)  # type: ignore[union-attr]
    assert requests.get(bucket.presign_get(key, 60), timeout=10).content == data
