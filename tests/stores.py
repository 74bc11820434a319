"""The store a test stack runs on: the local disk, or a SeaweedFS bucket in
either S3 transfer mode. A test module lists the ones its behaviour depends
on in a module-level `STORES`; its `stack` is then started once per store
(tests/conftest.py parametrizes `store_env`). Without `STORES`, local only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LOCAL = "local"
S3_PROXY = "s3-proxy"
S3_DIRECT = "s3-direct"
ALL_STORES = (LOCAL, S3_PROXY, S3_DIRECT)


@dataclass(frozen=True)
class BucketView:
    """The stack's bucket, looked at behind the server's back (an admin client)."""

    client: Any
    name: str
    prefix: str = ""

    def keys(self) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.name, Prefix=self.prefix
        )
        return sorted(item["Key"] for page in pages for item in page.get("Contents", ()))

    def keys_named(self, oid: str) -> list[str]:
        """Every key whose last segment is `oid`, or that holds it in a segment."""
        return [key for key in self.keys() if oid in key.split("/")]

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()


@dataclass(frozen=True)
class StoreEnv:
    name: str
    env: dict[str, str] = field(default_factory=dict)
    bucket: BucketView | None = None
    # Variables of the test run's environment the stack must not inherit.
    unset: tuple[str, ...] = ()

    @property
    def direct(self) -> bool:
        return self.name == S3_DIRECT
