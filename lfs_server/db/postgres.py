"""PostgreSQL backend: one shared database for every worker of every replica.

Each worker keeps a psycopg connection pool (no connection is shared between
threads). Pooled connections are in autocommit: a single statement is its own
transaction, one round trip, with no BEGIN and COMMIT of its own (the reads
and one-statement writes every request makes). Several statements that must
hold together run in `transaction()`: BEGIN, COMMIT when its body returns,
ROLLBACK on any failure (a broken connection is dropped by the pool). The
schema follows the same numbered history as SQLite's (migrations.py), kept in
the `schema_version` table and migrated at open under an advisory lock, so
replicas starting at the same moment migrate once. The connection string
never appears in an error: they name LFS_DATABASE_URL and the host alone.
"""

from __future__ import annotations

import secrets
import select
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from urllib.parse import urlsplit
from weakref import WeakKeyDictionary

import psycopg
from psycopg import errors
from psycopg_pool import ConnectionPool, PoolTimeout

from lfs_server.db.base import (
    AccessToken,
    DatabaseError,
    DatabaseUnavailable,
    IndexedObject,
    Lock,
    RepoGrant,
    RepoUsage,
    User,
)
from lfs_server.db.migrations import MIGRATIONS, statements, too_new

# pg_advisory_xact_lock keys (arbitrary constants of this application).
MIGRATION_LOCK = 0x1F5_0001
LOCK_SEQUENCE_LOCK = 0x1F5_0002
BRAKE_LOCK = 0x1F5_0003
CONNECT_TIMEOUT = 10
# How long a request waits for a pooled connection before it is told to retry.
CHECKOUT_TIMEOUT = 5.0
# A pooled connection unused for longer is checked with a round trip (_Checkout).
RECHECK_SECONDS = 1.0


def where(url: str) -> str:
    """host:port/database of a connection URL: what an error may show of it."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    try:
        port = parts.port or 5432
    except ValueError:
        port = 5432
    return f"{host}:{port}/{parts.path.lstrip('/')}"


def unavailable(url: str, exc: Exception, name: str = "LFS_DATABASE_URL") -> DatabaseError:
    """One line naming `name` (the setting or option that gave `url`) and where it points."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DatabaseError(f"{name}: PostgreSQL at {where(url)} failed: {reason}")


