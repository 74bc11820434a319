"""The launcher's start-up steps run in a forked child: results and errors come back, imports do not."""

from __future__ import annotations

import importlib
import os
import sys

import pytest

from lfs_server.isolated import ChildFailed, in_child
from lfs_server.serve import LaunchError

UNUSED_MODULE = "mailbox"  # a stdlib module nothing here imports


def test_the_result_comes_back() -> None:
    assert in_child(lambda: ("http snippet", "server snippet")) == (
        "http snippet",
        "server snippet",
    )
    assert in_child(os.getpid) != os.getpid()


def test_the_error_comes_back_as_it_was_raised() -> None:
    def refuse() -> None:
        raise LaunchError("LFS_STORE=s3: the bucket does not exist")

    with pytest.raises(LaunchError, match="the bucket does not exist"):
        in_child(refuse)


def test_what_the_child_imports_stays_in_the_child() -> None:
    assert UNUSED_MODULE not in sys.modules
    assert in_child(lambda: importlib.import_module(UNUSED_MODULE).__name__) == UNUSED_MODULE
    assert UNUSED_MODULE not in sys.modules


def test_a_child_that_dies_without_an_answer_is_a_failure() -> None:
    with pytest.raises(ChildFailed, match="exited with 3"):
        in_child(lambda: os._exit(3))


def test_an_error_that_cannot_travel_comes_back_as_its_text() -> None:
    class Local(Exception):  # a class pickle cannot find by name
        pass

    def refuse() -> None:
        raise Local("no such bucket")

    with pytest.raises(ChildFailed, match="Local: no such bucket"):
        in_child(refuse)
