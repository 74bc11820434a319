"""The embedded database behind a narrow interface (see base.Database)."""

from lfs_server.db.base import (
    AccessToken,
    Database,
    DatabaseError,
    IndexedObject,
    Lock,
    RepoGrant,
    User,
)
from lfs_server.db.sqlite import SQLiteDatabase

__all__ = [
    "AccessToken",
    "Database",
    "DatabaseError",
    "IndexedObject",
    "Lock",
    "RepoGrant",
    "SQLiteDatabase",
    "User",
]
