"""The LFS_S3_* settings: defaults, normalisation, and one line naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from lfs_server.settings import S3Settings, Settings, SettingsError


def load(tmp_path: Path, **env: str) -> S3Settings:
    return Settings.from_env({"LFS_DATA_DIR": str(tmp_path / "data"), **env}).s3


def test_defaults_suit_aws(tmp_path: Path) -> None:
    assert load(tmp_path) == S3Settings(
        bucket="",
        prefix="",
        endpoint="",
        region="us-east-1",
        addressing="virtual",
        transfer="proxy",
        part_size=16 << 20,
        concurrency=4,
    )


def test_an_endpoint_defaults_to_path_addressing(tmp_path: Path) -> None:
    s3 = load(tmp_path, LFS_S3_ENDPOINT="http://127.0.0.1:8333/")
    assert (s3.endpoint, s3.addressing) == ("http://127.0.0.1:8333", "path")
    s3 = load(tmp_path, LFS_S3_ENDPOINT="https://minio.internal", LFS_S3_ADDRESSING="Virtual")
    assert s3.addressing == "virtual"
    assert load(tmp_path, LFS_S3_ADDRESSING="path").addressing == "path"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("lfs", "lfs/"), ("lfs/", "lfs/"), ("team/lfs-objects", "team/lfs-objects/"), ("  ", "")],
)
def test_prefix_ends_with_one_slash(tmp_path: Path, raw: str, expected: str) -> None:
    assert load(tmp_path, LFS_S3_PREFIX=raw).prefix == expected


def test_values_are_read(tmp_path: Path) -> None:
    s3 = load(
        tmp_path,
        LFS_S3_BUCKET="lfs-objects",
        LFS_S3_ENDPOINT="https://[fd00::1]:9000",
        LFS_S3_REGION="eu-west-1",
        LFS_S3_TRANSFER="direct",
        LFS_S3_PART_SIZE="64MiB",
        LFS_S3_CONCURRENCY="8",
    )
    assert (s3.bucket, s3.endpoint, s3.region) == (
        "lfs-objects",
        "https://[fd00::1]:9000",
        "eu-west-1",
    )
    assert (s3.transfer, s3.part_size, s3.concurrency) == ("direct", 64 << 20, 8)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LFS_S3_BUCKET", "ab"),
        ("LFS_S3_BUCKET", "Upper"),
        ("LFS_S3_BUCKET", "has space"),
        ("LFS_S3_BUCKET", "-leading"),
        ("LFS_S3_PREFIX", "/absolute"),
        ("LFS_S3_PREFIX", "a//b"),
        ("LFS_S3_PREFIX", "a/../b"),
        ("LFS_S3_PREFIX", ".hidden"),
        ("LFS_S3_PREFIX", "sp ace"),
        ("LFS_S3_PREFIX", "per%cent"),
        ("LFS_S3_ENDPOINT", "127.0.0.1:8333"),
        ("LFS_S3_ENDPOINT", "ftp://host"),
        ("LFS_S3_ENDPOINT", "http://host/path"),
        ("LFS_S3_ENDPOINT", "http://host?x=1"),
        ("LFS_S3_ENDPOINT", "http://host:99999"),
        ("LFS_S3_REGION", "eu west"),
        ("LFS_S3_ADDRESSING", "dns"),
        ("LFS_S3_TRANSFER", "presigned"),
        ("LFS_S3_PART_SIZE", "4M"),
        ("LFS_S3_PART_SIZE", "6G"),
        ("LFS_S3_PART_SIZE", "lots"),
        ("LFS_S3_CONCURRENCY", "0"),
        ("LFS_S3_CONCURRENCY", "65"),
    ],
)
def test_bad_values_name_the_variable(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load(tmp_path, **{name: value})
    message = str(caught.value)
    assert message.startswith(name)
    assert "\n" not in message
