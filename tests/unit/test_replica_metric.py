"""LFS_REPLICA_NAME and `lfs_replica_info`: which replica answered a scrape.

Three replicas on the real stack, each scraped directly and through a load
balancer, are in tests/integration/test_replicas.py.
"""

from __future__ import annotations

import socket
from importlib import metadata
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lfs_server.app import create_app
from lfs_server.settings import SettingsError
from tests.unit.conftest import make_settings


def replica_samples(tmp_path: Path, **env: str) -> list[dict[str, str]]:
    """The labels of every lfs_replica_info sample of a scrape, each checked to be 1."""
    app = create_app(make_settings(tmp_path / "data", LFS_METRICS="public", **env))
    response = app.test_client().get("/metrics")
    assert response.status_code == 200, response.text
    found = []
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "lfs_replica_info":
                assert sample.value == 1, sample
                found.append(sample.labels)
    return found


def test_the_name_defaults_to_the_host_name(tmp_path: Path) -> None:
    assert make_settings(tmp_path).replica_name == socket.gethostname()
    assert make_settings(tmp_path, LFS_REPLICA_NAME="  ").replica_name == socket.gethostname()


def test_the_name_is_taken_as_given(tmp_path: Path) -> None:
    assert make_settings(tmp_path, LFS_REPLICA_NAME=" lfs-2.eu ").replica_name == "lfs-2.eu"


@pytest.mark.parametrize("name", ["two\nlines", "tab\there", "x" * 254])
def test_a_name_that_is_no_label_value_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(SettingsError, match=r"^LFS_REPLICA_NAME: "):
        make_settings(tmp_path, LFS_REPLICA_NAME=name)


def test_metrics_name_the_replica_and_version(tmp_path: Path) -> None:
    samples = replica_samples(tmp_path, LFS_REPLICA_NAME='lfs "blue" 1')
    assert samples == [{"replica": 'lfs "blue" 1', "version": metadata.version("lfs-server")}]


def test_only_the_current_name_is_shown(tmp_path: Path) -> None:
    replica_samples(tmp_path / "first", LFS_REPLICA_NAME="old-name")
    samples = replica_samples(tmp_path / "second", LFS_REPLICA_NAME="new-name")
    assert [labels["replica"] for labels in samples] == ["new-name"]
