"""The one place that picks the store backend from the settings (LFS_STORE)."""

from __future__ import annotations

from lfs_server.settings import Settings, SettingsError
from lfs_server.store.base import ObjectStore
from lfs_server.store.local import LocalStore


def open_store(settings: Settings) -> ObjectStore:
    if settings.store == "local":
        return LocalStore(settings.objects_dir, settings.upload_tmp_dir)
    raise SettingsError(f"LFS_STORE: no such store: {settings.store!r}")
