"""`lfs-server migrate-db`: move a single box's SQLite database into PostgreSQL.

The source, LFS_DATA_DIR/lfs.db, is opened read-only and read in one
transaction: one snapshot, however long the copy takes (a server writing
meanwhile is neither blocked nor copied halfway). The target gets its schema
from the shared migrations and every row in one transaction with it, so a
failure, a refusal or Ctrl-C leaves it as it was. A target that holds rows
already is compared table by table with what would be copied (row count and
an order-free digest of the rows): equal is "already migrated", anything
else is refused, naming the table.

The signing key moves with the data when the source server generated it
(LFS_DATA_DIR/secret.key): it becomes the key kept in the database, which
servers on PostgreSQL without LFS_SECRET_KEY sign with, so transfer URLs
and web sessions signed before the move stay valid. A key set with
LFS_SECRET_KEY is not written anywhere: it stays a setting.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

from lfs_server.db import DatabaseError
from lfs_server.db.migrations import MIGRATIONS
from lfs_server.db.postgres import CONNECT_TIMEOUT, migrate, unavailable, where
from lfs_server.settings import Settings
from lfs_server.tokens import SHARED_SIGNING_KEY

OPTION = "--to"
KEY_FILE = "secret.key"
# Where the signing key of the source comes from, and what that means on the target.
KEY_IN_FILE, KEY_IN_SETTING, NO_KEY = "file", "setting", "none"
KEY_NOTES = {
    KEY_IN_FILE: "signing key: LFS_DATA_DIR/secret.key is now the key kept in the database: "
    "servers on it without LFS_SECRET_KEY sign with it (transfer URLs and web sessions "
    "stay valid)",
    KEY_IN_SETTING: "signing key: LFS_SECRET_KEY, not copied: give every server on "
    "PostgreSQL the same LFS_SECRET_KEY",
    NO_KEY: "signing key: none in LFS_DATA_DIR; the first server on PostgreSQL generates one",
}
# SQLite's lock counter; on PostgreSQL it is the sequence lock_seq.
LOCK_COUNTER = "lock_sequence"


class MigrationError(Exception):
    """The migration cannot be done; one line that says why (never a password)."""


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]

    @property
    def select(self) -> str:
        return f"SELECT {', '.join(self.columns)} FROM {self.name}"


# Every table of the schema but the lock counter, parents before children.
TABLES = (
    Table("users", ("id", "uid", "name", "password_hash", "is_admin", "created_at")),
    Table(
        "tokens",
        ("id", "user_id", "secret_hash", "note", "created_at", "expires_at", "last_used_at"),
    ),
    Table("grants", ("user_id", "pattern", "access")),
    Table("auth_failures", ("key", "count", "reset_at")),
    Table("good_logins", ("user_id", "network", "seen_at")),
    Table("locks", ("id", "repo", "path", "owner", "owner_uid", "locked_at", "seq")),
    Table("objects", ("repo", "oid", "size", "stored_at")),
    Table("upgrades", ("name", "done_at")),
    Table("server_keys", ("name", "value")),
)


@dataclass
class Tally:
    """A table's row count and digest: the sum of the rows' SHA-256, so the
    order rows come in (which differs between the databases) does not matter."""

    rows: int = 0
    digest: int = 0

    def add(self, row: Sequence[object]) -> None:
        self.rows += 1
        value = hashlib.sha256(repr(tuple(row)).encode()).digest()
        self.digest = (self.digest + int.from_bytes(value, "big")) % (1 << 256)


@dataclass(frozen=True)
class Outcome:
    target: str  # host:port/database: what a message may show of the URL
    rows: dict[str, int]  # per table, in TABLES order
    already: bool  # the target held exactly these rows: nothing was written
    key: str  # where the source's signing key comes from (KEY_IN_FILE, ...)


def local_signing_key(settings: Settings) -> tuple[str | None, str]:
    """The source server's generated signing key, and where its key comes from."""
    if settings.secret_key:
        return None, KEY_IN_SETTING
    if (settings.data_dir / KEY_FILE).is_file():
        return settings.with_secret().secret_key.decode(), KEY_IN_FILE
    return None, NO_KEY


class Source:
    """The SQLite database, read-only, in one read transaction until close()."""

    def __init__(self, path: Path, signing_key: str | None) -> None:
        self.signing_key = signing_key
        self.conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, isolation_level=None)
        try:
            self.conn.execute("PRAGMA busy_timeout = 10000")
            self.conn.execute("BEGIN")
            self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the snapshot
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            if version != len(MIGRATIONS):
                raise MigrationError(source_version_problem(path.parent, version))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.conn.close()  # ends the read transaction; nothing was written

    def rows(self, table: Table) -> Iterator[tuple]:
        """The rows the target gets: the table's, and in server_keys the
        generated signing key under the name servers on PostgreSQL read."""
        for row in self.conn.execute(table.select):
            if table.name != "server_keys" or row[0] != SHARED_SIGNING_KEY:
                yield row
        if table.name == "server_keys" and self.signing_key is not None:
            yield (SHARED_SIGNING_KEY, self.signing_key)

    def tally(self, table: Table) -> Tally:
        tally = Tally()
        for row in self.rows(table):
            tally.add(row)
        return tally

    def lock_counter(self) -> int:
        """The last lock number handed out (never less than a lock's)."""
        (last,) = self.conn.execute(f"SELECT max(last) FROM {LOCK_COUNTER}").fetchone()
        (top,) = self.conn.execute("SELECT max(seq) FROM locks").fetchone()
        return max(last or 0, top or 0)

    def last_user_id(self) -> int:
        return self.conn.execute("SELECT max(id) FROM users").fetchone()[0] or 0


