"""Every pattern check takes the whole input: a trailing newline is refused.

Python's `$` also matches before a final `\\n`, so `re.match("^x$", "x\\n")`
succeeds; the server checks with `fullmatch` instead. Each case is a valid
input (accepted) and the same input with `\\n` appended (refused).
"""

from __future__ import annotations

import base64
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.security import generate_password_hash

from lfs_server import locks
from lfs_server.accounts import CredentialChecker, new_token, valid_user_name
from lfs_server.app import create_app
from lfs_server.cli import CommandError, parse_expiry
from lfs_server.db import SQLiteDatabase
from lfs_server.errors import LFSError
from lfs_server.repos import normalize_repo
from lfs_server.services import services
from lfs_server.settings import parse_public_url, parse_size
from lfs_server.store import is_valid_oid
from tests.unit.conftest import make_settings

LFS = "application/vnd.git-lfs+json"
OID = "0123456789abcdef" * 4
PASSWORD = "correct horse battery"


@pytest.mark.parametrize("name", ["alice", "a", "ci.bot@team-1", "x" * 64])
def test_user_name(name: str) -> None:
    assert valid_user_name(name)
    assert not valid_user_name(name + "\n")


@pytest.mark.parametrize("repo", ["proj", "team/proj", "a/b/c/d/e/f/g/h", "x" * 100])
def test_repository_name(repo: str) -> None:
    assert normalize_repo(repo) == repo
    assert normalize_repo(repo + ".git") == repo
    assert normalize_repo(repo + "\n") is None
    assert normalize_repo(repo + "\n.git") is None
    assert normalize_repo(repo + ".git\n") is None


def test_repository_segment_with_a_newline() -> None:
    assert normalize_repo("team\n/proj") is None


def test_oid() -> None:
    assert is_valid_oid(OID)
    assert not is_valid_oid(OID + "\n")
    assert not is_valid_oid(OID[:-1] + "\n")


@pytest.mark.parametrize("raw", ["0", "1", "123456789012345678"])
def test_lock_cursor(raw: str) -> None:
    assert locks._cursor(raw) == int(raw)
    with pytest.raises(LFSError) as refused:
        locks._cursor(raw + "\n")
    assert refused.value.status == 422


@pytest.mark.parametrize("raw", ["1", "100", "999999999"])
def test_lock_limit_in_a_query(raw: str) -> None:
    assert locks._limit(raw, from_query=True) == min(int(raw), locks.MAX_LIMIT)
    with pytest.raises(LFSError) as refused:
        locks._limit(raw + "\n", from_query=True)
    assert refused.value.status == 422


def test_lock_path() -> None:
    assert locks.check_lock_path("art/hero.psd") == "art/hero.psd"
    with pytest.raises(LFSError):
        locks.check_lock_path("art/hero.psd\n")


@pytest.mark.parametrize("duration", ["12h", "90d", "8w", "1y"])
def test_token_expiry(duration: str) -> None:
    assert parse_expiry(duration) is not None
    with pytest.raises(CommandError, match="--expires"):
        parse_expiry(duration + "\n")


@pytest.mark.parametrize(("raw", "size"), [("10G", 10 << 30), ("512MiB", 512 << 20), ("7", 7)])
def test_size_setting_allows_surrounding_whitespace_only(raw: str, size: int) -> None:
    """Whitespace around a size is allowed on purpose (env files); nothing else."""
    assert parse_size("LFS_X", raw) == size
    assert parse_size("LFS_X", f" {raw}\n") == size
    with pytest.raises(ValueError, match="LFS_X"):
        parse_size("LFS_X", raw + "\nx")


def test_public_url_setting() -> None:
    assert parse_public_url("LFS_PUBLIC_URL", "https://lfs.example/\n") == "https://lfs.example"
    with pytest.raises(ValueError, match="LFS_PUBLIC_URL"):
        parse_public_url("LFS_PUBLIC_URL", "https://lfs.example\n/x")


def test_access_token_with_a_newline_is_not_a_token(tmp_path: Path) -> None:
    db = SQLiteDatabase(tmp_path / "lfs.db")
    db.add_user("ci", None, is_admin=False)
    token_id, token, secret_hash = new_token()
    db.add_token("ci", token_id, secret_hash, "", None)
    checker = CredentialChecker(db)
    assert checker.check("ci", token) is not None
    assert checker.check("ci", token + "\n") is None


