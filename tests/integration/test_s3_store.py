"""The S3 store's start-up checks: `check-config` and `serve` say in one line what is wrong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.engines.seaweedfs import SeaweedFS, free_ports
from tests.stack import Stack


def s3_env_for(
    tmp_path: Path, seaweedfs: SeaweedFS, aws: dict[str, str], **env: str
) -> dict[str, str]:
    """A whole environment for the S3 store on a fresh bucket, `env` overriding."""
    return {
        "PATH": "/usr/bin:/bin",
        "LFS_DATA_DIR": str(tmp_path / "data"),
        "LFS_STORE": "s3",
        "LFS_S3_BUCKET": env.get("LFS_S3_BUCKET") or seaweedfs.new_bucket(),
        "LFS_S3_ENDPOINT": seaweedfs.endpoint,
        **aws,
        **env,
    }


def check_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lfs_server.cli", "check-config"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_check_config_accepts_a_reachable_bucket(
    tmp_path: Path, seaweedfs: SeaweedFS, s3_env: dict[str, str]
) -> None:
    done = check_config(s3_env_for(tmp_path, seaweedfs, s3_env))
    assert done.returncode == 0, done.stderr
    assert "configuration is valid" in done.stdout


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def test_check_config_names_what_is_wrong(
    tmp_path: Path, seaweedfs: SeaweedFS, s3_env: dict[str, str]
) -> None:
    env = s3_env_for(tmp_path, seaweedfs, s3_env)
    missing = one_line_error(check_config({**env, "LFS_S3_BUCKET": ""}))
    assert "LFS_S3_BUCKET is not set" in missing
    absent = one_line_error(
        check_config(s3_env_for(tmp_path, seaweedfs, s3_env, LFS_S3_BUCKET="no-such-bucket-here"))
    )
    assert "LFS_S3_BUCKET" in absent and "does not exist" in absent, absent
    port = free_ports(1)[0]
    unreachable = one_line_error(
        check_config(
            s3_env_for(tmp_path, seaweedfs, s3_env, LFS_S3_ENDPOINT=f"http://127.0.0.1:{port}")
        )
    )
    assert "LFS_S3_ENDPOINT: cannot reach" in unreachable, unreachable
    no_keys = {
        k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    }
    nocred = one_line_error(check_config(no_keys))
    assert "no AWS credentials found" in nocred, nocred
    for line in (missing, absent, unreachable, nocred):
        assert line.startswith("lfs-server: LFS_STORE=s3: "), line


def test_serve_refuses_a_bucket_that_does_not_exist(
    tmp_path: Path, seaweedfs: SeaweedFS, s3_env: dict[str, str]
) -> None:
    env = s3_env_for(tmp_path, seaweedfs, s3_env, LFS_S3_BUCKET="no-such-bucket-here")
    stack = Stack(tmp_path, **env)
    with open(stack.log, "ab") as log:
        done = subprocess.run(
            [sys.executable, "-m", "lfs_server.cli", "serve"],
            env=stack.env,
            stdout=log,
            stderr=log,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2
    assert "LFS_S3_BUCKET: bucket 'no-such-bucket-here'" in stack.log.read_text()


def test_check_config_proves_checksum_enforcement_in_direct_mode(
    tmp_path: Path, seaweedfs: SeaweedFS, s3_env: dict[str, str]
) -> None:
    env = s3_env_for(tmp_path, seaweedfs, s3_env, LFS_S3_TRANSFER="direct")
    done = check_config(env)
    assert done.returncode == 0, done.stderr
    # The probe leaves nothing behind in the bucket.
    listed = seaweedfs.client.list_objects_v2(Bucket=env["LFS_S3_BUCKET"])
    assert listed.get("KeyCount", 0) == 0, listed
