"""The one place that picks the store backend from the settings (LFS_STORE)."""

from __future__ import annotations

from lfs_server.settings import Settings, SettingsError
from lfs_server.store.base import ObjectStore
from lfs_server.store.local import LocalStore
from lfs_server.store.s3 import open_s3_store, s3_problem


def open_store(settings: Settings) -> ObjectStore:
    if settings.store == "local":
        return LocalStore(settings.objects_dir, settings.upload_tmp_dir)
    if settings.store == "s3":
        return open_s3_store(settings)
    raise SettingsError(f"LFS_STORE: no such store: {settings.store!r}")


def store_problem(settings: Settings) -> str:
    """What keeps the configured store from taking objects, in one line, or ""."""
    return s3_problem(settings) if settings.store == "s3" else ""
