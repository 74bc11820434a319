"""The Flask app factory."""

from __future__ import annotations

import os
from typing import Any

from flask import Flask
from flask.json.provider import DefaultJSONProvider

from lfs_server import apidoc, batch, health, locks, metrics, transfer, web
from lfs_server.accounts import CredentialChecker
from lfs_server.db import open_database
from lfs_server.durable import fsync_new_dirs, make_dirs
from lfs_server.errors import register_error_handlers
from lfs_server.jsonbody import require_json_post
from lfs_server.login_cache import LoginCache
from lfs_server.prehash import PREHASH_SOCKET_ENV
from lfs_server.services import EXTENSION, Services
from lfs_server.settings import Settings
from lfs_server.store import ObjectIndex, UploadVerifier
from lfs_server.store.factory import open_store
from lfs_server.tokens import TokenSigner, signing_key


class JSONProvider(DefaultJSONProvider):
    """Keys in the order written; a body nested too deeply for the parser is
    invalid JSON (a 422 where bodies are read), not a RecursionError (500)."""

    sort_keys = False

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app from settings (read from the environment when omitted)."""
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config["LFS_SETTINGS"] = settings
    app.json = JSONProvider(app)
    for directory in (settings.upload_tmp_dir, settings.objects_dir):
        fsync_new_dirs(make_dirs(directory))
    # The launcher's Prehasher (see prehash.py), when there is one.
    prehash_socket = os.environ.get(PREHASH_SOCKET_ENV) or None
    db = open_database(settings)
    store = open_store(settings)
    verifier = UploadVerifier(prehash_socket, fsync_large=store.keeps_upload_file)
    key = signing_key(settings, db)
    app.extensions[EXTENSION] = Services(
        settings=settings,
        db=db,
        store=store,
        verifier=verifier,
        objects=ObjectIndex(store, db, verifier),
        signer=TokenSigner(key, settings.previous_secret_keys),
        credentials=CredentialChecker(db),
        logins=LoginCache(),
    )
    for blueprint in (health.bp, apidoc.bp, transfer.bp, batch.bp, locks.bp):
        app.register_blueprint(blueprint)
    metrics.init_app(app)
    web.init_app(app, key)
    app.before_request(require_json_post)
    register_error_handlers(app)
    return app
