"""A test that cannot run for want of a tool skips on a developer's machine and
fails in CI; and no test skips any other way."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.prerequisites import skip_or_fail

TESTS = Path(__file__).resolve().parents[1]
# pytest's own ways to skip, which would skip in CI too.
OTHER_SKIPS = re.compile(r"pytest\.skip\(|\bskipif\b|importorskip|mark\.skip\b")


@pytest.mark.parametrize("value", ["1", "true", "yes"])
def test_in_ci_a_missing_tool_fails_and_names_it(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match=r"cannot run: no Docker engine$"):
        skip_or_fail("no Docker engine")


@pytest.mark.parametrize("value", [None, "", "0", "false", "False"])
def test_outside_ci_a_missing_tool_skips(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.skip.Exception, match=r"^no Docker engine$"):
        skip_or_fail("no Docker engine")


def test_every_skip_goes_through_skip_or_fail() -> None:
    offenders = [
        f"{path.relative_to(TESTS)}:{number}: {line.strip()}"
        for path in sorted(TESTS.rglob("*.py"))
        if path not in (Path(__file__).resolve(), TESTS / "prerequisites.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if OTHER_SKIPS.search(line)
    ]
    assert not offenders, "skip with tests.prerequisites.skip_or_fail instead:\n" + "\n".join(
        offenders
    )
