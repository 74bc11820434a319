"""What the server needs from its database: users, access tokens, grants,
failure counters, recent good logins, locks and the object index. The
SQLite and PostgreSQL backends implement this Protocol; nothing outside
lfs_server/db speaks SQL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class DatabaseError(Exception):
    """A request the database refuses (unknown user, duplicate name, ...)."""


class DatabaseUnavailable(Exception):
    """The database did not answer (down, failing over, out of connections): a
    request may be tried again shortly. Not a DatabaseError: no caller mistakes
    it for a refusal. The message names LFS_DATABASE_URL's host, never the URL."""


@dataclass(frozen=True)
class User:
    """`uid` is the user's identity: random, never reused, so a user removed
    and added again under the same name (or the same reused `id`) is someone
    else to everything bound to it (transfer tokens, locks)."""

    id: int
    uid: str
    name: str
    password_hash: str | None
    is_admin: bool
    created_at: int


@dataclass(frozen=True)
class AccessToken:
    id: str
    user: str
    secret_hash: str
    note: str
    created_at: int
    expires_at: int | None
    last_used_at: int | None


@dataclass(frozen=True)
class RepoGrant:
    user: str
    pattern: str
    right: str


@dataclass(frozen=True)
class Lock:
    """A file lock: `path` exactly as the client sent it, `owner` a user name
    (or the anonymous display name) and `owner_uid` that user's identity,
    `locked_at` Unix seconds, `seq` the position in the repository's
    ever-growing lock sequence (page order)."""

    id: str
    repo: str
    path: str
    owner: str
    owner_uid: str
    locked_at: int
    seq: int


@dataclass(frozen=True)
class IndexedObject:
    """A row of the object index: repository `repo` may see the stored object
    `oid` of `size` bytes, durable and verified since `stored_at` (Unix seconds)."""

    repo: str
    oid: str
    size: int
    stored_at: int


@dataclass(frozen=True)
class RepoUsage:
    """What the object index holds for one repository: `objects` rows of
    `bytes` in all, the newest stored at `last_stored_at` (Unix seconds)."""

    repo: str
    objects: int
    bytes: int
    last_stored_at: int


class Database(Protocol):
    def schema_version(self) -> int:
        """The schema's version (a cheap read: the health check's probe)."""

    def close(self) -> None:
        """Let go of the connections."""

    def get_user(self, name: str) -> User | None: ...
    def list_users(self) -> list[User]: ...
    def add_user(self, name: str, password_hash: str | None, is_admin: bool) -> User: ...
    def set_password(self, name: str, password_hash: str | None) -> None: ...
    def set_admin(self, name: str, is_admin: bool) -> None: ...
    def remove_user(self, name: str) -> None: ...

    def add_token(
        self, user: str, token_id: str, secret_hash: str, note: str, expires_at: int | None
    ) -> AccessToken: ...
    def get_token(self, token_id: str) -> AccessToken | None: ...
    def list_tokens(self, user: str | None = None) -> list[AccessToken]: ...
    def revoke_token(self, token_id: str) -> None: ...
    def touch_token(self, token_id: str, when: int) -> None: ...

    def set_grant(self, user: str, pattern: str, right: str) -> None: ...
    def remove_grant(self, user: str, pattern: str) -> None: ...
    def list_grants(self, user: str | None = None) -> list[RepoGrant]: ...
    def user_grants(self, user_id: int) -> list[tuple[str, str]]: ...

    def failures(self, keys: list[str], now: float) -> dict[str, int]: ...
    def add_failure(self, keys: list[str], now: float, window: float) -> None: ...
    def reserve_failure(
        self, limits: dict[str, int], now: float, window: float, waived: frozenset[str]
    ) -> set[str]: ...
    def forgive_failure(self, keys: list[str], now: float) -> None: ...
    def last_login(self, user_id: int, network: str) -> float | None: ...
    def remember_login(
        self, user_id: int, network: str, when: float, forget_before: float
    ) -> None: ...

    def create_lock(
        self, lock_id: str, repo: str, path: str, owner: str, locked_at: int, *, owner_uid: str
    ) -> tuple[Lock, bool]: ...
    def get_lock(self, repo: str, lock_id: str) -> Lock | None: ...
    def list_locks(
        self,
        repo: str,
        *,
        path: str | None = None,
        lock_id: str | None = None,
        after_seq: int = 0,
        limit: int | None = None,
    ) -> list[Lock]: ...
    def delete_lock(self, repo: str, lock_id: str) -> Lock | None: ...

    def object_sizes(self, repo: str, oids: Sequence[str]) -> dict[str, int]:
        """The sizes of those of `oids` that `repo` may see: one query, however many."""

    def add_objects(self, objects: Sequence[IndexedObject]) -> None:
        """Write index rows (a row that exists already stays as it is), in one transaction."""

    def list_objects(
        self, *, repo: str | None = None, after: tuple[str, str] = ("", ""), limit: int = 1000
    ) -> list[IndexedObject]:
        """Rows after (oid, repo) `after`, in (oid, repo) order: pages of the whole index."""

    def repo_usage(self) -> list[RepoUsage]:
        """Every repository the object index names, with its totals, in name order."""

    def remove_objects(self, oid: str, repos: Sequence[str]) -> None:
        """Drop the rows of `oid` for those repositories."""

    def upgrade_done(self, name: str) -> bool:
        """Whether the one-time data upgrade `name` has completed."""

    def mark_upgrade_done(self, name: str, when: int) -> None: ...

    def shared_key(self, name: str, candidate: str) -> str:
        """The key kept under `name`; `candidate` becomes it when there is none
        (of servers racing to store theirs, one wins and all get the winner's)."""
