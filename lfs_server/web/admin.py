"""Admin pages (server admins only): users, grants by pattern, and the server's status.

The same rules as the CLI (`lfs-server user|grant|revoke`): valid names,
passwords of at least 8 characters, canonical grant patterns. An admin
cannot remove themselves or drop their own admin flag, so the last admin
cannot lock everyone out from here.
"""

from __future__ import annotations

import shutil
import time
from importlib import metadata

from flask import render_template, request

from lfs_server.access import RIGHTS, normalize_pattern
from lfs_server.accounts import hash_password, valid_user_name
from lfs_server.db import DatabaseError, User
from lfs_server.health import OK, run_checks
from lfs_server.services import services
from lfs_server.web.blueprint import bp
from lfs_server.web.forms import field
from lfs_server.web.session import WebError, need_user

MIN_PASSWORD = 8
MAX_PASSWORD = 1024
MAX_PATTERN = 900
GRANTABLE = RIGHTS[1:]
STARTED = time.time()


def need_admin() -> User:
    user = need_user()
    if not user.is_admin:
        raise WebError(403, "These pages are for server admins only.")
    return user


def _users_page(status: int = 200, **context: object) -> tuple[str, int]:
    db = services().db
    grants: dict[str, list[str]] = {}
    for grant in db.list_grants():
        grants.setdefault(grant.user, []).append(f"{grant.pattern} ({grant.right})")
    page = render_template(
        "admin_users.html", users=db.list_users(), grants=grants, rights=GRANTABLE, **context
    )
    return page, status


def _name(label: str = "User name") -> str:
    name = field("name", label, max_length=64)
    if not valid_user_name(name):
        raise WebError(400, f"{label} may hold only letters, digits and . _ @ - (not anonymous).")
    return name


def _password() -> str:
    password = request.form.get("password", "")
    if len(password) < MIN_PASSWORD:
        raise WebError(400, f"The password needs at least {MIN_PASSWORD} characters.")
    if len(password) > MAX_PASSWORD:
        raise WebError(400, f"The password is too long: at most {MAX_PASSWORD} characters.")
    if any(ord(c) < 32 or ord(c) == 127 for c in password):
        raise WebError(400, "The password must not contain control characters.")
    return password


def _existing(name: str) -> User:
    user = services().db.get_user(name)
    if user is None:
        raise WebError(404, f"There is no user {name}: nothing was changed.")
    return user


@bp.get("/admin/users")
def admin_users() -> tuple[str, int]:
    need_admin()
    return _users_page()


@bp.post("/admin/users")
def admin_users_post() -> tuple[str, int]:
    me = need_admin()
    action = request.form.get("action", "")
    db = services().db
    try:
        name = _name()
        if action == "add":
            password = _password()
            if db.get_user(name) is not None:
                raise WebError(409, f"There is already a user {name}: nothing was changed.")
            db.add_user(name, hash_password(password), request.form.get("admin") == "1")
            done = f"User {name} is added."
        elif action == "password":
            _existing(name)
            db.set_password(name, hash_password(_password()))
            done = f"The password of {name} is reset; their web sessions have ended."
        elif action in ("make-admin", "drop-admin"):
            _existing(name)
            if name == me.name and action == "drop-admin":
                raise WebError(400, "You cannot drop your own admin right: ask another admin.")
            db.set_admin(name, action == "make-admin")
            done = f"{name} is {'now' if action == 'make-admin' else 'no longer'} a server admin."
        elif action == "remove":
            _existing(name)
            if name == me.name:
                raise WebError(400, "You cannot remove yourself: ask another admin.")
            db.remove_user(name)
            done = f"User {name} is removed, with their tokens and grants."
        else:
            raise WebError(400, "Unknown action: nothing was changed.")
    except WebError as exc:
        return _users_page(exc.status, error=exc.message)
    except DatabaseError as exc:
        return _users_page(409, error=f"{exc}: nothing was changed.")
    services().logins.forget_all()
    return _users_page(message=done)


@bp.post("/admin/grants")
def admin_grants_post() -> tuple[str, int]:
    need_admin()
    db = services().db
    action = request.form.get("action", "")
    try:
        name = _name()
        _existing(name)
        raw = field("pattern", "Pattern", max_length=MAX_PATTERN)
        pattern = normalize_pattern(raw)
        if pattern is None:
            raise WebError(
                400, "Pattern must be *, a prefix like team/* or a repository name like team/proj."
            )
        if action == "set":
            right = request.form.get("right", "")
            if right not in GRANTABLE:
                raise WebError(400, "Choose a right from the list.")
            db.set_grant(name, pattern, right)
            done = f"{name} has {right} on {pattern}."
        elif action == "remove":
            if all(g.pattern != pattern for g in db.list_grants(name)):
                raise WebError(404, f"{name} has no grant on {pattern}: nothing was changed.")
            db.remove_grant(name, pattern)
            done = f"{name} no longer has a grant on {pattern}."
        else:
            raise WebError(400, "Unknown action: nothing was changed.")
    except WebError as exc:
        return _users_page(exc.status, error=exc.message)
    services().logins.forget_all()
    return _users_page(message=done)


@bp.get("/admin/status")
def admin_status() -> str:
    need_admin()
    app = services()
    usage = app.db.repo_usage()
    disk = shutil.disk_usage(app.settings.data_dir)
    checks = run_checks()
    return render_template(
        "admin_status.html",
        version=metadata.version("lfs-server"),
        uptime=int(time.time() - STARTED),
        free=disk.free,
        total=disk.total,
        repos=len(usage),
        objects=sum(row.objects for row in usage),
        stored=sum(row.bytes for row in usage),
        checks=checks,
        ok=OK,
        store=app.settings.store,
    )
