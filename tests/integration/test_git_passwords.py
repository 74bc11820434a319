"""LFS_GIT_PASSWORDS=deny on the real stack: the Batch and Locking APIs refuse
passwords (401 with LFS-Authenticate and a message saying why) and take access
tokens, for raw HTTP and for the real git-lfs client; /metrics still takes an
admin's password."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from lfs_server.auth import NO_GIT_PASSWORDS
from tests.gitclient import GitUser
from tests.integration.helpers import access_log, assert_lfs_error, lfs_headers, log_size
from tests.stack import Stack

REPO = "team/proj"
PASSWORD = "git passwords test password"


@pytest.fixture(scope="module")
def deny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str]]:
    """A stack with LFS_GIT_PASSWORDS=deny, writer alice and admin boss; alice's token."""
    stack = Stack(tmp_path_factory.mktemp("deny"), LFS_GIT_PASSWORDS="deny").start()
    stack.add_user("alice", PASSWORD, ("team/*", "write"))
    done = stack.cli("user", "add", "boss", "--admin", "--password-stdin", stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    done = stack.cli("token", "create", "alice")
    assert done.returncode == 0, done.stderr
    yield stack, done.stdout.split()[0]
    stack.stop()


def git_api(stack: Stack, auth: tuple[str, str]) -> dict[str, requests.Response]:
    base = stack.lfs_base(REPO)
    post = {"headers": lfs_headers(), "auth": auth, "timeout": 30}
    batch = {"operation": "upload", "objects": [{"oid": "a" * 64, "size": 1}]}
    return {
        "batch": requests.post(f"{base}/objects/batch", json=batch, **post),
        "lock": requests.post(f"{base}/locks", json={"path": "a.bin"}, **post),
        "list": requests.get(f"{base}/locks", **post),
        "verify": requests.post(f"{base}/locks/verify", json={}, **post),
    }


def test_passwords_get_401_saying_why(deny: tuple[Stack, str]) -> None:
    stack, _ = deny
    for what, response in git_api(stack, ("alice", PASSWORD)).items():
        body = assert_lfs_error(response, 401, stack)
        assert body["message"] == NO_GIT_PASSWORDS, what
        assert response.headers["LFS-Authenticate"].startswith("Basic realm="), what


def test_access_tokens_are_taken(deny: tuple[Stack, str]) -> None:
    stack, token = deny
    statuses = {what: r.status_code for what, r in git_api(stack, ("alice", token)).items()}
    assert statuses == {"batch": 200, "lock": 201, "list": 200, "verify": 200}


def test_metrics_take_an_admin_password(deny: tuple[Stack, str]) -> None:
    stack, _ = deny
    response = requests.get(f"{stack.url}/metrics", auth=("boss", PASSWORD), timeout=30)
    assert response.status_code == 200, response.text[:300]


def test_git_lfs_pushes_with_a_token_not_a_password(
    deny: tuple[Stack, str], tmp_path: Path
) -> None:
    """git-lfs 3.3 does not print a 401's message: it drops the stored password
    and asks for new credentials (here nobody answers), which is where a
    person types the token."""
    stack, token = deny
    remote = tmp_path / "remote.git"
    user = GitUser(tmp_path / "home", "alice", PASSWORD, stack.url)
    work = user.new_repo(tmp_path / "work", stack.lfs_base(REPO), remote)
    user.commit_files(work, {"big.bin": b"refused with a password\n" * 100})
    since = log_size(stack)
    assert user.run("git", "push", "-q", "origin", "main", cwd=work, check=False).returncode
    assert user.run("git", "lfs", "locks", cwd=work, check=False).returncode
    refused = access_log(stack, since)
    assert refused and {status for _, _, status in refused} == {401}, refused
    assert PASSWORD not in (tmp_path / "home" / ".git-credentials").read_text()

    user.set_password("alice", token, stack.url)
    user.run("git", "push", "-q", "origin", "main", cwd=work)
    user.run("git", "lfs", "lock", "big.bin", cwd=work)
    assert "big.bin" in user.run("git", "lfs", "locks", cwd=work).stdout
