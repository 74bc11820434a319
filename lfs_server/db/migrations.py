"""The one schema history of both backends: migration N brings a database
from version N-1 to N. Where SQLite and PostgreSQL differ (identity columns,
floating point types, the lock sequence, random identities) a migration has
a script per backend; otherwise both run the same SQL. PostgreSQL's key
columns are COLLATE "C": byte order, as SQLite sorts, whatever the
database's locale (pages of the index and of users sort the same way)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    sqlite: str
    postgres: str = ""

    @property
    def postgresql(self) -> str:
        return self.postgres or self.sqlite


MIGRATIONS: list[Migration] = [
    # 1: accounts, access tokens, grants, authentication failure counters
    Migration(
        sqlite="""
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        password_hash TEXT,
        is_admin INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        secret_hash TEXT NOT NULL,
        note TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL,
        expires_at INTEGER,
        last_used_at INTEGER
    );
    CREATE INDEX tokens_user ON tokens(user_id);
    CREATE TABLE grants (
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        pattern TEXT NOT NULL,
        access TEXT NOT NULL CHECK (access IN ('read', 'write', 'admin')),
        PRIMARY KEY (user_id, pattern)
    );
    CREATE TABLE auth_failures (
        key TEXT PRIMARY KEY,
        count INTEGER NOT NULL,
        reset_at REAL NOT NULL
    );
    """,
        postgres="""
    CREATE TABLE users (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name TEXT COLLATE "C" NOT NULL UNIQUE,
        password_hash TEXT,
        is_admin INTEGER NOT NULL DEFAULT 0,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        secret_hash TEXT NOT NULL,
        note TEXT NOT NULL DEFAULT '',
        created_at BIGINT NOT NULL,
        expires_at BIGINT,
        last_used_at BIGINT
    );
    CREATE INDEX tokens_user ON tokens(user_id);
    CREATE TABLE grants (
        user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        pattern TEXT COLLATE "C" NOT NULL,
        access TEXT NOT NULL CHECK (access IN ('read', 'write', 'admin')),
        PRIMARY KEY (user_id, pattern)
    );
    CREATE TABLE auth_failures (
        key TEXT PRIMARY KEY,
        count INTEGER NOT NULL,
        reset_at DOUBLE PRECISION NOT NULL
    );
    """,
    ),
    # 2: file locks, unique per (repository, path). `seq` orders pages; it comes
    # from a sequence that only ever grows (SQLite: the lock_sequence row;
    # PostgreSQL: the SEQUENCE lock_seq), so a deleted lock's number is never
    # reused and a cursor (the last seq seen) stays valid across deletes.
    Migration(
        sqlite="""
    CREATE TABLE locks (
        id TEXT PRIMARY KEY,
        repo TEXT NOT NULL,
        path TEXT NOT NULL,
        owner TEXT NOT NULL,
        locked_at INTEGER NOT NULL,
        seq INTEGER NOT NULL UNIQUE,
        UNIQUE (repo, path)
    );
    CREATE INDEX locks_repo_seq ON locks(repo, seq);
    CREATE TABLE lock_sequence (
        last INTEGER NOT NULL
    );
    INSERT INTO lock_sequence (last) VALUES (0);
    """,
        postgres="""
    CREATE TABLE locks (
        id TEXT PRIMARY KEY,
        repo TEXT COLLATE "C" NOT NULL,
        path TEXT COLLATE "C" NOT NULL,
        owner TEXT NOT NULL,
        locked_at BIGINT NOT NULL,
        seq BIGINT NOT NULL UNIQUE,
        UNIQUE (repo, path)
    );
    CREATE INDEX locks_repo_seq ON locks(repo, seq);
    CREATE SEQUENCE lock_seq AS BIGINT;
    """,
    ),
    # 3: the client networks each user logged in from lately (exempt from the
    # login brake's per-user cap; see throttle.py), gone with the user.
    Migration(
        sqlite="""
    CREATE TABLE good_logins (
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        network TEXT NOT NULL,
        seen_at REAL NOT NULL,
        PRIMARY KEY (user_id, network)
    );
    """,
        postgres="""
    CREATE TABLE good_logins (
        user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        network TEXT NOT NULL,
        seen_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (user_id, network)
    );
    """,
    ),
    # 4: identities. users.id is no identity (SQLite may hand a removed user's
    # id to the next new user), so each user gets `uid`, 128 random bits in
    # hex that no later user shares; locks record their owner's uid. Existing
    # locks take the uid of their owner name's current user; the anonymous
    # owner's identity is 'anonymous' (auth.ANONYMOUS_UID); a lock whose owner
    # no longer exists gets '', which is nobody's. (ADD COLUMN cannot be
    # UNIQUE in SQLite: the unique index says it.)
    Migration(
        sqlite="""
    ALTER TABLE users ADD COLUMN uid TEXT NOT NULL DEFAULT '';
    UPDATE users SET uid = lower(hex(randomblob(16)));
    CREATE UNIQUE INDEX users_uid ON users(uid);
    ALTER TABLE locks ADD COLUMN owner_uid TEXT NOT NULL DEFAULT '';
    UPDATE locks SET owner_uid = CASE
        WHEN owner = 'anonymous' THEN 'anonymous'
        ELSE COALESCE((SELECT uid FROM users WHERE users.name = locks.owner), '')
    END;
    """,
        postgres="""
    ALTER TABLE users ADD COLUMN uid TEXT NOT NULL DEFAULT '';
    UPDATE users SET uid = md5(gen_random_uuid()::text || random()::text);
    CREATE UNIQUE INDEX users_uid ON users(uid);
    ALTER TABLE locks ADD COLUMN owner_uid TEXT NOT NULL DEFAULT '';
    UPDATE locks SET owner_uid = CASE
        WHEN owner = 'anonymous' THEN 'anonymous'
        ELSE COALESCE((SELECT uid FROM users WHERE users.name = locks.owner), '')
    END;
    """,
    ),
    # 5: the object index: which repository may see which stored oid (objects
    # are stored once per oid), its size and since when. The primary key
    # answers a batch (one repository, many oids); objects_oid walks the
    # whole index in oid order (fsck) and finds every repository of an oid.
    # `upgrades` records one-time data upgrades done (upgrade.py).
    Migration(
        sqlite="""
    CREATE TABLE objects (
        repo TEXT NOT NULL,
        oid TEXT NOT NULL,
        size BIGINT NOT NULL,
        stored_at BIGINT NOT NULL,
        PRIMARY KEY (repo, oid)
    );
    CREATE INDEX objects_oid ON objects(oid, repo);
    CREATE TABLE upgrades (
        name TEXT PRIMARY KEY,
        done_at BIGINT NOT NULL
    );
    """,
        postgres="""
    CREATE TABLE objects (
        repo TEXT COLLATE "C" NOT NULL,
        oid TEXT COLLATE "C" NOT NULL,
        size BIGINT NOT NULL,
        stored_at BIGINT NOT NULL,
        PRIMARY KEY (repo, oid)
    );
    CREATE INDEX objects_oid ON objects(oid, repo);
    CREATE TABLE upgrades (
        name TEXT PRIMARY KEY,
        done_at BIGINT NOT NULL
    );
    """,
    ),
    # 6: keys every server on a shared database must agree on (the transfer
    # token signing key when LFS_SECRET_KEY is unset), generated once.
    Migration(
        sqlite="""
    CREATE TABLE server_keys (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """
    ),
]


def statements(script: str) -> list[str]:
    """A script's statements (none of them holds a ';' of its own)."""
    return [statement for statement in script.split(";") if statement.strip()]


def too_new(version: int) -> str:
    return (
        f"the database schema (version {version}) is newer than this server "
        f"(version {len(MIGRATIONS)}): upgrade the server"
    )
