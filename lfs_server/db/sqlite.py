"""SQLite backend: one file in the data dir, WAL mode, one connection per thread.

WAL lets every gunicorn worker read while one writes. Writers queue on an
flock of the database's folder (held from BEGIN IMMEDIATE to COMMIT), polled
with sleeps of at most FLOCK_MAX_SLEEP; SQLite's own `busy_timeout` polls
with sleeps of up to 100 ms, which made the tail of every upload.
`busy_timeout` still covers writers that do not take the flock. A writer
waits at most WRITE_LOCK_TIMEOUT for all of them together, then fails with
DatabaseUnavailable (a retryable answer): a stalled holder in another
process must not block every writer, and gunicorn never kills a request
thread that waits. The schema is versioned with
`PRAGMA user_version` and migrated in order at open, under an immediate
transaction so two workers starting together do not both migrate.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

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
from lfs_server.db.migrations import MIGRATIONS as SHARED_MIGRATIONS
from lfs_server.db.migrations import statements, too_new

# The SQLite side of the shared history, one script per version.
MIGRATIONS: list[str] = [migration.sqlite for migration in SHARED_MIGRATIONS]

# Seconds a writer waits for the write lock before it gives up (SQLite's busy_timeout too).
WRITE_LOCK_TIMEOUT = 10.0
# Polling the flock: the first sleep, doubled up to the last (seconds).
FLOCK_FIRST_SLEEP = 0.0002
FLOCK_MAX_SLEEP = 0.002


def busy() -> DatabaseUnavailable:
    return DatabaseUnavailable(
        "LFS_DATA_DIR: another writer held the database's write lock "
        f"for over {WRITE_LOCK_TIMEOUT:g} s"
    )


def flock_by(fd: int, deadline: float) -> None:
    """Take LOCK_EX on `fd` before time.monotonic() reaches `deadline`, or raise busy()."""
    pause = FLOCK_FIRST_SLEEP
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                raise busy() from None
            time.sleep(min(pause, left))
            pause = min(pause * 2, FLOCK_MAX_SLEEP)


class SQLiteDatabase:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._writers = threading.Lock()
        self._migrate()

    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=WRITE_LOCK_TIMEOUT, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {int(WRITE_LOCK_TIMEOUT * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            # The WAL is fsynced at every commit: an acknowledged grant, token or lock
            # survives a power loss (NORMAL could lose the last commits).
            conn.execute("PRAGMA synchronous = FULL")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close this thread's connection (others close with their threads)."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE .. COMMIT; on any failure, of the body or of COMMIT itself,
        the write lock is released before the original error propagates."""
        with self._write_lock(), self._immediate() as conn:
            yield conn

    @contextmanager
    def _immediate(self) -> Iterator[sqlite3.Connection]:
        """The transaction itself, for a caller that holds the write lock."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            self._abort(conn)
            raise

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        """One writer at a time: this process's threads, then every process of the folder.

        Both waits together end at WRITE_LOCK_TIMEOUT, with DatabaseUnavailable.
        """
        deadline = time.monotonic() + WRITE_LOCK_TIMEOUT
        if not self._writers.acquire(timeout=WRITE_LOCK_TIMEOUT):
            raise busy()
        try:
            fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                flock_by(fd, deadline)
                yield
            finally:
                os.close(fd)  # releases the flock
        finally:
            self._writers.release()

    def _abort(self, conn: sqlite3.Connection) -> None:
        """Roll back; should that fail too, drop the connection (closing rolls back).

        A connection left inside BEGIN IMMEDIATE would hold the database's
        write lock, and every writer of every worker would fail from then on.
        """
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            self._local.conn = None
            with suppress(sqlite3.Error):
                conn.close()

    def _migrate(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Under the write lock as a whole: switching a new database to WAL
        # needs it alone, and a worker doing so while another one migrates
        # would otherwise deadlock in SQLite ("database is locked" at once).
        with self._write_lock():
            self.conn.execute("PRAGMA journal_mode = WAL")
            with self._immediate() as conn:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > len(MIGRATIONS):
                    raise DatabaseError(too_new(version))
                for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                    for statement in statements(script):
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {number}")

    def schema_version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    # users

    def _user_id(self, name: str) -> int:
        row = self.conn.execute("SELECT id FROM users WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise DatabaseError(f"no such user: {name}")
        return row[0]

    _USER_SELECT = "SELECT id, uid, name, password_hash, is_admin, created_at FROM users"

    def get_user(self, name: str) -> User | None:
        row = self.conn.execute(f"{self._USER_SELECT} WHERE name = ?", (name,)).fetchone()
        return User(row[0], row[1], row[2], row[3], bool(row[4]), row[5]) if row else None

    def list_users(self) -> list[User]:
        rows = self.conn.execute(f"{self._USER_SELECT} ORDER BY name")
        return [User(r[0], r[1], r[2], r[3], bool(r[4]), r[5]) for r in rows]

    def add_user(self, name: str, password_hash: str | None, is_admin: bool) -> User:
        try:
            with self.transaction() as conn:
                conn.execute(
                    "INSERT INTO users (uid, name, password_hash, is_admin, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (secrets.token_hex(16), name, password_hash, int(is_admin), int(time.time())),
                )
        except sqlite3.IntegrityError:
            raise DatabaseError(f"user already exists: {name}") from None
        user = self.get_user(name)
        assert user is not None
        return user

    def _update_user(self, name: str, column: str, value: object) -> None:
        with self.transaction() as conn:
            cursor = conn.execute(f"UPDATE users SET {column} = ? WHERE name = ?", (value, name))
            if cursor.rowcount == 0:
                raise DatabaseError(f"no such user: {name}")

    def set_password(self, name: str, password_hash: str | None) -> None:
        self._update_user(name, "password_hash", password_hash)

    def set_admin(self, name: str, is_admin: bool) -> None:
        self._update_user(name, "is_admin", int(is_admin))

    def remove_user(self, name: str) -> None:
        with self.transaction() as conn:
            if conn.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 0:
                raise DatabaseError(f"no such user: {name}")

    # access tokens

    def add_token(
        self, user: str, token_id: str, secret_hash: str, note: str, expires_at: int | None
    ) -> AccessToken:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO tokens (id, user_id, secret_hash, note, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (token_id, self._user_id(user), secret_hash, note, int(time.time()), expires_at),
            )
        token = self.get_token(token_id)
        assert token is not None
        return token

    _TOKEN_SELECT = (
        "SELECT t.id, u.name, t.secret_hash, t.note, t.created_at, t.expires_at, t.last_used_at "
        "FROM tokens t JOIN users u ON u.id = t.user_id"
    )

    def get_token(self, token_id: str) -> AccessToken | None:
        row = self.conn.execute(f"{self._TOKEN_SELECT} WHERE t.id = ?", (token_id,)).fetchone()
        return AccessToken(*row) if row else None

    def list_tokens(self, user: str | None = None) -> list[AccessToken]:
        if user is None:
            rows = self.conn.execute(f"{self._TOKEN_SELECT} ORDER BY u.name, t.created_at")
        else:
            rows = self.conn.execute(
                f"{self._TOKEN_SELECT} WHERE u.id = ? ORDER BY t.created_at",
                (self._user_id(user),),
            )
        return [AccessToken(*row) for row in rows]

    def revoke_token(self, token_id: str) -> None:
        with self.transaction() as conn:
            if conn.execute("DELETE FROM tokens WHERE id = ?", (token_id,)).rowcount == 0:
                raise DatabaseError(f"no such token: {token_id}")

    def touch_token(self, token_id: str, when: int) -> None:
        self.conn.execute("UPDATE tokens SET last_used_at = ? WHERE id = ?", (when, token_id))

    # grants

    def set_grant(self, user: str, pattern: str, right: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO grants (user_id, pattern, access) VALUES (?, ?, ?) "
                "ON CONFLICT (user_id, pattern) DO UPDATE SET access = excluded.access",
                (self._user_id(user), pattern, right),
            )

    def remove_grant(self, user: str, pattern: str) -> None:
        with self.transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM grants WHERE user_id = ? AND pattern = ?",
                (self._user_id(user), pattern),
            )
            if cursor.rowcount == 0:
                raise DatabaseError(f"{user} has no grant on {pattern}")

    def list_grants(self, user: str | None = None) -> list[RepoGrant]:
        query = "SELECT u.name, g.pattern, g.access FROM grants g JOIN users u ON u.id = g.user_id"
        if user is None:
            rows = self.conn.execute(f"{query} ORDER BY u.name, g.pattern")
        else:
            rows = self.conn.execute(
                f"{query} WHERE u.id = ? ORDER BY g.pattern", (self._user_id(user),)
            )
        return [RepoGrant(*row) for row in rows]

    def user_grants(self, user_id: int) -> list[tuple[str, str]]:
        rows = self.conn.execute("SELECT pattern, access FROM grants WHERE user_id = ?", (user_id,))
        return [(row[0], row[1]) for row in rows]

    # authentication failure counters (shared by all workers)

    def failures(self, keys: list[str], now: float) -> dict[str, int]:
        marks = ",".join("?" * len(keys))
        rows = self.conn.execute(
            f"SELECT key, count FROM auth_failures WHERE key IN ({marks}) AND reset_at > ?",
            (*keys, now),
        )
        return dict(rows.fetchall())

    def add_failure(self, keys: list[str], now: float, window: float) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM auth_failures WHERE reset_at <= ?", (now,))
            for key in keys:
                conn.execute(
                    "INSERT INTO auth_failures (key, count, reset_at) VALUES (?, 1, ?) "
                    "ON CONFLICT (key) DO UPDATE SET count = count + 1",
                    (key, now + window),
                )

    def reserve_failure(
        self, limits: dict[str, int], now: float, window: float, waived: frozenset[str]
    ) -> set[str]:
        """The keys (of `limits`: key -> limit) at their limit; unless one not
        in `waived` is among them, one failure is counted under every key, in
        the same transaction: parallel attempts cannot all pass the check."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM auth_failures WHERE reset_at <= ?", (now,))
            marks = ",".join("?" * len(limits))
            counts = dict(
                conn.execute(
                    f"SELECT key, count FROM auth_failures WHERE key IN ({marks})", list(limits)
                ).fetchall()
            )
            over = {key for key, limit in limits.items() if counts.get(key, 0) >= limit}
            if over <= waived:
                for key in limits:
                    conn.execute(
                        "INSERT INTO auth_failures (key, count, reset_at) VALUES (?, 1, ?) "
                        "ON CONFLICT (key) DO UPDATE SET count = count + 1",
                        (key, now + window),
                    )
        return over

    def forgive_failure(self, keys: list[str], now: float) -> None:
        """Take back one failure counted under each key (the attempt succeeded)."""
        marks = ",".join("?" * len(keys))
        with self.transaction() as conn:
            conn.execute(
                f"UPDATE auth_failures SET count = count - 1 "
                f"WHERE key IN ({marks}) AND count > 0 AND reset_at > ?",
                (*keys, now),
            )

    def last_login(self, user_id: int, network: str) -> float | None:
        row = self.conn.execute(
            "SELECT seen_at FROM good_logins WHERE user_id = ? AND network = ?",
            (user_id, network),
        ).fetchone()
        return row[0] if row else None

    def remember_login(self, user_id: int, network: str, when: float, forget_before: float) -> None:
        """Record a good login of `user_id` from `network`; forget those before `forget_before`."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM good_logins WHERE seen_at < ?", (forget_before,))
            # From users, so a user removed meanwhile leaves nothing (and no error).
            conn.execute(
                "INSERT INTO good_logins (user_id, network, seen_at) "
                "SELECT id, ?, ? FROM users WHERE id = ? "
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

        UNIQUE (repo, path) decides between racing writers: the loser's insert
        fails (rolling back its sequence number too) and it answers with the
        winner's lock, or tries again should that lock be gone already."""
        for _ in range(5):
            try:
                with self.transaction() as conn:
                    seq = conn.execute(
                        "UPDATE lock_sequence SET last = last + 1 RETURNING last"
                    ).fetchall()[0][0]
                    conn.execute(
                        f"INSERT INTO locks ({self._LOCK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (lock_id, repo, path, owner, owner_uid, locked_at, seq),
                    )
                return Lock(lock_id, repo, path, owner, owner_uid, locked_at, seq), True
            except sqlite3.IntegrityError:
                row = self.conn.execute(
                    f"{self._LOCK_SELECT} WHERE repo = ? AND path = ?", (repo, path)
                ).fetchone()
                if row is not None:
                    return Lock(*row), False
        raise DatabaseError(f"could not lock {path!r} in {repo}: try again")

    def get_lock(self, repo: str, lock_id: str) -> Lock | None:
        row = self.conn.execute(
            f"{self._LOCK_SELECT} WHERE repo = ? AND id = ?", (repo, lock_id)
        ).fetchone()
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
        query = f"{self._LOCK_SELECT} WHERE repo = ? AND seq > ?"
        params: list[object] = [repo, after_seq]
        if path is not None:
            query += " AND path = ?"
            params.append(path)
        if lock_id is not None:
            query += " AND id = ?"
            params.append(lock_id)
        query += " ORDER BY seq"
        if limit is not None:
            query += " LIMIT ?"
            params.append(limit)
        return [Lock(*row) for row in self.conn.execute(query, params)]

    def delete_lock(self, repo: str, lock_id: str) -> Lock | None:
        """Remove a lock; the removed lock, or None when there was none."""
        with self.transaction() as conn:
            rows = conn.execute(
                f"DELETE FROM locks WHERE repo = ? AND id = ? RETURNING {self._LOCK_COLUMNS}",
                (repo, lock_id),
            ).fetchall()
        return Lock(*rows[0]) if rows else None

    # the object index

    def object_sizes(self, repo: str, oids: Sequence[str]) -> dict[str, int]:
        if not oids:
            return {}
        marks = ",".join("?" * len(oids))
        rows = self.conn.execute(
            f"SELECT oid, size FROM objects WHERE repo = ? AND oid IN ({marks})", (repo, *oids)
        )
        return dict(rows.fetchall())

    def add_objects(self, objects: Sequence[IndexedObject]) -> None:
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO objects (repo, oid, size, stored_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (repo, oid) DO NOTHING",
                [(o.repo, o.oid, o.size, o.stored_at) for o in objects],
            )

    def list_objects(
        self, *, repo: str | None = None, after: tuple[str, str] = ("", ""), limit: int = 1000
    ) -> list[IndexedObject]:
        select = "SELECT repo, oid, size, stored_at FROM objects"
        if repo is None:
            rows = self.conn.execute(
                f"{select} WHERE (oid, repo) > (?, ?) ORDER BY oid, repo LIMIT ?", (*after, limit)
            )
        else:
            rows = self.conn.execute(
                f"{select} WHERE repo = ? AND oid > ? ORDER BY oid LIMIT ?",
                (repo, after[0], limit),
            )
        return [IndexedObject(*row) for row in rows]

    def repo_usage(self) -> list[RepoUsage]:
        rows = self.conn.execute(
            "SELECT repo, COUNT(*), SUM(size), MAX(stored_at) FROM objects GROUP BY repo ORDER BY repo"
        )
        return [RepoUsage(*row) for row in rows]

    def remove_objects(self, oid: str, repos: Sequence[str]) -> None:
        with self.transaction() as conn:
            conn.executemany(
                "DELETE FROM objects WHERE repo = ? AND oid = ?", [(repo, oid) for repo in repos]
            )

    def upgrade_done(self, name: str) -> bool:
        row = self.conn.execute("SELECT 1 FROM upgrades WHERE name = ?", (name,)).fetchone()
        return row is not None

    def shared_key(self, name: str, candidate: str) -> str:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO server_keys (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                (name, candidate),
            )
            return conn.execute("SELECT value FROM server_keys WHERE name = ?", (name,)).fetchone()[
                0
            ]

    def mark_upgrade_done(self, name: str, when: int) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO upgrades (name, done_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                (name, when),
            )
