"""The app's services, reached through one typed accessor.

create_app builds them once; request code asks `services()` instead of
looking up untyped `current_app.extensions` entries by name.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from lfs_server.accounts import CredentialChecker
from lfs_server.db import Database
from lfs_server.login_cache import LoginCache
from lfs_server.settings import Settings
from lfs_server.store import ObjectIndex, ObjectStore, UploadVerifier
from lfs_server.tokens import TokenSigner

EXTENSION = "lfs"


@dataclass(frozen=True)
class Services:
    settings: Settings
    db: Database
    store: ObjectStore
    verifier: UploadVerifier
    objects: ObjectIndex
    signer: TokenSigner
    credentials: CredentialChecker
    logins: LoginCache


def services(app: Flask | None = None) -> Services:
    """The services of `app`, or of the app handling the current request."""
    return (current_app if app is None else app).extensions[EXTENSION]
