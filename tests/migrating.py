"""Running `lfs-server migrate-store --to s3` in a test and reading what it prints."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from tests.stack import CLI, run_cli

TO_S3 = ("migrate-store", "--to", "s3")
MIGRATE_STORE = [*CLI, *TO_S3]
PROGRESS_RE = re.compile(r"^migrate-store: (\d+)/(\d+) objects, ")
SUMMARY_RE = re.compile(
    r"^migrate-store: copied (\d+), skipped (\d+), failed (\d+) of (\d+) objects; "
    r"(\d+) bytes \([^)]*\) copied in [\d.]+ s$",
    re.MULTILINE,
)


def key_for(oid: str) -> str:
    """The object's key in the bucket (and its path below the local store)."""
    return f"{oid[:2]}/{oid[2:4]}/{oid}"


@dataclass(frozen=True)
class Summary:
    copied: int
    skipped: int
    failed: int
    objects: int
    copied_bytes: int


def summary(out: str) -> Summary:
    """The one summary line of a run's output."""
    found = SUMMARY_RE.findall(out)
    assert len(found) == 1, out
    return Summary(*(int(count) for count in found[0]))


def migrate_store(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(env, *TO_S3, *args, timeout=300)


def run_until_some_copied(
    env: dict[str, str], then: Callable[[subprocess.Popen[str]], object], timeout: float
) -> tuple[int, str, str]:
    """migrate-store one object at a time; `then(run)` once its progress shows
    some done (never, if it ends first). Its exit code, stdout and stderr."""
    run = subprocess.Popen(
        [*MIGRATE_STORE, "--jobs", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert run.stderr is not None
    err = ""
    while line := run.stderr.readline():
        err += line
        progress = PROGRESS_RE.match(line)
        if progress and int(progress.group(1)) > 0:
            then(run)
            break
    out, rest = run.communicate(timeout=timeout)
    return run.returncode, out, err + rest
