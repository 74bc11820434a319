from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from lfs_server import cli
from lfs_server.accounts import CredentialChecker, ensure_admin
from lfs_server.db import SQLiteDatabase


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    monkeypatch.setenv("LFS_DATA_DIR", str(data))
    for name in ("LFS_ANONYMOUS", "LFS_SECRET_KEY", "LFS_ADMIN_USER", "LFS_ADMIN_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    return data


def run(monkeypatch: pytest.MonkeyPatch, *argv: str, stdin: str = "") -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return cli.main(list(argv))


def test_user_lifecycle(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run(
            monkeypatch,
            "user",
            "add",
            "alice",
            "--admin",
            "--password-stdin",
            stdin="s3cret-pass\n",
        )
        == 0
    )
    db = SQLiteDatabase(data_dir / "lfs.db")
    user = db.get_user("alice")
    assert user is not None and user.is_admin
    assert "s3cret-pass" not in (user.password_hash or "")
    assert CredentialChecker(db).check("alice", "s3cret-pass") is not None
    assert (
        run(monkeypatch, "user", "passwd", "alice", "--password-stdin", stdin="another-pass\n") == 0
    )
    assert CredentialChecker(db).check("alice", "s3cret-pass") is None
    assert run(monkeypatch, "user", "list") == 0
    assert "alice" in capsys.readouterr().out
    assert run(monkeypatch, "user", "remove", "alice") == 0
    assert db.get_user("alice") is None


@pytest.mark.parametrize(
    ("argv", "stdin", "message"),
    [
        (("user", "add", "bad name", "--password-stdin"), "password1\n", "invalid user name"),
        (("user", "add", "Anonymous", "--password-stdin"), "password1\n", "invalid user name"),
        (("user", "add", "bob", "--password-stdin"), "short\n", "at least 8"),
        (("user", "add", "bob"), "", "use --password-stdin"),
        (("user", "remove", "ghost"), "", "no such user: ghost"),
        (("grant", "ghost", "team/*", "read"), "", "no such user: ghost"),
        (("token", "create", "ghost"), "", "no such user: ghost"),
        (("token", "revoke", "0123456789ab"), "", "no such token"),
    ],
)
def test_clear_errors(
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: tuple[str, ...],
    stdin: str,
    message: str,
) -> None:
    assert run(monkeypatch, *argv, stdin=stdin) == 2
    assert message in capsys.readouterr().err


def test_bad_pattern(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run(monkeypatch, "user", "add", "bob", "--no-password")
    assert run(monkeypatch, "grant", "bob", "../etc", "read") == 2
    assert "invalid repository pattern" in capsys.readouterr().err
    assert run(monkeypatch, "grant", "bob", "team/proj.git", "write") == 0
    assert SQLiteDatabase(data_dir / "lfs.db").list_grants("bob")[0].pattern == "team/proj"


def test_token_printed_once_and_revocable(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run(monkeypatch, "user", "add", "ci", "--no-password")
    capsys.readouterr()
    assert run(monkeypatch, "token", "create", "ci", "--expires", "90d", "--note", "build bot") == 0
    token = capsys.readouterr().out.strip()
    match = re.fullmatch(r"lfs_([0-9a-f]{12})_[A-Za-z0-9_-]{43}", token)
    assert match
    db = SQLiteDatabase(data_dir / "lfs.db")
    assert CredentialChecker(db).check("ci", token) is not None
    run(monkeypatch, "token", "list")
    listing = capsys.readouterr().out
    assert match.group(1) in listing and "build bot" in listing and token not in listing
    assert run(monkeypatch, "token", "revoke", match.group(1)) == 0
    assert CredentialChecker(db).check("ci", token) is None


def test_bad_expiry(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run(monkeypatch, "user", "add", "ci", "--no-password")
    assert run(monkeypatch, "token", "create", "ci", "--expires", "soon") == 2
    assert "--expires" in capsys.readouterr().err


def test_admin_from_settings(data_dir: Path) -> None:
    db = SQLiteDatabase(data_dir / "lfs.db")
    ensure_admin(db, "root", "first-password")
    ensure_admin(db, "root", "second-password")
    user = db.get_user("root")
    assert user is not None and user.is_admin
    assert CredentialChecker(db).check("root", "second-password") is not None
    assert CredentialChecker(db).check("root", "first-password") is None


def test_bad_setting_names_the_variable(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LFS_TOKEN_TTL", "forever")
    assert run(monkeypatch, "check-config") == 2
    err = capsys.readouterr().err
    assert "LFS_TOKEN_TTL" in err and err.count("\n") == 1
