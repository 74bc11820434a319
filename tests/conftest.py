"""Shared fixtures: a running stack per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.stack import Stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A real nginx + gunicorn server that anyone may write to."""
    server = Stack(tmp_path_factory.mktemp("stack"), LFS_ANONYMOUS="write").start()
    yield server
    server.stop()
