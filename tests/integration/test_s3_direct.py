"""Direct S3 transfers: clients PUT to presigned bucket URLs; nothing is
visible until verify has checked the bytes the bucket holds."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from lfs_server.settings import Settings
from lfs_server.store.s3_bucket import S3Bucket
from tests.integration.helpers import (
    actions_for,
    assert_object_error,
    batch_for,
    download_action,
    forge,
    only_object,
    put_action,
    sha256,
    upload,
)
from tests.stack import LFS_MEDIA_TYPE, Stack
from tests.stores import S3_DIRECT
from tests.waiting import wait_until

STORES = (S3_DIRECT,)
REPO_A = "direct/a"
REPO_B = "direct/b"


def verify(action: dict[str, Any], data: bytes) -> requests.Response:
    return requests.post(
        action["href"],
        json={"oid": sha256(data), "size": len(data)},
        headers={**action["header"], "Content-Type": LFS_MEDIA_TYPE},
        timeout=30,
    )


def assert_invisible(stack: Stack, data: bytes, repo: str = REPO_A) -> None:
    """No repository can download it, and the oid's key holds nothing."""
    obj = only_object(batch_for(stack, repo, "download", data), stack)
    assert_object_error(obj, 404)
    assert stack.bucket is not None
    oid = sha256(data)
    assert f"{oid[:2]}/{oid[2:4]}/{oid}" not in list(stack.bucket.keys())


def test_upload_goes_to_the_bucket_and_download_is_a_presigned_get(stack: Stack) -> None:
    data = os.urandom(100_000)
    actions = actions_for(stack, REPO_A, "upload", data)
    put = actions["upload"]
    assert not put["href"].startswith(stack.url), put["href"]
    assert "Authorization" not in put["header"]
    assert put["header"]["x-amz-checksum-sha256"]
    # The body goes to a key of this upload's own, never the oid's key.
    assert f"/uploads/{sha256(data)}/" in urlsplit(put["href"]).path
    # Expiry follows LFS_TOKEN_TTL (the default, 3600 s).
    assert parse_qs(urlsplit(put["href"]).query)["X-Amz-Expires"] == ["3600"]
    assert put_action(put, data).status_code == 200
    assert verify(actions["verify"], data).status_code == 200
    get = download_action(stack, REPO_A, data)
    assert get["header"] == {}, get
    assert not get["href"].startswith(stack.url)
    response = requests.get(get["href"], timeout=30)
    assert response.status_code == 200 and response.content == data
    # The upload key is gone once committed; the object is under its oid.
    assert stack.bucket is not None
    assert [key for key in list(stack.bucket.keys()) if sha256(data) in key] == [
        f"{sha256(data)[:2]}/{sha256(data)[2:4]}/{sha256(data)}"
    ]


def test_wrong_bytes_to_a_presigned_url_leave_nothing_visible(stack: Stack) -> None:
    data = os.urandom(50_000)
    wrong = os.urandom(50_000)
    actions = actions_for(stack, REPO_A, "upload", data)
    refused = put_action(actions["upload"], wrong)
    assert refused.status_code in (400, 403), refused.text
    failed = verify(actions["verify"], data)
    assert failed.status_code == 404, failed.text
    assert_invisible(stack, data)
    again = only_object(batch_for(stack, REPO_A, "upload", data), stack)
    assert "upload" in again["actions"], again


def test_an_expired_presigned_url_is_refused(stack: Stack, s3_env: dict[str, str]) -> None:
    data = os.urandom(1000)
    put = actions_for(stack, REPO_A, "upload", data)["upload"]
    url = urlsplit(put["href"])
    query = parse_qs(url.query)
    assert query["X-Amz-Expires"] == ["3600"]
    # The same URL signed to expire in 1 s, by the store's own bucket client.
    bucket = S3Bucket(Settings.from_env(stack.env).s3)
    short = bucket.presign_put(url.path.split("/", 2)[2], len(data), sha256(data), 1)

    def refused() -> bool:
        return (
            requests.put(short.url, data=data, headers=short.headers, timeout=10).status_code == 403
        )

    assert wait_until(refused, timeout=10, step=0.5)
    assert_invisible(stack, data)


def test_nothing_is_downloadable_between_put_and_verify(stack: Stack) -> None:
    data = os.urandom(30_000)
    actions = actions_for(stack, REPO_A, "upload", data)
    assert put_action(actions["upload"], data).status_code == 200
    assert_invisible(stack, data)
    # Not through the server's own download href either (a forged download
    # token for the oid finds no index row).
    token = forge(stack, actions["verify"]["header"]["Authorization"].split()[1], op="download")
    response = requests.get(
        f"{stack.url}/.lfs/download/{sha256(data)}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 404
    assert verify(actions["verify"], data).status_code == 200
    assert "download" in only_object(batch_for(stack, REPO_A, "download", data), stack)["actions"]


def test_verify_in_repo_b_without_uploading_claims_nothing(stack: Stack) -> None:
    data = os.urandom(40_000)
    upload(stack, REPO_A, data)
    actions = actions_for(stack, REPO_B, "upload", data)
    response = verify(actions["verify"], data)
    assert response.status_code == 404, response.text
    assert_object_error(only_object(batch_for(stack, REPO_B, "download", data), stack), 404)
    # A's upload key, named in A's presigned URL, is not what B's verify reads.
    assert "upload" in only_object(batch_for(stack, REPO_B, "upload", data), stack)["actions"]
