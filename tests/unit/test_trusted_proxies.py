"""LFS_TRUSTED_PROXIES: validated networks, rendered as nginx's realip directives."""

from __future__ import annotations

from pathlib import Path

import pytest

from lfs_server import nginx_conf
from lfs_server.settings import SettingsError
from tests.unit.conftest import make_settings


def rendered(tmp_path: Path, **env: str) -> str:
    settings = make_settings(tmp_path / "data", **env)
    return nginx_conf.render(settings, tmp_path / "run", tmp_path / "run" / "app.sock", "off")


def test_default_trusts_nobody(tmp_path: Path) -> None:
    assert make_settings(tmp_path).trusted_proxies == ()
    conf = rendered(tmp_path)
    assert "set_real_ip_from" not in conf
    assert "real_ip_header" not in conf
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in conf


def test_networks_are_normalised(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, LFS_TRUSTED_PROXIES=" 127.0.0.1/32, 10.1.2.3/8,, fd00::1/8 ,192.0.2.9"
    )
    assert settings.trusted_proxies == ("127.0.0.1/32", "10.0.0.0/8", "fd00::/8", "192.0.2.9/32")


def test_realip_directives_in_the_http_block(tmp_path: Path) -> None:
    conf = rendered(tmp_path, LFS_TRUSTED_PROXIES="10.0.0.0/8,2001:db8::/32")
    http = conf[conf.index("http {") : conf.index("    server {")]
    lines = [line.strip() for line in http.splitlines()]
    for directive in (
        "set_real_ip_from 10.0.0.0/8;",
        "set_real_ip_from 2001:db8::/32;",
        "real_ip_header X-Forwarded-For;",
        "real_ip_recursive on;",
    ):
        assert directive in lines, directive
    # The app still gets only nginx's $remote_addr, never the client's header.
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in conf


@pytest.mark.parametrize(
    "value", ["localhost", "10.0.0.0/33", "10.0.0.1; include /etc/passwd", "10.0.0.0/8 x", "::g"]
)
def test_bad_values_stop_with_one_line_naming_the_setting(tmp_path: Path, value: str) -> None:
    with pytest.raises(SettingsError) as error:
        make_settings(tmp_path, LFS_TRUSTED_PROXIES=f"127.0.0.1,{value}")
    message = str(error.value)
    assert message.startswith("LFS_TRUSTED_PROXIES: ")
    assert "\n" not in message