def source_version_problem(data_dir: Path, version: int) -> str:
    if version > len(MIGRATIONS):
        return (
            f"LFS_DATA_DIR: the database schema in {data_dir} (version {version}) is newer "
            f"than this server (version {len(MIGRATIONS)}): upgrade the server"
        )
    return (
        f"LFS_DATA_DIR: the database in {data_dir} has schema version {version}, this "
        f"server {len(MIGRATIONS)}: start the server on it once (it upgrades the database), "
        "stop it, then run migrate-db again"
    )


def target_tally(conn: psycopg.Connection, table: Table) -> Tally:
    tally = Tally()
    with conn.cursor(name=f"read_{table.name}") as cursor:
        cursor.itersize = 5000
        cursor.execute(table.select)
        for row in cursor:
            tally.add(row)
    return tally


def migrate_db(settings: Settings, url: str, password: str) -> Outcome:
    """Copy the SQLite database of `settings` into the PostgreSQL database at
    `url` (without its password, which is `password`), or find it there."""
    path = settings.database_path
    if not path.is_file():
        raise MigrationError(
            f"LFS_DATA_DIR: no database ({path.name}) in {settings.data_dir}: nothing to migrate"
        )
    key, origin = local_signing_key(settings)
    source = Source(path, key)
    kwargs: dict[str, object] = {"connect_timeout": CONNECT_TIMEOUT}
    if password:
        kwargs["password"] = password
    shown = where(url)
    try:
        with psycopg.connect(url, **kwargs) as conn:
            migrate(conn)
            # No other writer until COMMIT: what is found empty stays empty.
            conn.execute(f"LOCK TABLE {', '.join(t.name for t in TABLES)} IN EXCLUSIVE MODE")
            rows, already = copy_into(conn, source, shown)
            if already:
                conn.rollback()  # the schema too: a target found migrated is left as it was
        return Outcome(shown, rows, already, origin)
    except psycopg.Error as exc:
        raise MigrationError(str(unavailable(url, exc, OPTION))) from None
    except DatabaseError as exc:
        raise MigrationError(f"{OPTION}: PostgreSQL at {shown}: {exc}") from None
    except KeyboardInterrupt:
        raise MigrationError("interrupted: nothing was written to the target") from None
    finally:
        source.close()


def copy_into(conn: psycopg.Connection, source: Source, target: str) -> tuple[dict[str, int], bool]:
    """Copy every row, continue the sequences and verify, in `conn`'s
    transaction: the rows per table, and whether the target held exactly
    them already (then nothing is copied). A target holding anything else
    is refused."""
    if any(
        conn.execute(f"SELECT EXISTS (SELECT 1 FROM {table.name})").fetchone()[0]
        for table in TABLES
    ):
        return compare(conn, source, target), True
    copied: dict[str, Tally] = {}
    with conn.cursor() as cursor:
        for table in TABLES:
            tally = copied[table.name] = Tally()
            columns = ", ".join(table.columns)
            with cursor.copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy:
                for row in source.rows(table):
                    tally.add(row)
                    copy.write_row(row)
    if counter := source.lock_counter():
        conn.execute("SELECT setval('lock_seq', %s)", (counter,))
    if last := source.last_user_id():
        conn.execute("SELECT setval(pg_get_serial_sequence('users', 'id'), %s)", (last,))
    for table in TABLES:
        if target_tally(conn, table) != copied[table.name]:
            raise MigrationError(
                f"{OPTION}: PostgreSQL at {target}: table {table.name} does not hold the rows "
                "copied; nothing was written"
            )
    return {name: tally.rows for name, tally in copied.items()}, False


def compare(conn: psycopg.Connection, source: Source, target: str) -> dict[str, int]:
    """The rows per table of a target holding exactly the source's rows;
    any other target is refused, naming the first table that differs (one
    holding rows of its own before one that only lacks some)."""
    rows: dict[str, int] = {}
    differing: list[tuple[str, int]] = []
    for table in TABLES:
        here, there = source.tally(table), target_tally(conn, table)
        rows[table.name] = here.rows
        if here != there:
            differing.append((table.name, there.rows))
    if differing:
        name = next((name for name, held in differing if held), differing[0][0])
        raise MigrationError(
            f"{OPTION}: PostgreSQL at {target} already holds other data (table {name} differs "
            "from LFS_DATA_DIR's database): nothing was written; migrate into an empty database"
        )
    return rows
