"""Accounts and rights with the real git-lfs client and raw HTTP."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from lfs_server.login_cache import LOGIN_CACHE_SECONDS
from tests.gitclient import GitUser
from tests.integration.helpers import (
    actions_for,
    batch_for,
    download_action,
    sha256,
    stored_copies,
    verify_action,
)
from tests.stack import LFS_MEDIA_TYPE, Stack

PASSWORD = "pass-word-1234"
REPO = "team/proj"
FILES = {f"f{i}.bin": os.urandom(1000 + i) for i in range(3)}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("access"), LFS_ANONYMOUS="none")
    stack.add_user("writer", PASSWORD, ("team/*", "write"))
    stack.add_user("reader", PASSWORD, (REPO, "read"))
    stack.add_user("outsider", PASSWORD)
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def pushed(server: Stack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A remote whose LFS objects the writer pushed."""
    root = tmp_path_factory.mktemp("pushed")
    writer = GitUser(root / "writer-home", "writer", PASSWORD, server.url)
    work = writer.new_repo(root / "work", server.lfs_base(REPO), root / "remote.git")
    writer.commit_files(work, FILES)
    writer.run("git", "push", "-q", "origin", "main", cwd=work)
    return root / "remote.git"


def pull_as(server: Stack, remote: Path, where: Path, name: str | None, password: str = PASSWORD):
    user = GitUser(where / "home", name or "anon", password if name else None, server.url)
    clone = user.clone(remote, where / "clone", server.lfs_base(REPO))
    return user, clone, user.run("git", "lfs", "pull", cwd=clone, check=False, timeout=60)


def test_reader_clones_what_the_writer_pushed(server: Stack, pushed: Path, tmp_path: Path) -> None:
    _, clone, done = pull_as(server, pushed, tmp_path, "reader")
    assert done.returncode == 0, done.stderr
    for name, data in FILES.items():
        assert (clone / name).read_bytes() == data


def test_reader_cannot_push(server: Stack, pushed: Path, tmp_path: Path) -> None:
    user, clone, done = pull_as(server, pushed, tmp_path, "reader")
    assert done.returncode == 0, done.stderr
    user.commit_files(clone, {"new.bin": os.urandom(500)})
    push = user.run("git", "push", "origin", "main", cwd=clone, check=False, timeout=60)
    assert push.returncode != 0
    assert "reader has no write access to team/proj" in push.stderr


def test_user_without_grant_is_refused(server: Stack, pushed: Path, tmp_path: Path) -> None:
    _, clone, done = pull_as(server, pushed, tmp_path, "outsider")
    assert done.returncode != 0
    assert "outsider has no read access" in done.stderr
    assert not any((clone / name).read_bytes() == data for name, data in FILES.items())


def test_wrong_password_is_an_authentication_failure(
    server: Stack, pushed: Path, tmp_path: Path
) -> None:
    user, _, done = pull_as(server, pushed, tmp_path, "reader", password="not-the-password")
    assert done.returncode != 0
    assert "credentials for" in done.stderr and "not found" in done.stderr
    # the 401 made git-lfs reject the stored credential, as git's store helper expects
    assert "not-the-password" not in (user.home / ".git-credentials").read_text()


def test_anonymous_refused_when_anonymous_is_none(
    server: Stack, pushed: Path, tmp_path: Path
) -> None:
    _, _, done = pull_as(server, pushed, tmp_path, None)
    assert done.returncode != 0


def test_access_token_works_until_revoked(server: Stack, pushed: Path, tmp_path: Path) -> None:
    created = server.cli("token", "create", "reader", "--note", "laptop")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    _, _, done = pull_as(server, pushed, tmp_path / "before", "reader", password=token)
    assert done.returncode == 0, done.stderr
    token_id = token.split("_")[1]
    assert server.cli("token", "revoke", token_id).returncode == 0
    time.sleep(LOGIN_CACHE_SECONDS)  # another process's change: in force within the bound
    _, _, done = pull_as(server, pushed, tmp_path / "after", "reader", password=token)
    assert done.returncode != 0


