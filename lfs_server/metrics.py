"""Prometheus metrics at `GET /metrics`, exact across gunicorn's workers.

`lfs-server serve` points PROMETHEUS_MULTIPROC_DIR at a fresh folder in its
private run dir before gunicorn starts. prometheus_client then keeps every
value in a memory-mapped file per worker process, and a scrape (whichever
worker answers it) sums the files of all workers, live or dead: counts stay
exact however requests spread over the workers, and a restarted worker loses
nothing. Without the variable (unit tests, one process) the values live in
this process.

What is counted (names as exposed; counters carry the `_total` suffix):

- `lfs_http_requests_total{endpoint,status}`: every request the app answered,
  by Flask endpoint name (a fixed set, e.g. `batch.batch`,
  `transfer.download`; `unmatched` for unknown URLs and methods) and HTTP
  status. Answers nginx gives alone (a 413 before the body, bytes it sends)
  are not app requests.
- `lfs_upload_bytes_total`: the object size of every accepted upload
  (successful commit, including an upload of an object that already existed).
- `lfs_download_bytes_total`: bytes of object data handed to nginx to send:
  the object size for a GET, the length of the range for a single-range GET;
  multi-range and unsatisfiable requests and HEAD add nothing. It counts
  what nginx was told to send, not what a client that hangs up received.
- `lfs_objects_stored_total`: objects newly stored (verified and linked); an oid
  the store already held, uploaded for another repository, is not counted.
- `lfs_upload_verify_failures_total{reason}`: uploads refused at commit because
  their `size` or `sha256` did not match the signed token.
- `lfs_batch_duration_seconds`: histogram of the app's time per batch request
  (every batch request, whatever its answer).
- `lfs_healthy{check}`: 1 when that check of `/healthz` (database, store,
  prehasher) passes, else 0, as the scrape itself finds it: the worker that
  answers runs the checks, and the most recent value of a live worker wins.
  The Prehasher lives in the launcher, outside every worker; this is how a
  dead Prehasher thread shows.
- `lfs_replica_info{replica,version}`: always 1 (the Prometheus info-metric
  way), naming the server that answered the scrape: its LFS_REPLICA_NAME
  (default: the host name) and the lfs-server version. Every other metric
  counts what this replica alone served: behind a load balancer, scrape each
  replica at its own address; this names it whatever address was scraped.
"""

from __future__ import annotations

import ipaddress
import os
import time
from importlib import metadata

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from werkzeug.datastructures import Range

from lfs_server.auth import client_address, current_user
from lfs_server.errors import LFSError
from lfs_server.health import OK, run_checks
from lfs_server.services import services

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Read once, like prometheus_client itself: it picks its value store at import.
MULTIPROCESS = bool(os.environ.get(MULTIPROC_ENV))
# The classic text format every Prometheus version reads (our names need no escaping).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BATCH_ENDPOINT = "batch.batch"
VERIFY_REASONS = ("size", "sha256")
CHALLENGE = {"WWW-Authenticate": 'Basic realm="lfs-server metrics"'}

REQUESTS = Counter(
    "lfs_http_requests",
    "Requests the app answered, by Flask endpoint and HTTP status",
    ["endpoint", "status"],
)
UPLOAD_BYTES = Counter("lfs_upload_bytes", "Object bytes of accepted uploads (committed)")
DOWNLOAD_BYTES = Counter(
    "lfs_download_bytes", "Object bytes handed to nginx to send (object size or range length)"
)
OBJECTS_STORED = Counter("lfs_objects_stored", "Objects newly stored (verified and linked)")
VERIFY_FAILURES = Counter(
    "lfs_upload_verify_failures",
    "Uploads refused at commit: size or SHA-256 did not match the token",
    ["reason"],
)
BATCH_SECONDS = Histogram(
    "lfs_batch_duration_seconds",
    "Time the app spent answering a batch request",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
HEALTHY = Gauge(
    "lfs_healthy",
    "1 when the /healthz check passes at scrape time, else 0",
    ["check"],
    multiprocess_mode="livemostrecent",
)
REPLICA = Gauge(
    "lfs_replica_info",
    "The server answering this scrape (always 1): LFS_REPLICA_NAME and the version",
    ["replica", "version"],
    multiprocess_mode="max",
)
for _reason in VERIFY_REASONS:
    VERIFY_FAILURES.labels(_reason)  # exported as 0 from the start, so rate() works

bp = Blueprint("metrics", __name__)


def init_app(app: Flask) -> None:
    """Time and count every request of `app`, and serve /metrics."""
    REPLICA.clear()  # one app per process, but tests build many: the last one names it
    REPLICA.labels(services(app).settings.replica_name, metadata.version("lfs-server")).set(1)
    app.before_request(_start_timer)
    app.after_request(_count_request)
    app.register_blueprint(bp)


def _start_timer() -> None:
    g.lfs_started = time.perf_counter()


def _count_request(response: Response) -> Response:
    endpoint = request.endpoint or "unmatched"
    REQUESTS.labels(endpoint, str(response.status_code)).inc()
    started = g.pop("lfs_started", None)
    if endpoint == BATCH_ENDPOINT and started is not None:
        BATCH_SECONDS.observe(time.perf_counter() - started)
    return response


def upload_accepted(size: int, newly_stored: bool) -> None:
    UPLOAD_BYTES.inc(size)
    if newly_stored:
        OBJECTS_STORED.inc()


def upload_verify_failed(reason: str) -> None:
    if reason in VERIFY_REASONS:
        VERIFY_FAILURES.labels(reason).inc()


def download_bytes(size: int, method: str, requested: Range | None) -> int:
    """The bytes nginx will send for a download of an object of `size` bytes."""
    if method != "GET":
        return 0
    if requested is None or requested.units != "bytes":
        return size  # no (or an unparsable) Range header: nginx sends the whole object
    if len(requested.ranges) != 1:
        return 0  # multi-range (git-lfs never asks for one): not counted
    start, stop = requested.ranges[0]  # stop is exclusive; None means to the end
    if start < 0:  # a suffix, "-N": the last N bytes, or all of a shorter object
        start = max(0, size + start)
    stop = size if stop is None else min(stop, size)
    return stop - start if start < stop else 0  # else unsatisfiable: nginx sends 416


def download_handed_over(size: int) -> None:
    DOWNLOAD_BYTES.inc(download_bytes(size, request.method, request.range))


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def check_access(mode: str) -> None:
    """LFS_METRICS: off (404), public, local (loopback peers, or admins), admin."""
    if mode == "off":
        raise LFSError(404, "not found")
    if mode == "public" or (mode == "local" and is_loopback(client_address())):
        return
    try:
        user = current_user()
    except LFSError as exc:  # wrong credentials: challenge scrapers and browsers too
        if exc.status == 401:
            exc.headers = {**exc.headers, **CHALLENGE}
        raise
    if user is None:
        raise LFSError(401, "metrics need the credentials of a server admin", CHALLENGE)
    if not user.is_admin:
        raise LFSError(403, f"{user.name} is not a server admin")


@bp.get("/metrics")
def metrics() -> Response:
    check_access(services().settings.metrics)
    for check, state in run_checks().items():
        HEALTHY.labels(check).set(1 if state == OK else 0)
    if MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), content_type=CONTENT_TYPE)
