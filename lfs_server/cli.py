"""The `lfs-server` command: run the server, and manage users, grants and tokens."""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sqlite3
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

from lfs_server.access import RIGHTS, normalize_pattern
from lfs_server.accounts import hash_password, new_token, valid_user_name
from lfs_server.db import DatabaseError, DatabaseUnavailable, open_database
from lfs_server.privileges import become_owner_of
from lfs_server.repos import normalize_repo
from lfs_server.settings import (
    SETTINGS,
    Settings,
    SettingsError,
    data_dir_from,
    parse_database_url,
)

# migrate-db's source is always the SQLite database of LFS_DATA_DIR: these
# settings, a server's on PostgreSQL, do not apply to it (--to names the target).
TARGET_SETTINGS = ("LFS_DATABASE_URL", "LFS_DATABASE_PASSWORD_FILE")
# migrate-store --jobs: objects copied at once.
DEFAULT_JOBS = 8
MAX_JOBS = 64


class CommandError(Exception):
    """A command failed for a reason the message explains."""


def settings_help() -> str:
    rows = [
        f"  {name:<26} {desc} (default: {default})" for name, (default, desc) in SETTINGS.items()
    ]
    return "settings (environment variables):\n" + "\n".join(rows)


def read_password(from_stdin: bool) -> str:
    """A new password from stdin (--password-stdin) or typed twice at a prompt."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise CommandError("the passwords differ")
    else:
        raise CommandError("no terminal to ask for a password: use --password-stdin")
    if len(password) < 8:
        raise CommandError("a password needs at least 8 characters")
    return password


_DURATION_RE = re.compile(r"(\d+)([hdwy])")
_DURATION_SECONDS = {"h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def parse_expiry(text: str | None) -> int | None:
    if text is None or text == "never":
        return None
    match = _DURATION_RE.fullmatch(text)
    if not match or int(match.group(1)) == 0:
        raise CommandError(
            f"--expires: expected a duration like 12h, 90d, 8w, 1y or never, got {text!r}"
        )
    return int(time.time()) + int(match.group(1)) * _DURATION_SECONDS[match.group(2)]


def when(timestamp: int | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def print_table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


# command handlers: (args, settings) -> exit code


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from lfs_server.serve import serve

    return serve(settings)


def cmd_check_config(args: argparse.Namespace, settings: Settings) -> int:
    from lfs_server.serve import LaunchError, check_data_dir, check_store

    open_database(settings).close()
    try:
        check_data_dir(settings)
        check_store(settings)
    except LaunchError as exc:
        raise CommandError(str(exc)) from None
    print(f"lfs-server: configuration is valid; serving {settings.public_url}")
    return 0


def cmd_user(args: argparse.Namespace, settings: Settings) -> int:
    db = open_database(settings)
    if args.action == "list":
        users = db.list_users()
        print_table(
            [
                (
                    u.name,
                    "admin" if u.is_admin else "-",
                    "yes" if u.password_hash else "no",
                    when(u.created_at),
                )
                for u in users
            ],
            ("USER", "ADMIN", "PASSWORD", "CREATED"),
        )
        return 0
    if not args.name:
        raise CommandError(f"user {args.action}: a user name is required")
    if args.action == "add":
        if not valid_user_name(args.name):
            raise CommandError(
                f"invalid user name {args.name!r}: use letters, digits and . _ @ - (at most 64)"
            )
        password = None if args.no_password else hash_password(read_password(args.password_stdin))
        db.add_user(args.name, password, args.admin)
        print(f"added user {args.name}" + (" (admin)" if args.admin else ""))
    elif args.action == "passwd":
        if db.get_user(args.name) is None:
            raise CommandError(f"no such user: {args.name}")
        db.set_password(args.name, hash_password(read_password(args.password_stdin)))
        print(f"password of {args.name} changed")
    elif args.action == "remove":
        db.remove_user(args.name)
        print(f"removed user {args.name} with their grants and tokens")
    return 0


def cmd_grant(args: argparse.Namespace, settings: Settings) -> int:
    db = open_database(settings)
    pattern = normalize_pattern(args.pattern)
    if pattern is None:
        raise CommandError(
            f"invalid repository pattern {args.pattern!r}: use *, team/* or team/project"
        )
    db.set_grant(args.name, pattern, args.right)
    print(f"{args.name} has {args.right} access to {pattern}")
    return 0


def cmd_revoke(args: argparse.Namespace, settings: Settings) -> int:
    db = open_database(settings)
    pattern = normalize_pattern(args.pattern) or args.pattern
    db.remove_grant(args.name, pattern)
    print(f"revoked {args.name}'s grant on {pattern}")
    return 0


def cmd_grants(args: argparse.Namespace, settings: Settings) -> int:
    db = open_database(settings)
    grants = db.list_grants(args.name)
    print_table([(g.user, g.pattern, g.right) for g in grants], ("USER", "PATTERN", "RIGHT"))
    return 0


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    db = open_database(settings)
    if args.action == "create":
        if not args.target:
            raise CommandError("token create: a user name is required")
        expires_at = parse_expiry(args.expires)
        token_id, token, secret_hash = new_token()
        db.add_token(args.target, token_id, secret_hash, args.note or "", expires_at)
        print(token)
        print(
            f"token {token_id} for {args.target}, expires {when(expires_at)}; "
            "use it as the password. It is shown only now.",
            file=sys.stderr,
        )
    elif args.action == "list":
        tokens = db.list_tokens(args.target)
        print_table(
            [
                (t.id, t.user, when(t.created_at), when(t.expires_at), when(t.last_used_at), t.note)
                for t in tokens
            ],
            ("ID", "USER", "CREATED", "EXPIRES", "LAST USED", "NOTE"),
        )
    elif args.action == "revoke":
        if not args.target:
            raise CommandError("token revoke: a token id is required (see token list)")
        db.revoke_token(args.target)
        print(f"revoked token {args.target}")
    return 0


def repo_argument(raw: str) -> str:
    """A repository named on the command line, in its canonical spelling."""
    repo = normalize_repo(raw)
    if repo is None:
        raise CommandError(
            f"invalid repository name {raw!r}: use team/project (a .git suffix is fine)"
        )
    return repo


def cmd_locks(args: argparse.Namespace, settings: Settings) -> int:
    repo = repo_argument(args.repo)
    db = open_database(settings)
    if args.action == "list":
        print_table(
            [
                (lock.id, lock.owner, when(lock.locked_at), lock.path)
                for lock in db.list_locks(repo)
            ],
            ("ID", "OWNER", "LOCKED", "PATH"),
        )
    elif args.action == "remove":
        lock = db.delete_lock(repo, args.id)
        if lock is None:
            raise CommandError(f"no lock {args.id!r} in {repo} (see: lfs-server locks list {repo})")
        print(f"removed lock {lock.id} on {lock.path} in {repo} (held by {lock.owner})")
    return 0


def cmd_fsck(args: argparse.Namespace, settings: Settings) -> int:
    from lfs_server import fsck
    from lfs_server.store.s3_bucket import BucketError

    repo = None if args.repo is None else repo_argument(args.repo)
    try:
        report = fsck.check(settings, repo)
    except BucketError as exc:  # not the objects' fault: nothing is judged on a failing bucket
        raise CommandError(f"fsck: LFS_STORE=s3: {exc.message}") from None
    return 1 if report.failed else 0


def seconds(text: str) -> float:
    """A finite, non-negative number of seconds (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def cmd_cleanup(args: argparse.Namespace, settings: Settings) -> int:
    from lfs_server.cleanup import sweep_stale_uploads
    from lfs_server.units import human_bytes

    swept = sweep_stale_uploads(settings.upload_tmp_dir, args.older_than)
    print(
        f"removed {swept.files} stale upload temp files, "
        f"{swept.bytes} bytes ({human_bytes(swept.bytes)})"
    )
    return 0


def cmd_migrate_db(args: argparse.Namespace, settings: Settings) -> int:
    from lfs_server.migrate_db import KEY_NOTES, MigrationError, migrate_db

    try:
        url, password = parse_database_url(
            "--to", args.to, os.environ.get("LFS_DATABASE_PASSWORD_FILE", "")
        )
        outcome = migrate_db(settings, url, password)
    except (SettingsError, MigrationError) as exc:
        raise CommandError(str(exc)) from None
    if outcome.already:
        print(
            f"already migrated: PostgreSQL at {outcome.target} holds exactly the rows of "
            "LFS_DATA_DIR's database; nothing was written"
        )
    else:
        print(
            f"migrated LFS_DATA_DIR's database to PostgreSQL at {outcome.target} "
            "(one transaction; row counts and contents verified)"
        )
    print_table([(name, str(rows)) for name, rows in outcome.rows.items()], ("TABLE", "ROWS"))
    print(KEY_NOTES[outcome.key])
    return 0


def jobs(text: str) -> int:
    """How many objects migrate-store copies at once (argparse type)."""
    if not text.isdigit() or not 1 <= int(text) <= MAX_JOBS:
        raise argparse.ArgumentTypeError(f"expected a number from 1 to {MAX_JOBS}, got {text!r}")
    return int(text)


def cmd_migrate_store(args: argparse.Namespace, settings: Settings) -> int:
    from lfs_server.migrate_store import RESUME, MigrationError, migrate

    try:
        result = migrate(settings, args.jobs, sys.stderr, sys.stdout)
    except MigrationError as exc:
        raise CommandError(str(exc)) from None
    except KeyboardInterrupt:  # before the copy began (it handles its own)
        print(f"\nlfs-server: migrate-store: interrupted; {RESUME}", file=sys.stderr)
        return 130
    return result.exit_code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lfs-server",
        description="A self-hosted Git LFS server: nginx moves the bytes, Flask decides.",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, handler: Callable[[argparse.Namespace, Settings], int], help: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    add("serve", cmd_serve, "run nginx and gunicorn in the foreground")
    add(
        "check-config",
        cmd_check_config,
        "validate the settings, the database and the data dir, then exit",
    )

    user = add("user", cmd_user, "add, list, remove users or change a password")
    user.add_argument("action", choices=["add", "list", "remove", "passwd"])
    user.add_argument("name", nargs="?")
    user.add_argument(
        "--admin", action="store_true", help="server admin: admin on every repository"
    )
    user.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    user.add_argument("--no-password", action="store_true", help="token-only user (add)")

    grant = add("grant", cmd_grant, "give a user a right on repositories matching a pattern")
    grant.add_argument("name")
    grant.add_argument("pattern", help="*, team/* or team/project")
    grant.add_argument("right", choices=RIGHTS[1:])

    revoke = add("revoke", cmd_revoke, "remove a user's grant on a pattern")
    revoke.add_argument("name")
    revoke.add_argument("pattern")

    grants = add("grants", cmd_grants, "list grants (of one user, or all)")
    grants.add_argument("name", nargs="?")

    token = add("token", cmd_token, "personal access tokens, usable as the password")
    token.add_argument("action", choices=["create", "list", "revoke"])
    token.add_argument("target", nargs="?", help="user name (create, list) or token id (revoke)")
    token.add_argument("--expires", help="12h, 90d, 8w, 1y or never (default: never)")
    token.add_argument("--note", help="what the token is for")

    locks = add("locks", cmd_locks, "list or remove file locks of a repository")
    lock_actions = locks.add_subparsers(dest="action", required=True, metavar="ACTION")
    lock_list = lock_actions.add_parser("list", help="every lock of REPO, oldest first")
    lock_list.add_argument("repo", help="team/project")
    lock_remove = lock_actions.add_parser("remove", help="remove one lock, whoever holds it")
    lock_remove.add_argument("repo", help="team/project")
    lock_remove.add_argument("id", help="the lock id (see locks list)")

    fsck = add(
        "fsck",
        cmd_fsck,
        "re-hash stored objects, move corrupted ones to LFS_DATA_DIR/quarantine and "
        "reconcile the store with the object index (exit 1 when anything was corrupted "
        "or missing); safe while the server runs",
    )
    fsck.add_argument("repo", nargs="?", help="check only this repository (default: all)")

    sweep = add(
        "cleanup",
        cmd_cleanup,
        "remove upload temp files a crash left behind (the server also does this "
        "at start and every 10 minutes)",
    )
    sweep.add_argument(
        "--older-than",
        type=seconds,
        default=3600.0,
        metavar="SECONDS",
        help="remove files not modified for this long (default: 3600); "
        "uploads in progress keep a fresh modification time",
    )

    migrate_db = add(
        "migrate-db",
        cmd_migrate_db,
        "copy the SQLite database of LFS_DATA_DIR into an empty PostgreSQL database",
    )
    migrate_db.description = (
        "Copy every table of LFS_DATA_DIR's SQLite database (users, tokens, grants, locks, "
        "the login brake, the object index, and the generated signing key) into the "
        "PostgreSQL database at URL, in one transaction from one snapshot, then verify each "
        "table's rows and print their counts. The source is only read. Run again, it "
        "reports a target holding exactly these rows as already migrated; a target holding "
        "anything else is refused and left as it was. Stop the server first: what it "
        "writes after the snapshot is not copied."
    )
    migrate_db.add_argument(
        "--to",
        required=True,
        metavar="URL",
        help="postgresql://user[:password]@host[:port]/database[?sslmode=...]; the password "
        "may come from LFS_DATABASE_PASSWORD_FILE instead (LFS_DATABASE_URL is not read)",
    )

    migrate_store = add(
        "migrate-store",
        cmd_migrate_store,
        "copy every object of the local store (LFS_DATA_DIR/objects) into the S3 bucket "
        "that the LFS_S3_* settings name (LFS_S3_BUCKET, LFS_S3_ENDPOINT, ... must be set, "
        "whatever LFS_STORE says; credentials from the AWS SDK's chain), checking each "
        "object's SHA-256 on the way; objects already in the bucket are skipped, so running "
        "it again after an interruption resumes; the local store is never changed; "
        "exit 1 when an object could not be copied",
    )
    migrate_store.add_argument(
        "--to", required=True, choices=["s3"], help="the store to copy into: s3"
    )
    migrate_store.add_argument(
        "--jobs",
        type=jobs,
        default=DEFAULT_JOBS,
        metavar="N",
        help=f"objects copied at once (default: {DEFAULT_JOBS}; each large one "
        "in LFS_S3_CONCURRENCY parts at a time)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.handler is not cmd_serve:
            # Run as root on the server's data dir: act as its owner, so no
            # file the server must write (the database's journal) is root's.
            become_owner_of(data_dir_from(os.environ))
        env = dict(os.environ)
        if args.handler is cmd_migrate_db:
            env = {name: value for name, value in env.items() if name not in TARGET_SETTINGS}
        # `serve` reads the key file itself, once it runs as the user that serves;
        # migrate-db reads it only where there is one (it creates nothing).
        settings = Settings.from_env(
            env, read_key_file=args.handler not in (cmd_serve, cmd_migrate_db)
        )
        # Whatever the command creates (the database, its journal) is private.
        umask = os.umask(0o077)
        try:
            return args.handler(args, settings)
        finally:
            os.umask(umask)
    except SettingsError as exc:
        print(f"lfs-server: bad setting {exc}", file=sys.stderr)
    except (CommandError, DatabaseError, DatabaseUnavailable) as exc:
        print(f"lfs-server: {exc}", file=sys.stderr)
    except sqlite3.Error as exc:
        # A database file that is not one, or that cannot be opened or written.
        data_dir = data_dir_from(os.environ)
        print(
            f"lfs-server: LFS_DATA_DIR: the database in {data_dir} failed: {exc}", file=sys.stderr
        )
    return 2


if __name__ == "__main__":
    sys.exit(main())
