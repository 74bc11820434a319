"""What the gunicorn master imports before it forks its workers.

Every worker builds the app itself, after the fork: database connections
and pools, S3 clients, the signing key, caches and locks are never shared
between processes (a SQLite connection, a psycopg pool's threads or a
urllib3 connection cannot cross a fork), and a worker that gunicorn starts
again builds them anew. Only modules are imported here, in the master, once:
the workers inherit their pages copy-on-write instead of importing a copy
each. The backends the settings ask for (boto3 for LFS_STORE=s3, with the
S3 model it parses, psycopg for LFS_DATABASE_URL) are imported with them,
and only then.

gc.freeze() then moves everything imported out of the collector's reach, so
a collection in a worker does not write to the shared pages (which would copy
them into the worker).
"""

from __future__ import annotations

import gc
import importlib

from lfs_server.settings import Settings


def share_modules() -> None:
    """Import the app's modules (not the app) and freeze them, before any fork."""
    settings = Settings.from_env(read_key_file=False)
    importlib.import_module("lfs_server.app")
    if settings.store == "s3":
        from lfs_server.store.s3_bucket import load_models

        importlib.import_module("lfs_server.store.s3")
        load_models(settings.s3)  # botocore's S3 model, parsed once for every worker
    if settings.database_url:
        importlib.import_module("lfs_server.db.postgres")
    gc.collect()
    gc.freeze()
