"""Putting bytes into a LocalStore the way the upload commit does, for unit tests."""

from __future__ import annotations

import hashlib
import os

from lfs_server.store import LocalStore, UploadVerifier


def put(store: LocalStore, data: bytes, name: str | None = None) -> bool:
    """Write `data` as an upload temp file, verify it and put it; True when
    this call stored the object (False: an intact copy was there)."""
    upload = store.upload_tmp_dir / (name or os.urandom(5).hex())
    upload.write_bytes(data)
    oid = hashlib.sha256(data).hexdigest()
    try:
        with UploadVerifier().verified(upload, oid, len(data)) as verified:
            return store.put(verified)
    finally:
        upload.unlink()
