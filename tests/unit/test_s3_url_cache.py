"""Presigned download URLs are reused while young: the same URL for every
caller until less than the expiry asked for minus a slice (a tenth, at most a
minute) is left, then a new one; the batch answer states the reused URL's
true expiry; the cache is bounded and forgets URLs signed with credentials
that have changed. Nothing here talks to a bucket."""

from __future__ import annotations

import datetime
import json
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import botocore.auth
import pytest
from botocore.credentials import ReadOnlyCredentials

from lfs_server.services import services
from lfs_server.settings import S3Settings
from lfs_server.store.s3 import S3Store
from lfs_server.store.s3_bucket import S3Bucket
from lfs_server.store.s3_signing import SignedURL
from lfs_server.store.s3_url_cache import URLCache, reuse_slice
from lfs_server.times import rfc3339
from tests.unit.conftest import direct_s3_app

LFS = "application/vnd.git-lfs+json"
ALICE = ReadOnlyCredentials("AKIDALICE", "secret-a", None)


class Signer:
    """Signs at the fake clock's time, counting what it signs."""

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.signed: list[str] = []

    def clock(self) -> float:
        return self.now

    def sign(self, key: str, expires: int) -> Callable[[], SignedURL]:
        def go() -> SignedURL:
            self.signed.append(key)
            return SignedURL(f"https://b/{key}?n={len(self.signed)}", int(self.now) + expires)

        return go


def test_a_url_is_reused_until_its_slice_is_spent() -> None:
    fake = Signer()
    cache = URLCache(clock=fake.clock)
    first = cache.get("k", 3600, ALICE, fake.sign("k", 3600))
    assert first.expires_at == 1_000_000 + 3600
    fake.now += 60  # exactly the slice: still reused
    assert cache.get("k", 3600, ALICE, fake.sign("k", 3600)) == first
    fake.now += 1
    renewed = cache.get("k", 3600, ALICE, fake.sign("k", 3600))
    assert renewed != first and renewed.expires_at == int(fake.now) + 3600
    assert fake.signed == ["k", "k"]


def test_the_slice_is_a_tenth_of_a_short_expiry() -> None:
    assert (reuse_slice(3600), reuse_slice(100), reuse_slice(1)) == (60, 10, 0.1)
    fake = Signer()
    cache = URLCache(clock=fake.clock)
    first = cache.get("k", 100, ALICE, fake.sign("k", 100))
    fake.now += 10
    assert cache.get("k", 100, ALICE, fake.sign("k", 100)) == first
    fake.now += 1
    assert cache.get("k", 100, ALICE, fake.sign("k", 100)) != first
    # Another expiry asked for is another URL.
    assert cache.get("k", 900, ALICE, fake.sign("k", 900)).expires_at == int(fake.now) + 900


def test_the_cache_is_bounded_least_recently_used_first() -> None:
    fake = Signer()
    cache = URLCache(capacity=3, clock=fake.clock)
    for key in ("a", "b", "c"):
        cache.get(key, 60, ALICE, fake.sign(key, 60))
    cache.get("a", 60, ALICE, fake.sign("a", 60))  # a is now the most recent
    cache.get("d", 60, ALICE, fake.sign("d", 60))  # b goes
    assert len(cache) == 3
    for key in ("a", "c", "d"):
        cache.get(key, 60, ALICE, fake.sign(key, 60))
    assert fake.signed == ["a", "b", "c", "d"]
    cache.get("b", 60, ALICE, fake.sign("b", 60))
    assert fake.signed[-1] == "b" and len(cache) == 3


def test_new_credentials_sign_anew_and_drop_the_old_urls() -> None:
    fake = Signer()
    cache = URLCache(clock=fake.clock)
    for key in ("a", "b"):
        cache.get(key, 3600, ALICE, fake.sign(key, 3600))
    rotated = ReadOnlyCredentials("AKIDALICE", "secret-a", "a new session token")
    cache.get("a", 3600, rotated, fake.sign("a", 3600))
    assert fake.signed == ["a", "b", "a"] and len(cache) == 1


@pytest.fixture
def bucket(s3_env: dict[str, str]) -> S3Bucket:
    return S3Bucket(S3Settings(bucket="lfs", endpoint="http://127.0.0.1:9", addressing="path"))


def test_the_bucket_reuses_download_urls_but_not_across_credentials(
    bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = bucket.key_for("ab" * 32)
    first = bucket.download_url(key, 3600)
    assert bucket.download_url(key, 3600) == first
    assert bucket.internal_get_location(key).endswith(
        bucket.download_url(key, 900).url.partition("?")[2]
    )
    query = parse_qs(urlsplit(first.url).query)
    assert "AKIDBOB" not in query["X-Amz-Credential"][0]
    bob = ReadOnlyCredentials("AKIDBOB", "secret-b", "token-b")
    monkeypatch.setattr(bucket, "_frozen_credentials", lambda: bob)
    again = urlsplit(bucket.download_url(key, 3600).url)
    assert parse_qs(again.query)["X-Amz-Credential"][0].startswith("AKIDBOB/")
    assert parse_qs(again.query)["X-Amz-Security-Token"] == ["token-b"]


def signed_at(url: str) -> int:
    query = parse_qs(urlsplit(url).query)
    stamp = datetime.datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ")
    return int(stamp.replace(tzinfo=datetime.UTC).timestamp()) + int(query["X-Amz-Expires"][0])


def test_a_direct_batch_states_a_reused_urls_true_expiry(
    tmp_path: Path, s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = direct_s3_app(tmp_path / "data")
    settings = services(app).settings
    store = services(app).store
    assert isinstance(store, S3Store)
    oid = "5e" * 32
    with app.app_context():
        services().objects.record("team/proj", oid, 10)
    # A URL for the object signed 40 s ago: within the slice, so reused.
    past = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - datetime.timedelta(seconds=40)
    with monkeypatch.context() as patch:
        patch.setattr(botocore.auth, "get_current_datetime", lambda: past)
        old = store.bucket.download_url(store.bucket.key_for(oid), settings.token_ttl)

    def fetch() -> dict[str, object]:
        body = {"operation": "download", "objects": [{"oid": oid, "size": 10}]}
        response = app.test_client().post(
            "/team/proj.git/info/lfs/objects/batch",
            data=json.dumps(body),
            headers={"Accept": LFS},
            content_type=LFS,
        )
        assert response.status_code == 200
        return response.get_json()["objects"][0]["actions"]["download"]

    action = fetch()
    now = math.ceil(time.time())
    assert action["href"] == old.url
    assert action["expires_at"] == rfc3339(old.expires_at) == rfc3339(signed_at(old.url))
    assert now - 1 <= old.expires_at - action["expires_in"] <= now
    assert settings.token_ttl - 60 <= action["expires_in"] <= settings.token_ttl - 40
    assert fetch()["href"] == old.url


def test_threads_share_the_cache_within_its_bound() -> None:
    fake = Signer()
    cache = URLCache(capacity=2, clock=fake.clock)
    keys = ["a", "b", "c"]
    start = threading.Barrier(8)
    seen: list[SignedURL] = []

    def worker(n: int) -> None:
        start.wait()
        for i in range(300):
            key = keys[(n + i) % 3]
            got = cache.get(key, 60, ALICE, fake.sign(key, 60))
            assert got.url.startswith(f"https://b/{key}?")
            seen.append(got)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 8 * 300 and len(cache) <= 2
