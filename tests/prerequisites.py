"""A test that cannot run here for want of a tool or a right.

On a developer's machine it is skipped, saying what is missing. In CI (the
`CI` environment variable set, to anything but "", "0" or "false") it fails
instead: a missing Docker engine or mount right there would otherwise turn
a whole part of the suite into a quiet skip.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def skip_or_fail(missing: str) -> NoReturn:
    """Skip the test because `missing` is missing, or fail it in CI."""
    if in_ci():
        pytest.fail(f"CI is set and this test cannot run: {missing}", pytrace=False)
    pytest.skip(missing)
