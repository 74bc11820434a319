"""My repositories and their locks on the web pages, for a reader, a writer, a
repository admin, a server admin and a stranger: exactly what the API shows."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from flask import Flask

from lfs_server.db import IndexedObject, Lock
from lfs_server.locks import new_lock_id
from lfs_server.services import services
from lfs_server.web.chart import chart, growth
from tests.web.pages import PASSWORD, UI, add_user, make_app, post, sign_in, text

REPOS = ["team/proj", "team/other", "secret/x"]
USERS = ["reader", "writer", "boss", "root", "stranger"]
DAY = 86400


@pytest.fixture
def app(app: Flask) -> Flask:
    add_user(app, "reader", ("team/*", "read"))
    add_user(app, "writer", ("team/proj", "write"), ("fresh/repo", "write"))
    add_user(app, "boss", ("team/proj", "admin"))
    add_user(app, "root", admin=True)
    add_user(app, "stranger")
    services(app).db.add_objects(
        [
            IndexedObject("team/proj", "a" * 64, 1000, 10 * DAY),
            IndexedObject("team/proj", "b" * 64, 3000, 12 * DAY),
            IndexedObject("team/other", "c" * 64, 5, 11 * DAY),
            IndexedObject("secret/x", "d" * 64, 77777, 13 * DAY),
        ]
    )
    return app


def lock(app: Flask, repo: str, path: str, owner: str) -> Lock:
    db = services(app).db
    user = db.get_user(owner)
    assert user is not None
    created, _ = db.create_lock(new_lock_id(), repo, path, owner, 20 * DAY, owner_uid=user.uid)
    return created


def listed(page: str) -> list[str]:
    return re.findall(r'<a href="/\.lfs/ui/repos/([^"]+)">', page)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("reader", ["team/other", "team/proj"]),
        ("writer", ["fresh/repo", "team/proj"]),
        ("boss", ["team/proj"]),
        ("root", ["secret/x", "team/other", "team/proj"]),
        ("stranger", []),
    ],
)
def test_the_list_holds_every_repository_the_user_can_read_and_no_other(
    app: Flask, name: str, expected: list[str]
) -> None:
    page = text(sign_in(app, name).get(f"{UI}/repos"))
    assert listed(page) == expected
    if not expected:
        assert "You cannot read any repository yet" in page
    for hidden in set(REPOS) - set(expected):
        assert hidden not in page


def test_the_list_shows_right_objects_bytes_and_last_upload(app: Flask) -> None:
    page = text(sign_in(app, "writer").get(f"{UI}/repos"))
    row = page[page.index("team/proj</a>") :]
    row = row[: row.index("</tr>")]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    assert cells[:4] == ["write", "2", "3.9 KiB", "1970-01-13 00:00 UTC"]
    fresh = page[page.index("fresh/repo</a>") :]
    assert "none yet" in fresh[: fresh.index("</tr>")]


def test_anonymous_read_shows_every_repository_to_everyone_signed_in(tmp_path: Path) -> None:
    app = make_app(tmp_path / "data", LFS_ANONYMOUS="read")
    add_user(app, "stranger")
    services(app).db.add_objects([IndexedObject("open/repo", "e" * 64, 1, DAY)])
    assert listed(text(sign_in(app, "stranger").get(f"{UI}/repos"))) == ["open/repo"]


def test_a_repository_page_shows_usage_setup_and_a_chart(app: Flask) -> None:
    page = text(sign_in(app, "reader").get(f"{UI}/repos/team/proj"))
    port = services(app).settings.listen_port
    assert f"git config lfs.url http://127.0.0.1:{port}/team/proj.git/info/lfs" in page
    assert '<dd id="objects">2</dd>' in page
    assert '<dd id="bytes">3.9 KiB</dd>' in page
    assert '<dd id="right">read</dd>' in page
    assert "<svg" in page and "<polyline" in page
    assert "up to 3.9 KiB" in page


def test_a_repository_spelled_with_git_is_the_same_page(app: Flask) -> None:
    page = text(sign_in(app, "reader").get(f"{UI}/repos/team/proj.git"))
    assert '<dd id="objects">2</dd>' in page


@pytest.mark.parametrize("raw", ["secret/x", "nowhere/at-all", "../etc", ".hidden", "a" * 300])
def test_a_repository_the_user_cannot_read_is_not_found_like_one_that_does_not_exist(
    app: Flask, raw: str
) -> None:
    client = sign_in(app, "reader")
    for page in (f"{UI}/repos/{raw}", f"{UI}/locks/{raw}"):
        response = client.get(page)
        assert response.status_code == 404, page
        assert "that you can read" in text(response)
        assert "77777" not in text(response)


@pytest.mark.parametrize("name", USERS)
@pytest.mark.parametrize("repo", REPOS)
def test_pages_agree_with_the_api_on_who_may_see_a_repository(
    app: Flask, name: str, repo: str
) -> None:
    client = sign_in(app, name)
    credentials = base64.b64encode(f"{name}:{PASSWORD}".encode()).decode()
    api = app.test_client().get(
        f"/{repo}.git/info/lfs/locks", headers={"Authorization": f"Basic {credentials}"}
    )
    page = client.get(f"{UI}/locks/{repo}")
    assert (page.status_code == 200) == (api.status_code == 200), (api.status_code, page)
    assert (repo in listed(text(client.get(f"{UI}/repos")))) == (api.status_code == 200)


def test_the_locks_page_shows_who_holds_what_since_when(app: Flask) -> None:
    lock(app, "team/proj", "art/hero.psd", "writer")
    lock(app, "secret/x", "plans.pdf", "root")
    page = text(sign_in(app, "reader").get(f"{UI}/locks/team/proj"))
    assert "art/hero.psd" in page and "writer" in page and "1970-01-21 00:00 UTC" in page
    assert "plans.pdf" not in page
    assert "Unlock" not in page and "Force unlock" not in page  # a reader may not


def test_a_writer_unlocks_their_own_lock(app: Flask) -> None:
    mine = lock(app, "team/proj", "art/hero.psd", "writer")
    client = sign_in(app, "writer")
    assert "Unlock art/hero.psd" in text(client.get(f"{UI}/locks/team/proj"))
    response = post(client, "/locks/team/proj", lock_id=mine.id)
    assert response.status_code == 200
    assert "art/hero.psd is unlocked." in text(response)
    assert services(app).db.list_locks("team/proj") == []


def test_a_reader_cannot_unlock(app: Flask) -> None:
    theirs = lock(app, "team/proj", "art/hero.psd", "writer")
    client = sign_in(app, "reader")
    response = post(client, "/locks/team/proj", lock_id=theirs.id, force="1")
    assert response.status_code == 403
    assert "needs the write right on team/proj: nothing was unlocked" in text(response)
    assert services(app).db.list_locks("team/proj") == [theirs]


@pytest.mark.parametrize("force", ["", "1"])
def test_a_writer_cannot_unlock_someone_elses_lock(app: Flask, force: str) -> None:
    theirs = lock(app, "team/proj", "art/hero.psd", "boss")
    client = sign_in(app, "writer")
    assert "Force unlock" not in text(client.get(f"{UI}/locks/team/proj"))
    response = post(client, "/locks/team/proj", lock_id=theirs.id, force=force)
    assert response.status_code == 403
    assert "nothing was unlocked" in text(response)
    assert services(app).db.list_locks("team/proj") == [theirs]


@pytest.mark.parametrize("name", ["boss", "root"])
def test_the_admin_right_force_unlocks(app: Flask, name: str) -> None:
    theirs = lock(app, "team/proj", "art/hero.psd", "writer")
    client = sign_in(app, name)
    assert "Force unlock art/hero.psd, held by writer" in text(client.get(f"{UI}/locks/team/proj"))
    without_force = post(client, "/locks/team/proj", lock_id=theirs.id)
    assert without_force.status_code == 403
    assert services(app).db.list_locks("team/proj") == [theirs]
    response = post(client, "/locks/team/proj", lock_id=theirs.id, force="1")
    assert response.status_code == 200
    assert services(app).db.list_locks("team/proj") == []


@pytest.mark.parametrize("lock_id", ["other-repo", "", "f" * 5000, "abc\x00def", "../x"])
def test_an_unknown_or_other_repositorys_lock_id_says_so_and_changes_nothing(
    app: Flask, lock_id: str
) -> None:
    elsewhere = lock(app, "secret/x", "plans.pdf", "root")
    here = lock(app, "team/proj", "art/hero.psd", "writer")
    client = sign_in(app, "root")
    sent = elsewhere.id if lock_id == "other-repo" else lock_id
    response = post(client, "/locks/team/proj", lock_id=sent, force="1")
    assert response.status_code == 404
    assert "There is no such lock in team/proj: nothing was unlocked." in text(response)
    assert services(app).db.list_locks("team/proj") == [here]
    assert services(app).db.list_locks("secret/x") == [elsewhere]


def test_a_stranger_can_neither_see_nor_unlock(app: Flask) -> None:
    theirs = lock(app, "team/proj", "art/hero.psd", "writer")
    client = sign_in(app, "stranger")
    response = post(client, "/locks/team/proj", lock_id=theirs.id, force="1")
    assert response.status_code == 404
    assert "art/hero.psd" not in text(response)
    assert services(app).db.list_locks("team/proj") == [theirs]


def test_signed_out_visitors_are_sent_to_sign_in(app: Flask) -> None:
    for page in ("/repos", "/repos/team/proj", "/locks/team/proj"):
        response = app.test_client().get(f"{UI}{page}")
        assert response.status_code == 303
        assert response.headers["Location"] == f"{UI}/signin"


def test_the_chart_follows_the_stored_bytes_over_time() -> None:
    rows = [
        IndexedObject("r", "a", 10, 100),
        IndexedObject("r", "b", 5, 50),
        IndexedObject("r", "c", 1, 100),
    ]
    assert growth(rows) == [(50, 5), (100, 16)]
    drawn = chart(rows)
    assert drawn is not None and (drawn.first, drawn.last, drawn.total) == (50, 100, 16)
    assert chart([]) is None


def test_the_chart_keeps_few_points_for_many_uploads() -> None:
    rows = [IndexedObject("r", f"{i:064x}", 1, i) for i in range(5000)]
    points = growth(rows)
    assert len(points) == 200
    assert points[-1] == (4999, 5000)
