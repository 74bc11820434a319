"""Object storage behind a narrow interface (see base.ObjectStore)."""

from lfs_server.store.base import INSUFFICIENT_STORAGE, CommitError, ObjectStore, is_valid_oid
from lfs_server.store.local import LocalStore

__all__ = ["INSUFFICIENT_STORAGE", "CommitError", "LocalStore", "ObjectStore", "is_valid_oid"]
