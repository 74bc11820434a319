"""Bodies the fuzzer found crashing the app (500) are refused cleanly (422)."""

from __future__ import annotations

import json

import pytest
from flask.testing import FlaskClient

from tests.lfsapi import assert_lfs_error

LFS = "application/vnd.git-lfs+json"
DEEP = 100_000
BATCH = "/team/proj.git/info/lfs/objects/batch"
LOCKS = "/team/proj.git/info/lfs/locks"


@pytest.mark.parametrize(
    ("url", "body"),
    [
        (BATCH, b"[" * DEEP + b"]" * DEEP),
        (BATCH, b'{"a":' * DEEP + b"1" + b"}" * DEEP),
        (BATCH, b'{"operation":"upload","objects":' + b"[" * DEEP),
        (LOCKS, b"[" * DEEP),
        (f"{LOCKS}/verify", b'{"ref":' * DEEP),
        (f"{LOCKS}/{'0' * 32}/unlock", b"[" * DEEP),
        ("/.lfs/verify", b"[" * DEEP),
    ],
)
def test_deeply_nested_json_is_422(client: FlaskClient, url: str, body: bytes) -> None:
    assert_lfs_error(client.post(url, data=body, content_type=LFS), 422)


def test_json_answers_keep_key_order(client: FlaskClient) -> None:
    response = client.post(BATCH, json={"operation": "download", "objects": []})
    assert list(response.get_json()) == ["transfer", "objects", "hash_algo"]


@pytest.mark.parametrize("path", ["a/\udc80", "\ud800", "dir/\udfff.bin"])
def test_lock_path_with_unpaired_surrogate_is_422(client: FlaskClient, path: str) -> None:
    body = json.dumps({"path": path})  # ensure_ascii: the surrogate travels as \udc80
    response = client.post(LOCKS, data=body.encode(), content_type=LFS)
    assert response.status_code == 422, response.get_data(as_text=True)[:300]
    assert "surrogate" in response.get_json()["message"]


def test_lock_path_with_paired_surrogates_is_fine(client: FlaskClient) -> None:
    response = client.post(LOCKS, data=b'{"path": "art/\\ud83d\\ude00.png"}', content_type=LFS)
    assert response.status_code == 201, response.get_data(as_text=True)[:300]
    assert response.get_json()["lock"]["path"] == "art/\U0001f600.png"
