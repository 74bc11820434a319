"""Object storage behind a narrow interface (see base.ObjectStore)."""

from lfs_server.store.base import (
    INSUFFICIENT_STORAGE,
    Action,
    CommitError,
    Links,
    ObjectStore,
    StoredItem,
    VerifiedUpload,
    is_valid_oid,
)
from lfs_server.store.index import ObjectIndex
from lfs_server.store.local import LocalStore
from lfs_server.store.verify import UploadVerifier

__all__ = [
    "INSUFFICIENT_STORAGE",
    "Action",
    "CommitError",
    "Links",
    "LocalStore",
    "ObjectIndex",
    "ObjectStore",
    "StoredItem",
    "UploadVerifier",
    "VerifiedUpload",
    "is_valid_oid",
]
