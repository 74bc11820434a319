"""An unprivileged launcher and a port below net.ipv4.ip_unprivileged_port_start."""

from __future__ import annotations

import pytest

from lfs_server.serve import low_port_refusal


@pytest.mark.parametrize(("port", "first_allowed"), [(8080, 1024), (1024, 1024), (443, 0)])
def test_a_port_the_kernel_allows_is_not_refused(port: int, first_allowed: int) -> None:
    assert low_port_refusal(port, first_allowed) is None


def test_a_lower_port_is_refused_with_the_ways_out() -> None:
    message = low_port_refusal(443, 1024)
    assert message is not None and "\n" not in message
    assert message.startswith("LFS_LISTEN: port 443 is below 1024, ")
    assert "a port >= 1024 behind a load balancer" in message
    assert "sysctl net.ipv4.ip_unprivileged_port_start=443" in message
