"""The database behind a narrow interface (see base.Database): SQLite in the
data dir by default, PostgreSQL when LFS_DATABASE_URL is set."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lfs_server.db.base import (
    AccessToken,
    Database,
    DatabaseError,
    DatabaseUnavailable,
    IndexedObject,
    Lock,
    RepoGrant,
    RepoUsage,
    User,
)
from lfs_server.db.sqlite import SQLiteDatabase

if TYPE_CHECKING:
    from lfs_server.settings import Settings


def open_database(settings: Settings) -> Database:
    """The configured database, migrated to this server's schema."""
    if settings.database_url:
        from lfs_server.db.postgres import PostgresDatabase

        return PostgresDatabase(
            settings.database_url, settings.database_password, pool_size=settings.threads
        )
    return SQLiteDatabase(settings.database_path)


__all__ = [
    "AccessToken",
    "Database",
    "DatabaseError",
    "DatabaseUnavailable",
    "IndexedObject",
    "Lock",
    "RepoGrant",
    "RepoUsage",
    "SQLiteDatabase",
    "User",
    "open_database",
]
