"""My repositories (right, usage, chart) and their locks, with the API's rights.

A repository appears when the user could read it through the API: every one
the object index names that they may read, and those their exact-name grants
name (empty until the first push). Nothing here is shown to someone the API
would refuse, and every unlock goes through locks.release, the API's rules.
"""

from __future__ import annotations

from flask import render_template, request

from lfs_server.access import level, right_for
from lfs_server.auth import Caller
from lfs_server.db import RepoUsage, User
from lfs_server.errors import LFSError
from lfs_server.locks import MAX_LIMIT, release
from lfs_server.repos import normalize_repo
from lfs_server.services import services
from lfs_server.web.blueprint import bp
from lfs_server.web.chart import chart
from lfs_server.web.session import WebError, need_user

INDEX_PAGE = 1000


def _right(user: User, repo: str) -> str:
    app = services()
    return right_for(app.db, user, repo, app.settings.anonymous)


def visible_repos(user: User) -> list[tuple[RepoUsage, str]]:
    """(usage, the user's right) of every repository they may read, by name."""
    db = services().db
    usage = {row.repo: row for row in db.repo_usage()}
    for grant in db.list_grants(user.name):
        if "*" not in grant.pattern and grant.pattern not in usage:
            usage[grant.pattern] = RepoUsage(grant.pattern, 0, 0, 0)
    rows = [(usage[name], _right(user, name)) for name in sorted(usage)]
    return [(row, right) for row, right in rows if level(right) >= level("read")]


def _readable(user: User, raw: str) -> tuple[str, str]:
    """(repository, right) when the user may read it; else a 404 page that
    says the same for a repository that does not exist."""
    repo = normalize_repo(raw)
    right = _right(user, repo) if repo is not None else "none"
    if repo is None or level(right) < level("read"):
        raise WebError(404, f"There is no repository {raw!r} that you can read.")
    return repo, right


def _usage(repo: str) -> RepoUsage:
    for row in services().db.repo_usage():
        if row.repo == repo:
            return row
    return RepoUsage(repo, 0, 0, 0)


def lfs_url(repo: str) -> str:
    return f"{services().settings.public_url.rstrip('/')}/{repo}.git/info/lfs"


@bp.get("/repos")
def repositories() -> str:
    user = need_user()
    return render_template("repos.html", repos=visible_repos(user), lfs_url=lfs_url)


@bp.get("/repos/<path:raw>")
def repository(raw: str) -> str:
    user = need_user()
    repo, right = _readable(user, raw)
    db = services().db
    rows = []
    after = ("", "")
    while page := db.list_objects(repo=repo, after=after, limit=INDEX_PAGE):
        rows.extend(page)
        after = (page[-1].oid, repo)
    return render_template(
        "repo.html",
        repo=repo,
        right=right,
        usage=_usage(repo),
        lfs_url=lfs_url(repo),
        chart=chart(rows),
    )


def _locks_page(repo: str, right: str, status: int = 200, **context: object) -> tuple[str, int]:
    locks = services().db.list_locks(repo, limit=MAX_LIMIT + 1)
    return (
        render_template(
            "locks.html",
            repo=repo,
            right=right,
            locks=locks[:MAX_LIMIT],
            more=len(locks) > MAX_LIMIT,
            can_write=level(right) >= level("write"),
            can_force=level(right) >= level("admin"),
            **context,
        ),
        status,
    )


@bp.get("/locks/<path:raw>")
def locks(raw: str) -> tuple[str, int]:
    repo, right = _readable(need_user(), raw)
    return _locks_page(repo, right)


@bp.post("/locks/<path:raw>")
def unlock(raw: str) -> tuple[str, int]:
    user = need_user()
    repo, right = _readable(user, raw)
    if level(right) < level("write"):
        message = f"Unlocking needs the write right on {repo}: nothing was unlocked."
        return _locks_page(repo, right, 403, error=message)
    lock_id = request.form.get("lock_id", "")
    force = request.form.get("force") == "1"
    try:
        lock = release(repo, lock_id, Caller(user.name, user.uid, right), force)
    except LFSError as exc:
        if exc.status == 404:
            message = f"There is no such lock in {repo}: nothing was unlocked."
        else:
            message = f"{exc.message}: nothing was unlocked."
        return _locks_page(repo, right, exc.status, error=message)
    return _locks_page(repo, right, message=f"{lock.path} is unlocked.")
