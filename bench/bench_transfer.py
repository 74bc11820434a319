"""Benchmarks 1 and 2: one large object down and up, this server vs plain nginx.

Download: curl GETs the object through its signed URL (this server: nginx asks
Flask, which answers X-Accel-Redirect, then nginx sendfiles the file) and from
a plain nginx serving the very same file (a hard link) with sendfile.

Upload: curl -T PUTs the file with the batch action's headers (this server:
auth_request, body to a temp file, then Flask checks size + SHA-256, fsyncs
and links it, all before it answers) and to a plain nginx whose dav module
writes the body to a file, which the benchmark then fsyncs: the durable
limit, PUT + fsync, is the reference; the PUT alone (not durable) is shown
beside it. The stored object is deleted and dirty pages flushed (sync)
before every run, so each run stores the object anew.

Runs alternate between the two servers (ABBA...) so slow drifts of the shared
machine hit both alike; the medians are compared.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time

from common import (
    Context,
    GiB,
    MiB,
    PlainNginx,
    Row,
    action,
    children_cpu_seconds,
    cpu_by_role,
    curl_get_timings,
    curl_put,
    forget,
    human_size,
    log,
    make_object,
    median,
    remove,
    start_stack,
    stored_path,
    tree_cpu_seconds,
    upload,
)

REPO = "bench/transfer"
DOWNLOAD_GOAL = 0.95
# Upload: against plain nginx writing the body and then fsyncing it (the
# durable limit), and against plain nginx without the fsync.
DURABLE_UPLOAD_GOAL = 0.95
UPLOAD_GOAL = 0.85


def _order(i: int) -> tuple[str, str]:
    return ("ours", "plain") if i % 2 == 0 else ("plain", "ours")


def _mibps(size: int, seconds: float) -> float:
    return size / MiB / seconds


def _paired(ours: list[float], ref: list[float]) -> str:
    """Ratios of the runs made back to back: robust to slow drifts of a shared machine."""
    pairs = sorted(r / o for o, r in zip(ours, ref, strict=True))
    return f"back-to-back pairs: median {median(pairs):.2f}, range {pairs[0]:.2f}-{pairs[-1]:.2f}"


def run(ctx: Context) -> list[Row]:
    size = 64 * MiB if ctx.quick else GiB
    runs = ctx.runs or (3 if ctx.quick else 5)
    work = ctx.scratch("transfer")
    src = work / "object.bin"
    files_dir, put_dir = work / "plain-files", work / "plain-put"
    files_dir.mkdir()
    log(f"transfer: writing a {human_size(size)} object")
    oid = make_object(src, size)
    rows: list[Row] = []
    try:
        with (
            start_stack(work / "stack") as stack,
            PlainNginx(work / "plain", files_dir, put_dir) as plain,
        ):
            rows.append(_download(ctx, stack, plain, src, oid, size, runs))
            rows.extend(_upload(ctx, stack, plain, src, oid, size, runs))
    finally:
        remove(work)
    return rows


def _download(ctx, stack, plain, src, oid, size, runs) -> Row:
    upload(stack, REPO, src, oid, size)
    stored = stored_path(stack, oid)
    os.link(stored, plain.files_dir / "object.bin")  # the very same file for both
    href, headers = action(stack, REPO, "download", oid, size)
    os.sync()  # no writeback of the test data competes with the runs
    plain_url = f"{plain.url}/files/object.bin"
    fetch = {
        "ours": lambda: curl_get_timings(href, size, headers),
        "plain": lambda: curl_get_timings(plain_url, size),
    }
    for who in ("ours", "plain"):  # warm-up, untimed
        fetch[who]()
    times: dict[str, list[float]] = {"ours": [], "plain": []}
    ttfb: dict[str, list[float]] = {"ours": [], "plain": []}
    log(f"download: {runs} runs each of {human_size(size)}")
    for i in range(runs):
        for who in _order(i):
            total, first_byte = fetch[who]()
            times[who].append(total)
            ttfb[who].append(first_byte)
    ours, ref = median(times["ours"]), median(times["plain"])
    ratio = ref / ours  # = ours throughput / plain throughput
    # What the token check adds is paid before the first byte; after it both
    # servers run the same nginx sendfile path.
    added_ms = 1000 * (median(ttfb["ours"]) - median(ttfb["plain"]))
    ctx.raw["download"] = {"size": size, "seconds": times, "time_to_first_byte": ttfb}
    remove(plain.files_dir / "object.bin")
    return Row(
        "1",
        f"Download {human_size(size)} via signed URL (curl, median of {runs})",
        f"{_mibps(size, ours):.0f} MiB/s ({ours:.3f} s)",
        f"{_mibps(size, ref):.0f} MiB/s ({ref:.3f} s)",
        ratio,
        f">= {DOWNLOAD_GOAL}",
        ratio >= DOWNLOAD_GOAL,
        notes=_paired(times["ours"], times["plain"])
        + f"; token check adds {added_ms:.1f} ms before the first byte",
    )


def _upload(ctx, stack, plain, src, oid, size, runs) -> list[Row]:
    stored = stored_path(stack, oid)
    put_file = plain.put_dir / "object.bin"
    put_url = f"{plain.url}/put/object.bin"
    times: dict[str, list[float]] = {"ours": [], "plain": [], "plain_fsync": [], "plain_sha256": []}
    # Core-seconds per upload: the server's process tree and curl (and, for
    # the reference, the benchmark's own fsync call).
    cpu: dict[str, list[float]] = {"ours": [], "plain": []}
    roles: dict[str, list[float]] = {}  # this server's CPU per upload, per process role

    def cpu_now(root: int) -> float:
        return tree_cpu_seconds(root) + children_cpu_seconds() + time.process_time()

    def ours() -> None:
        href, headers = action(stack, REPO, "upload", oid, size)
        before, by_role = cpu_now(stack.proc.pid), cpu_by_role(stack.proc.pid)
        times["ours"].append(curl_put(href, src, headers))
        cpu["ours"].append(cpu_now(stack.proc.pid) - before)
        for role, seconds in cpu_by_role(stack.proc.pid).items():
            roles.setdefault(role, []).append(seconds - by_role.get(role, 0.0))
        if not stored.is_file() or stored.stat().st_size != size:
            raise RuntimeError("upload to this server did not store the object")

    def reference() -> None:
        # Plain nginx writes the body; the fsync right after it is what a
        # durable plain upload must add before it may be acknowledged.
        before = cpu_now(plain.proc.pid)
        times["plain"].append(curl_put(put_url, src, expect=(201, 204)))
        with open(put_file, "rb") as written:
            started = time.perf_counter()
            os.fsync(written.fileno())
            times["plain_fsync"].append(time.perf_counter() - started)
            cpu["plain"].append(cpu_now(plain.proc.pid) - before)
            # Diagnostic, outside the reference: what the hash alone costs.
            started = time.perf_counter()
            digest = hashlib.file_digest(written, "sha256").hexdigest()
            times["plain_sha256"].append(time.perf_counter() - started)
        if digest != oid:
            raise RuntimeError("plain nginx stored different bytes")

    log(f"upload: {runs} runs each of {human_size(size)}")
    for i in range(runs):
        for who in _order(i):
            forget(stack, REPO, oid)
            remove(put_file)
            os.sync()  # every run starts with no dirty pages
            (ours if who == "ours" else reference)()
    forget(stack, REPO, oid)
    remove(put_file)
    times["plain_durable"] = [
        put + flush for put, flush in zip(times["plain"], times["plain_fsync"], strict=True)
    ]
    ctx.raw["upload"] = {"size": size, "seconds": times, "cpu_seconds": cpu, "cpu_roles": roles}
    med = {key: median(values) for key, values in times.items()}
    cpu_ours, cpu_plain = median(cpu["ours"]), median(cpu["plain"])
    prehasher = median(roles.get("prehasher", [0.0]))
    durable_ratio = med["plain_durable"] / med["ours"]
    ratio = med["plain"] / med["ours"]
    modelled = med["plain_durable"] + med["plain_sha256"]
    return [
        Row(
            "2",
            f"Upload {human_size(size)}, durable (curl -T; SHA-256 check and fsync before "
            f"the answer; median of {runs}) vs plain nginx PUT + fsync",
            f"{_mibps(size, med['ours']):.0f} MiB/s ({med['ours']:.3f} s)",
            f"{_mibps(size, med['plain_durable']):.0f} MiB/s ({med['plain_durable']:.3f} s)",
            durable_ratio,
            f">= {DURABLE_UPLOAD_GOAL}",
            durable_ratio >= DURABLE_UPLOAD_GOAL,
            notes=_paired(times["ours"], times["plain_durable"])
            + f"; the fsync after the PUT {med['plain_fsync']:.3f} s; CPU per upload "
            f"(server tree + curl) {cpu_ours:.2f} core-s vs {cpu_plain:.2f} core-s, "
            f"of which the Prehasher (SHA-256 and writeback) {prehasher:.2f}",
        ),
        Row(
            "2a",
            f"Upload {human_size(size)} vs plain nginx PUT without fsync (not durable)",
            f"{_mibps(size, med['ours']):.0f} MiB/s ({med['ours']:.3f} s)",
            f"{_mibps(size, med['plain']):.0f} MiB/s ({med['plain']:.3f} s)",
            ratio,
            f">= {UPLOAD_GOAL}",
            ratio >= UPLOAD_GOAL,
            notes=_paired(times["ours"], times["plain"]),
        ),
        Row(
            "2b",
            "  diagnostic: reference PUT + fsync + SHA-256, one after the other",
            f"{_mibps(size, med['ours']):.0f} MiB/s ({med['ours']:.3f} s)",
            f"{_mibps(size, modelled):.0f} MiB/s ({modelled:.3f} s)",
            modelled / med["ours"],
            notes=f"SHA-256 alone {med['plain_sha256']:.3f} s",
        ),
    ]


if __name__ == "__main__":
    import run_all

    sys.exit(run_all.main(["--only", "transfer", *sys.argv[1:]]))
