from __future__ import annotations

import stat
from pathlib import Path

import pytest

from lfs_server.settings import Settings, SettingsError, parse_size


def load(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"LFS_DATA_DIR": str(tmp_path / "data"), **env})


def test_defaults(tmp_path: Path) -> None:
    settings = load(tmp_path)
    assert (settings.listen_host, settings.listen_port) == ("127.0.0.1", 8080)
    assert settings.public_url == "http://127.0.0.1:8080"
    assert settings.token_ttl == 3600
    assert settings.max_object_size == 50 << 30
    assert settings.anonymous == "none"
    assert settings.stop_grace == 60


def test_generated_secret_is_kept_private_and_stable(tmp_path: Path) -> None:
    first = load(tmp_path).secret_key
    key_file = tmp_path / "data" / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert load(tmp_path).secret_key == first


def test_public_url_follows_listen_and_tls(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    settings = load(
        tmp_path, LFS_LISTEN="0.0.0.0:9000", LFS_TLS_CERT=str(cert), LFS_TLS_KEY=str(cert)
    )
    assert settings.public_url == "https://localhost:9000"
    assert load(tmp_path, LFS_LISTEN="[::]:8080").public_url == "http://localhost:8080"
    assert load(tmp_path, LFS_PUBLIC_URL="https://lfs.example.com/").public_url == (
        "https://lfs.example.com"
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("123", 123), ("10G", 10 << 30), ("512MiB", 512 << 20), ("1k", 1024), ("2T", 2 << 40)],
)
def test_sizes(raw: str, expected: int) -> None:
    assert parse_size("X", raw) == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LFS_SECRET_KEY", "short"),
        ("LFS_TOKEN_TTL", "ten"),
        ("LFS_TOKEN_TTL", "5"),
        ("LFS_MAX_OBJECT_SIZE", "-1"),
        ("LFS_MAX_OBJECT_SIZE", "10X"),
        ("LFS_MAX_OBJECT_SIZE", "0"),
        ("LFS_WORKERS", "0"),
        ("LFS_LISTEN", "8080"),
        ("LFS_LISTEN", "127.0.0.1:99999"),
        ("LFS_PUBLIC_URL", "ftp://host"),
        ("LFS_PUBLIC_URL", "host:8080"),
        ("LFS_ANONYMOUS", "everything"),
        ("LFS_TLS_CERT", "/nonexistent/cert.pem"),
        ("LFS_ADMIN_USER", "root"),
        ("LFS_ADMIN_PASSWORD", "secret-without-user"),
        ("LFS_PREVIOUS_SECRET_KEYS", "tooshort"),
        ("LFS_STOP_GRACE", "0"),
        ("LFS_STOP_GRACE", "3601"),
        ("LFS_STOP_GRACE", "1m"),
    ],
)
def test_bad_values_name_the_variable(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load(tmp_path, **{name: value})
    assert str(caught.value).startswith(name)


def test_tls_needs_both_files(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(SettingsError, match="LFS_TLS_CERT and LFS_TLS_KEY"):
        load(tmp_path, LFS_TLS_CERT=str(cert))


def test_admin_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("correct horse battery\n")
    settings = load(tmp_path, LFS_ADMIN_USER="root", LFS_ADMIN_PASSWORD_FILE=str(secret))
    assert settings.admin_password == "correct horse battery"
    assert "correct horse" not in repr(settings)