def migrate(conn: psycopg.Connection) -> None:
    """Bring the schema to this server's version inside `conn`'s transaction,
    under an advisory lock held to its end: of servers starting together one
    migrates, the others find the work done. A newer schema is refused."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    if row is None:
        conn.execute("INSERT INTO schema_version (version) VALUES (0)")
    version = row[0] if row else 0
    if version > len(MIGRATIONS):
        raise DatabaseError(too_new(version))
    for migration in MIGRATIONS[version:]:
        for statement in statements(migration.postgresql):
            conn.execute(statement)  # type: ignore[call-overload]
    conn.execute("UPDATE schema_version SET version = %s", (len(MIGRATIONS),))


class _Checkout:
    """The pool's check of a connection before it is handed out.

    A connection the server closed (a restart, a failover, a terminated
    backend) has its last words waiting on the socket (an error, the end of
    the stream), while an idle working one has nothing to read: looking
    costs no round trip, so a busy server checks every checkout that way.
    A connection that sat in the pool for more than RECHECK_SECONDS is also
    asked an empty query, which finds a peer gone without a word.
    """

    def __init__(self) -> None:
        self._idle_since: WeakKeyDictionary[psycopg.Connection, float] = WeakKeyDictionary()

    def used(self, conn: psycopg.Connection) -> None:
        """`conn` answered just now (it is new, or on its way back to the pool)."""
        self._idle_since[conn] = time.monotonic()

    def check(self, conn: psycopg.Connection) -> None:
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN)
        if poller.poll(0):
            conn.close()  # so that the pool drops it and opens another
            raise psycopg.OperationalError("the server closed the connection")
        if time.monotonic() - self._idle_since.get(conn, 0.0) > RECHECK_SECONDS:
            ConnectionPool.check_connection(conn)


class PostgresDatabase:
    def __init__(self, url: str, password: str = "", *, pool_size: int = 8) -> None:
        """`url` holds no password (settings.py takes it out); `password` may be empty."""
        self._url = url
        self._kwargs: dict[str, object] = {"connect_timeout": CONNECT_TIMEOUT}
        if password:
            self._kwargs["password"] = password
        self._migrate()
        # check: a connection the server dropped (a restart, a failover) is
        # replaced at checkout instead of failing a request; the pool reconnects
        # in the background, so requests succeed again once the server is back.
        self._checkout = checkout = _Checkout()
        self.pool = ConnectionPool(
            url,
            kwargs={**self._kwargs, "autocommit": True},
            min_size=1,
            max_size=max(1, pool_size),
            timeout=CHECKOUT_TIMEOUT,
            configure=checkout.used,
            check=checkout.check,
            open=False,
        )
        self.pool.open()

    def close(self) -> None:
        self.pool.close()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """One pooled connection, each statement its own transaction. A
        connection that fails or none to be had is DatabaseUnavailable."""
        try:
            with self.pool.connection() as conn:
                try:
                    yield conn
                finally:
                    self._checkout.used(conn)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise DatabaseUnavailable(str(unavailable(self._url, exc))) from None

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        """One pooled connection in a transaction: BEGIN, COMMIT when the body
        returns, ROLLBACK on any failure."""
        with self.connection() as conn, conn.transaction():
            yield conn

    def _migrate(self) -> None:
        try:
            with psycopg.connect(self._url, **self._kwargs) as conn:  # type: ignore[arg-type]
                migrate(conn)
        except psycopg.Error as exc:
            raise unavailable(self._url, exc) from None

    def schema_version(self) -> int:
        row = self._one("SELECT version FROM schema_version")
        assert row is not None
        return row[0]

    def _one(self, query: str, params: Sequence[object] = ()) -> tuple | None:
        with self.connection() as conn:
            return conn.execute(query, params).fetchone()  # type: ignore[call-overload]

    def _all(self, query: str, params: Sequence[object] = ()) -> list[tuple]:
        with self.connection() as conn:
            return conn.execute(query, params).fetchall()  # type: ignore[call-overload]

    def _run(self, query: str, params: Sequence[object] = ()) -> int:
        """One statement that returns no rows; the number of rows it changed."""
        with self.connection() as conn:
            return conn.execute(query, params).rowcount  # type: ignore[call-overload]

    # users

    @staticmethod
    def _user_id(conn: psycopg.Connection, name: str) -> int:
        row = conn.execute("SELECT id FROM users WHERE name = %s", (name,)).fetchone()
        if row is None:
            raise DatabaseError(f"no such user: {name}")
        return row[0]

    _USER_SELECT = "SELECT id, uid, name, password_hash, is_admin, created_at FROM users"

    def get_user(self, name: str) -> User | None:
        row = self._one(f"{self._USER_SELECT} WHERE name = %s", (name,))
        return User(row[0], row[1], row[2], row[3], bool(row[4]), row[5]) if row else None

    def list_users(self) -> list[User]:
        rows = self._all(f"{self._USER_SELECT} ORDER BY name")
        return [User(r[0], r[1], r[2], r[3], bool(r[4]), r[5]) for r in rows]

    def add_user(self, name: str, password_hash: str | None, is_admin: bool) -> User:
        try:
            row = self._one(
                "INSERT INTO users (uid, name, password_hash, is_admin, created_at) "
                "VALUES (%s, %s, %s, %s, %s) RETURNING id, uid, name, password_hash, is_admin, "
                "created_at",
                (secrets.token_hex(16), name, password_hash, int(is_admin), int(time.time())),
            )
        except errors.UniqueViolation:
            raise DatabaseError(f"user already exists: {name}") from None
        assert row is not None
        return User(row[0], row[1], row[2], row[3], bool(row[4]), row[5])

    def _update_user(self, name: str, column: str, value: object) -> None:
        if self._run(f"UPDATE users SET {column} = %s WHERE name = %s", (value, name)) == 0:
            raise DatabaseError(f"no such user: {name}")

    def set_password(self, name: str, password_hash: str | None) -> None:
        self._update_user(name, "password_hash", password_hash)

    def set_admin(self, name: str, is_admin: bool) -> None:
        self._update_user(name, "is_admin", int(is_admin))

    def remove_user(self, name: str) -> None:
        if self._run("DELETE FROM users WHERE name = %s", (name,)) == 0:
            raise DatabaseError(f"no such user: {name}")

    # access tokens

    def add_token(
        self, user: str, token_id: str, secret_hash: str, note: str, expires_at: int | None
    ) -> AccessToken:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO tokens (id, user_id, secret_hash, note, created_at, expires_at) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (
                    token_id,
                    self._user_id(conn, user),
                    secret_hash,
                    note,
                    int(time.time()),
                    expires_at,
                ),
            )
        token = self.get_token(token_id)
        assert token is not None
        return token

    _TOKEN_SELECT = (
        "SELECT t.id, u.name, t.secret_hash, t.note, t.created_at, t.expires_at, t.last_used_at "
        "FROM tokens t JOIN users u ON u.id = t.user_id"
    )

    def get_token(self, token_id: str) -> AccessToken | None:
        row = self._one(f"{self._TOKEN_SELECT} WHERE t.id = %s", (token_id,))
        return AccessToken(*row) if row else None

    def list_tokens(self, user: str | None = None) -> list[AccessToken]:
        with self.transaction() as conn:
            if user is None:
                query = f"{self._TOKEN_SELECT} ORDER BY u.name, t.created_at"
                rows = conn.execute(query).fetchall()  # type: ignore[call-overload]
            else:
                query = f"{self._TOKEN_SELECT} WHERE u.id = %s ORDER BY t.created_at"
                rows = conn.execute(  # type: ignore[call-overload]
                    query, (self._user_id(conn, user),)
                ).fetchall()
        return [AccessToken(*row) for row in rows]

    def revoke_token(self, token_id: str) -> None:
        if self._run("DELETE FROM tokens WHERE id = %s", (token_id,)) == 0:
            raise DatabaseError(f"no such token: {token_id}")

    def touch_token(self, token_id: str, when: int) -> None:
        self._run("UPDATE tokens SET last_used_at = %s WHERE id = %s", (when, token_id))

    # grants

    def set_grant(self, user: str, pattern: str, right: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO grants (user_id, pattern, access) VALUES (%s, %s, %s) "
                "ON CONFLICT (user_id, pattern) DO UPDATE SET access = excluded.access",
                (self._user_id(conn, user), pattern, right),
            )

    def remove_grant(self, user: str, pattern: str) -> None:
        with self.transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM grants WHERE user_id = %s AND pattern = %s",
                (self._user_id(conn, user), pattern),
            )
            if cursor.rowcount == 0:
                raise DatabaseError(f"{user} has no grant on {pattern}")

    def list_grants(self, user: str | None = None) -> list[RepoGrant]:
        query = "SELECT u.name, g.pattern, g.access FROM grants g JOIN users u ON u.id = g.user_id"
        with self.transaction() as conn:
            if user is None:
                rows = conn.execute(  # type: ignore[call-overload]
                    f"{query} ORDER BY u.name, g.pattern"
                ).fetchall()
            else:
                rows = conn.execute(  # type: ignore[call-overload]
                    f"{query} WHERE u.id = %s ORDER BY g.pattern", (self._user_id(conn, user),)
                ).fetchall()
        return [RepoGrant(*row) for row in rows]

    def user_grants(self, user_id: int) -> list[tuple[str, str]]:
        rows = self._all("SELECT pattern, access FROM grants WHERE user_id = %s", (user_id,))
        return [(row[0], row[1]) for row in rows]

    # authentication failure counters (shared by all workers of all replicas)

    def failures(self, keys: list[str], now: float) -> dict[str, int]:
        rows = self._all(
            "SELECT key, count FROM auth_failures WHERE key = ANY(%s) AND reset_at > %s",
            (list(keys), now),
        )
        return {row[0]: row[1] for row in rows}

    def add_failure(self, keys: list[str], now: float, window: float) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM auth_failures WHERE reset_at <= %s", (now,))
            for key in keys:
                conn.execute(
                    "INSERT INTO auth_failures (key, count, reset_at) VALUES (%s, 1, %s) "
                    "ON CONFLICT (key) DO UPDATE SET count = auth_failures.count + 1",
                    (key, now + window),
                )

    def reserve_failure(
        self, limits: dict[str, int], now: float, window: float, waived: frozenset[str]
    ) -> set[str]:
        """The keys (of `limits`: key -> limit) at their limit; unless one not
        in `waived` is among them, one failure is counted under every key.
        Reservers take turns (an advisory lock held to COMMIT), so parallel
        attempts cannot all pass the check."""
        with self.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (BRAKE_LOCK,))
            conn.execute("DELETE FROM auth_failures WHERE reset_at <= %s", (now,))
            rows = conn.execute(
                "SELECT key, count FROM auth_failures WHERE key = ANY(%s)", (list(limits),)
            ).fetchall()
            counts = {row[0]: row[1] for row in rows}
            over = {key for key, limit in limits.items() if counts.get(key, 0) >= limit}
            if over <= waived:
                for key in limits:
                    conn.execute(
                        "INSERT INTO auth_failures (key, count, reset_at) VALUES (%s, 1, %s) "
                        "ON CONFLICT (key) DO UPDATE SET count = auth_failures.count + 1",
                        (key, now + window),
                    )
        return over

    def forgive_failure(self, keys: list[str], now: float) -> None:
        """Take back one failure counted under each key (the attempt succeeded)."""
        self._run(
            "UPDATE auth_failures SET count = count - 1 "
            "WHERE key = ANY(%s) AND count > 0 AND reset_at > %s",
            (list(keys), now),
        )

    def last_login(self, user_id: int, network: str) -> float | None:
        row = self._one(
            "SELECT seen_at FROM good_logins WHERE user_id = %s AND network = %s",
            (user_id, network),
        )
        return row[0] if row else None

    def remember_login(self, user_id: int, network: str, when: float, forget_before: float) -> None:
        """Record a good login of `user_id` from `network`; forget those before `forget_before`."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM good_logins WHERE seen_at < %s", (forget_before,))
            # From users, so a user removed meanwhile leaves nothing (and no error).
            conn.execute(
                "INSERT INTO good_logins (user_id, network, seen_at) "
                "SELECT id, %s, %s FROM users WHERE id = %s "
                "ON CONFLICT (user_id, network) DO UPDATE SET seen_at = excluded.seen_at",
                (network, when, user_id),
            )

    # file locks

    _LOCK_COLUMNS = "id, repo, path, owner, owner_uid, locked_at, seq"
    _LOCK_SELECT = f"SELECT {_LOCK_COLUMNS} FROM locks"

    def create_lock(
        self, lock_id: str, repo: str, path: str, owner: str, locked_at: int, *, owner_uid: str
    ) -> tuple[Lock, bool]:
        """(the new lock, True), or (the lock already on that path, False).

        Creators take turns (an advisory lock held to COMMIT), so sequence
        numbers commit in order and a reader's cursor never passes a lock
        that commits later with a smaller number. UNIQUE (repo, path) decides
        between racing writers; the loser answers with the winner's lock, or
        tries again should that lock be gone already."""
        for _ in range(5):
            with self.transaction() as conn:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_SEQUENCE_LOCK,))
                row = conn.execute(
                    "INSERT INTO locks (id, repo, path, owner, owner_uid, locked_at, seq) "
                    "VALUES (%s, %s, %s, %s, %s, %s, nextval('lock_seq')) "
                    "ON CONFLICT (repo, path) DO NOTHING RETURNING seq",
                    (lock_id, repo, path, owner, owner_uid, locked_at),
                ).fetchone()
                if row is not None:
                    return Lock(lock_id, repo, path, owner, owner_uid, locked_at, row[0]), True
                held = conn.execute(
                    f"{self._LOCK_SELECT} WHERE repo = %s AND path = %s",  # type: ignore[call-overload]
                    (repo, path),
                ).fetchone()
            if held is not None:
                return Lock(*held), False
        raise DatabaseError(f"could not lock {path!r} in {repo}: try again")

    def get_lock(self, repo: str, lock_id: str) -> Lock | None:
        row = self._one(f"{self._LOCK_SELECT} WHERE repo = %s AND id = %s", (repo, lock_id))
        return Lock(*row) if row else None

    def list_locks(
        self,
        repo: str,
        *,
        path: str | None = None,
        lock_id: str | None = None,
        after_seq: int = 0,
        limit: int | None = None,
    ) -> list[Lock]:
        """Locks of `repo` with seq > after_seq in seq order, at most `limit` of them."""
        query = f"{self._LOCK_SELECT} WHERE repo = %s AND seq > %s"
        params: list[object] = [repo, after_seq]
        if path is not None:
            query += " AND path = %s"
            params.append(path)
        if lock_id is not None:
            query += " AND id = %s"
            params.append(lock_id)
        query += " ORDER BY seq"
        if limit is not None:
            query += " LIMIT %s"
            params.append(limit)
        return [Lock(*row) for row in self._all(query, params)]

    def delete_lock(self, repo: str, lock_id: str) -> Lock | None:
        """Remove a lock; the removed lock, or None when there was none."""
        row = self._one(
            f"DELETE FROM locks WHERE repo = %s AND id = %s RETURNING {self._LOCK_COLUMNS}",
            (repo, lock_id),
        )
        return Lock(*row) if row else None

    # the object index

    def object_sizes(self, repo: str, oids: Sequence[str]) -> dict[str, int]:
        """The oids go as one array literal: psycopg would adapt a list element
        by element in Python, the batch's one cost per object. Stored oids
        are hex, so an oid that is not alphanumeric (the only kind that could
        upset the literal) is not looked up: it is not there."""
        wanted = [oid for oid in oids if oid.isalnum()]
        if not wanted:
            return {}
        rows = self._all(
            "SELECT oid, size FROM objects WHERE repo = %s AND oid = ANY(%s::text[])",
            (repo, "{" + ",".join(wanted) + "}"),
        )
        return {row[0]: row[1] for row in rows}

    def add_objects(self, objects: Sequence[IndexedObject]) -> None:
        """One statement for all the rows (atomic, one round trip)."""
        if not objects:
            return
        self._run(
            "INSERT INTO objects (repo, oid, size, stored_at) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[]) "
            "ON CONFLICT (repo, oid) DO NOTHING",
            (
                [o.repo for o in objects],
                [o.oid for o in objects],
                [o.size for o in objects],
                [o.stored_at for o in objects],
            ),
        )

    def repo_usage(self) -> list[RepoUsage]:
        rows = self._all(
            "SELECT repo, COUNT(*), SUM(size)::BIGINT, MAX(stored_at) FROM objects "
            "GROUP BY repo ORDER BY repo",
            (),
        )
        return [RepoUsage(*row) for row in rows]

    def list_objects(
        self, *, repo: str | None = None, after: tuple[str, str] = ("", ""), limit: int = 1000
    ) -> list[IndexedObject]:
        select = "SELECT repo, oid, size, stored_at FROM objects"
        if repo is None:
            rows = self._all(
                f"{select} WHERE (oid, repo) > (%s, %s) ORDER BY oid, repo LIMIT %s",
                (*after, limit),
            )
        else:
            rows = self._all(
                f"{select} WHERE repo = %s AND oid > %s ORDER BY oid LIMIT %s",
                (repo, after[0], limit),
            )
        return [IndexedObject(*row) for row in rows]

    def remove_objects(self, oid: str, repos: Sequence[str]) -> None:
        self._run("DELETE FROM objects WHERE oid = %s AND repo = ANY(%s)", (oid, list(repos)))

    def upgrade_done(self, name: str) -> bool:
        return self._one("SELECT 1 FROM upgrades WHERE name = %s", (name,)) is not None

    def shared_key(self, name: str, candidate: str) -> str:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO server_keys (name, value) VALUES (%s, %s) "
                "ON CONFLICT (name) DO NOTHING",
                (name, candidate),
            )
            row = conn.execute("SELECT value FROM server_keys WHERE name = %s", (name,)).fetchone()
        assert row is not None
        return row[0]

    def mark_upgrade_done(self, name: str, when: int) -> None:
        self._run(
            "INSERT INTO upgrades (name, done_at) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
            (name, when),
        )
