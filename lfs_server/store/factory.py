"""The one place that picks the store backend from the settings (LFS_STORE).

The S3 store (boto3, some 20 MiB per process) is imported only when LFS_STORE=s3.
"""

from __future__ import annotations

from lfs_server.settings import Settings, SettingsError
from lfs_server.store.base import ObjectStore
from lfs_server.store.local import LocalStore


def open_store(settings: Settings) -> ObjectStore:
    if settings.store == "local":
        return LocalStore(settings.objects_dir, settings.upload_tmp_dir)
    if settings.store == "s3":
        from lfs_server.store.s3 import open_s3_store

        return open_s3_store(settings)
    raise SettingsError(f"LFS_STORE: no such store: {settings.store!r}")


def store_problem(settings: Settings) -> str:
    """What keeps the configured store from taking objects, in one line, or ""."""
    if settings.store != "s3":
        return ""
    from lfs_server.store.s3 import s3_problem

    return s3_problem(settings)