# through HTTP (Flask test client): a %0A in the URL is refused


@pytest.fixture
def http_app(tmp_path: Path) -> Flask:
    app = create_app(make_settings(tmp_path / "data", LFS_ANONYMOUS="none"))
    db: SQLiteDatabase = services(app).db
    db.add_user("alice", generate_password_hash(PASSWORD, method="pbkdf2:sha256:1"), False)
    db.set_grant("alice", "*", "write")
    return app


def alice_headers() -> dict[str, str]:
    credentials = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {credentials}", "Accept": LFS}


def assert_lfs_error(response: Any, status: int) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == LFS
    assert isinstance(response.get_json()["message"], str)


@pytest.mark.parametrize("repo_path", ["team/proj%0A", "team/proj%0A.git", "team%0A/proj.git"])
def test_batch_refuses_a_repository_name_with_a_newline(http_app: Flask, repo_path: str) -> None:
    client = http_app.test_client()
    body = {"operation": "upload", "objects": [{"oid": OID, "size": 3}]}
    ok = client.post("/team/proj.git/info/lfs/objects/batch", json=body, headers=alice_headers())
    assert ok.status_code == 200, ok.get_data(as_text=True)
    response = client.post(
        f"/{repo_path}/info/lfs/objects/batch", json=body, headers=alice_headers()
    )
    assert_lfs_error(response, 404)


@pytest.mark.parametrize("query", ["cursor=0%0A", "limit=5%0A"])
def test_lock_list_refuses_a_query_value_with_a_newline(http_app: Flask, query: str) -> None:
    client = http_app.test_client()
    assert client.get("/team/proj.git/info/lfs/locks", headers=alice_headers()).status_code == 200
    response = client.get(f"/team/proj.git/info/lfs/locks?{query}", headers=alice_headers())
    assert_lfs_error(response, 422)


def test_lock_verify_refuses_a_cursor_with_a_newline(http_app: Flask) -> None:
    client = http_app.test_client()
    url = "/team/proj.git/info/lfs/locks/verify"
    assert client.post(url, json={"cursor": "0"}, headers=alice_headers()).status_code == 200
    assert_lfs_error(client.post(url, json={"cursor": "0\n"}, headers=alice_headers()), 422)


# the OpenAPI document's patterns say the same as the server's checks


def _document_pattern(*keys: str) -> str:
    node: Any = json.loads(resources.files("lfs_server").joinpath("openapi.json").read_text())
    for key in keys:
        node = node[key]
    return node["pattern"]


def _cursor_ok(raw: str) -> bool:
    try:
        locks._cursor(raw)
    except LFSError:
        return False
    return True


PATTERN_CASES = [
    (("components", "parameters", "Oid", "schema"), is_valid_oid, [OID, OID + "\n", OID[:63]]),
    (
        ("components", "schemas", "BatchRequestObject", "properties", "oid"),
        is_valid_oid,
        [OID, OID + "\n", OID.upper()],
    ),
    (
        ("components", "parameters", "RepoPath", "schema"),
        lambda raw: normalize_repo(raw) is not None,
        ["team/proj", "team/proj.git", "team/proj\n", "team\n/proj", "a/../b", ".x", "a/" * 8],
    ),
    (
        ("components", "schemas", "LockVerifyRequest", "properties", "cursor"),
        _cursor_ok,
        ["0", "17", "17\n", "1" * 18, "1" * 19, "-1"],
    ),
]


@pytest.mark.parametrize(("keys", "server_accepts", "samples"), PATTERN_CASES)
def test_document_patterns_agree_with_the_server(
    keys: tuple[str, ...], server_accepts: Any, samples: list[str]
) -> None:
    pattern = _document_pattern(*keys)
    # JSON Schema patterns are not implicitly anchored; in them `$` is the
    # end of the input (ECMA-262), which is what fullmatch means here.
    assert pattern.startswith("^") and pattern.endswith("$"), pattern
    for sample in samples:
        assert bool(re.fullmatch(pattern, sample)) == bool(server_accepts(sample)), sample
