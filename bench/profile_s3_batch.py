"""CPU per 100-object download batch in the app itself, S3 direct against local.

    .venv/bin/python bench/profile_s3_batch.py

No server, no bucket (a direct-mode batch never calls it): the Flask test
client posts the batch; the figure is the process CPU time per batch, best
of 5 rounds. `warm` repeats one batch (its presigned URLs are reused, as in
benchmark 6b); `cold` asks for 100 objects not asked for before (more
objects than the URL cache holds, in turn), so every URL is signed.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

from flask import Flask

from lfs_server.app import create_app
from lfs_server.services import services
from lfs_server.settings import Settings
from lfs_server.store.s3_url_cache import CAPACITY

LFS = "application/vnd.git-lfs+json"
URL = "/bench/batch.git/info/lfs/objects/batch"
PER_BATCH = 100
OIDS = [f"{i:064x}" for i in range(1, CAPACITY + 2 * PER_BATCH + 1)]
S3_DIRECT = {
    "LFS_STORE": "s3",
    "LFS_S3_BUCKET": "lfs-objects",
    "LFS_S3_ENDPOINT": "http://127.0.0.1:9",
    "LFS_S3_TRANSFER": "direct",
}


def app_for(root: str, **env: str) -> Flask:
    data = tempfile.mkdtemp(dir=root)
    app = create_app(Settings.from_env({"LFS_DATA_DIR": data, "LFS_ANONYMOUS": "read", **env}))
    with app.app_context():
        for oid in OIDS:
            services().objects.record("bench/batch", oid, 4096)
    return app


def body(first: int) -> str:
    oids = OIDS[first : first + PER_BATCH]
    return json.dumps(
        {"operation": "download", "objects": [{"oid": o, "size": 4096} for o in oids]}
    )


def ms_per_batch(app: Flask, cold: bool, batches: int = 40) -> float:
    client = app.test_client()
    best, first = float("inf"), 0
    for _ in range(5):
        started = time.process_time()
        for _ in range(batches):
            if cold:
                first = (first + PER_BATCH) % (len(OIDS) - PER_BATCH)
            answer = client.post(URL, data=body(first), headers={"Accept": LFS}, content_type=LFS)
            assert answer.status_code == 200
        best = min(best, (time.process_time() - started) / batches * 1000)
    return best


def main() -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "AKIDBENCH")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench-secret")
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    with tempfile.TemporaryDirectory() as root:
        local, direct = app_for(root), app_for(root, **S3_DIRECT)
        figures = {
            "local": ms_per_batch(local, cold=False),
            "s3 direct, warm": ms_per_batch(direct, cold=False),
            "s3 direct, cold": ms_per_batch(direct, cold=True),
        }
    for name, ms in figures.items():
        print(f"{name}: {ms:.2f} ms CPU per {PER_BATCH}-object download batch")


if __name__ == "__main__":
    main()
