"""Direct mode starts only on a bucket that proves it enforces the signed SHA-256."""

from __future__ import annotations

from pathlib import Path

import pytest

from lfs_server.settings import Settings
from lfs_server.store import s3
from lfs_server.store.s3_bucket import BucketUnavailable


class FakeBucket:
    def __init__(self, enforces: bool | None) -> None:
        self.enforces = enforces

    def check(self) -> str:
        return "ok"

    def proves_checksum_enforcement(self) -> bool:
        if self.enforces is None:
            raise BucketUnavailable("checksum probe: the bucket answered 503")
        return self.enforces


def settings(tmp_path: Path, transfer: str) -> Settings:
    return Settings.from_env(
        {
            "LFS_DATA_DIR": str(tmp_path),
            "LFS_STORE": "s3",
            "LFS_S3_BUCKET": "lfs-objects",
            "LFS_S3_TRANSFER": transfer,
        }
    )


@pytest.mark.parametrize(
    ("transfer", "enforces", "problem"),
    [
        ("direct", True, ""),
        ("direct", False, s3.USE_PROXY),
        ("direct", None, "checksum probe: the bucket answered 503"),
        ("proxy", False, ""),
    ],
)
def test_direct_mode_needs_checksum_enforcement(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    transfer: str,
    enforces: bool | None,
    problem: str,
) -> None:
    monkeypatch.setattr(s3, "shared_bucket", lambda _settings: FakeBucket(enforces))
    assert s3.s3_problem(settings(tmp_path, transfer)) == problem
    assert "use LFS_S3_TRANSFER=proxy" in s3.USE_PROXY
