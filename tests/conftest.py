"""Shared fixtures: a running stack per test module; temp dirs the server's user can reach."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import Stack
from tests.stores import LOCAL, S3_DIRECT, BucketView, StoreEnv

# Started as root (as CI runs), the server's processes drop to LFS_USER, which
# must be able to pass through every folder above a data dir. pytest keeps its
# temp dirs under /tmp/pytest-of-root, 0700 and reset to 0700 by every run, and
# makes each one 0700: so, as root, the tests' temp dirs live in a folder of
# their own, and each is made traversable (0711: entered, not listed).
TRAVERSABLE = 0o711
RUN_ROOT = pytest.StashKey[Path]()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if os.geteuid() != 0:
        return
    if config.option.basetemp is None:
        run_root = Path(tempfile.mkdtemp(prefix="lfs-tests-"))
        run_root.chmod(TRAVERSABLE)
        config.option.basetemp = str(run_root / "basetemp")
        config.stash[RUN_ROOT] = run_root
    original = pytest.TempPathFactory.mktemp

    def mktemp(self: pytest.TempPathFactory, basename: str, numbered: bool = True) -> Path:
        path = original(self, basename, numbered)
        self.getbasetemp().chmod(TRAVERSABLE)
        path.chmod(TRAVERSABLE)
        return path

    pytest.TempPathFactory.mktemp = mktemp  # type: ignore[method-assign]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A passing run's temp dirs go (runs do not pile up); a failing run's stay for a look."""
    run_root = session.config.stash.get(RUN_ROOT, None)
    if run_root is not None and exitstatus == 0:
        shutil.rmtree(run_root, ignore_errors=True)


# The real S3 server (SeaweedFS) and the AWS SDK environment for it; a real
# PostgreSQL server.
pytest_plugins = ("tests.engines.seaweedfs", "tests.engines.postgres")

SQLITE, POSTGRESQL = "sqlite", "postgresql"


@pytest.fixture(params=[SQLITE, POSTGRESQL])
def database_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The settings that put a server on each database: none for SQLite in the
    data dir, LFS_DATABASE_URL of a fresh database on the session's PostgreSQL."""
    if request.param == SQLITE:
        return {}
    return {"LFS_DATABASE_URL": request.getfixturevalue("postgres").new_database()}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module's `STORES` (tests/stores.py) runs its stack on each of them."""
    stores = getattr(metafunc.module, "STORES", None)
    if stores and "store_env" in metafunc.fixturenames:
        metafunc.parametrize("store_env", stores, indirect=True, scope="module")


@pytest.fixture(scope="module")
def store_env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> StoreEnv:
    """The settings that put a stack on one store: none for the local disk,
    a fresh SeaweedFS bucket and the AWS SDK environment for S3."""
    name = getattr(request, "param", LOCAL)
    if name == LOCAL:
        return StoreEnv(name)
    from tests.engines.seaweedfs import HOST_AWS_VARIABLES, aws_env

    seaweedfs = request.getfixturevalue("seaweedfs")
    bucket = seaweedfs.new_bucket()
    env = {
        **aws_env(tmp_path_factory.mktemp("aws")),
        "LFS_STORE": "s3",
        "LFS_S3_BUCKET": bucket,
        "LFS_S3_ENDPOINT": seaweedfs.endpoint,
        "LFS_S3_TRANSFER": "direct" if name == S3_DIRECT else "proxy",
    }
    return StoreEnv(name, env, BucketView(seaweedfs.client, bucket), unset=HOST_AWS_VARIABLES)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, store_env: StoreEnv) -> Iterator[Stack]:
    """A real nginx + gunicorn server that anyone may write to, on `store_env`."""
    server = Stack(
        tmp_path_factory.mktemp("stack"), store_env, LFS_ANONYMOUS="write", **store_env.env
    ).start()
    yield server
    server.stop()