def test_anonymous_read_mode(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "anon", LFS_ANONYMOUS="read")
    stack.add_user("writer", PASSWORD, ("*", "write"))
    stack.start()
    try:
        writer = GitUser(tmp_path / "writer-home", "writer", PASSWORD, stack.url)
        work = writer.new_repo(tmp_path / "work", stack.lfs_base(REPO), tmp_path / "remote.git")
        writer.commit_files(work, FILES)
        writer.run("git", "push", "-q", "origin", "main", cwd=work)
        user, clone, done = pull_as(stack, tmp_path / "remote.git", tmp_path / "anon-user", None)
        assert done.returncode == 0, done.stderr
        assert (clone / "f0.bin").read_bytes() == FILES["f0.bin"]
        user.commit_files(clone, {"anon.bin": b"anonymous data"})
        push = user.run("git", "push", "origin", "main", cwd=clone, check=False, timeout=60)
        assert push.returncode != 0
    finally:
        stack.stop()


# raw HTTP: every endpoint by role


@pytest.mark.parametrize(
    ("auth", "op", "status"),
    [
        (None, "download", 401),
        (None, "upload", 401),
        (("reader", "wrong"), "download", 401),
        (("ghost", PASSWORD), "download", 401),
        (("outsider", PASSWORD), "download", 403),
        (("reader", PASSWORD), "upload", 403),
        (("reader", PASSWORD), "download", 200),
        (("writer", PASSWORD), "upload", 200),
        (("writer", PASSWORD), "download", 200),
    ],
)
def test_batch_by_role(server: Stack, auth: tuple[str, str] | None, op: str, status: int) -> None:
    response = batch_for(server, REPO, op, b"role data", auth=auth)
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith(LFS_MEDIA_TYPE)
    if status == 401:
        assert response.headers["LFS-Authenticate"].startswith("Basic")
    if status >= 400:
        assert response.json()["message"]


def test_transfer_endpoints_follow_the_token_user(server: Stack) -> None:
    data = os.urandom(2048)
    oid = hashlib.sha256(data).hexdigest()
    actions = actions_for(server, REPO, "upload", data, auth=("writer", PASSWORD))
    upload = actions["upload"]
    assert "verify" not in actions  # the PUT commits
    verify = verify_action(server, upload)
    assert (
        requests.put(upload["href"], data=data, headers=upload["header"], timeout=30).status_code
        == 200
    )
    verified = requests.post(
        verify["href"], json={"oid": oid, "size": len(data)}, headers=verify["header"], timeout=30
    )
    assert verified.status_code == 200

    reader = download_action(server, REPO, data, auth=("reader", PASSWORD))
    assert requests.get(reader["href"], headers=reader["header"], timeout=30).content == data
    # the reader's download token can neither upload nor verify
    as_upload = requests.put(upload["href"], data=data, headers=reader["header"], timeout=30)
    assert as_upload.status_code == 403 and as_upload.json()["message"]
    as_verify = requests.post(
        verify["href"], json={"oid": oid, "size": len(data)}, headers=reader["header"], timeout=30
    )
    assert as_verify.status_code == 403

    # a token from one repository never reaches another's objects
    other_upload = actions_for(server, "team/other", "upload", data, auth=("writer", PASSWORD))[
        "upload"
    ]
    other_download = dict(reader, header=other_upload["header"])
    assert (
        requests.get(
            other_download["href"], headers=other_download["header"], timeout=30
        ).status_code
        == 403
    )


# Under 1 MB the commit checks the token once the body is in; from 1 MB on
# upload-auth checks it first as well.
@pytest.mark.parametrize("size", [300, 2 << 20])
def test_removed_user_loses_minted_tokens(server: Stack, size: int) -> None:
    server.add_user("temp", PASSWORD, (REPO, "write"))
    data = os.urandom(size)
    upload = actions_for(server, REPO, "upload", data, auth=("temp", PASSWORD))["upload"]
    assert server.cli("user", "remove", "temp").returncode == 0
    response = requests.put(upload["href"], data=data, headers=upload["header"], timeout=30)
    assert response.status_code == 403
    assert response.headers["Content-Type"].startswith(LFS_MEDIA_TYPE)
    assert stored_copies(server, sha256(data)) == []


def test_secrets_stay_out_of_the_logs(server: Stack) -> None:
    batch_for(server, REPO, "download", b"x", auth=("reader", PASSWORD))
    log = server.log.read_text()
    assert PASSWORD not in log
    assert "Bearer" not in log and "eyJ" not in log
