"""Where a Batch API request's CPU goes.

    .venv/bin/python bench/profile_batch.py [--rev HEAD] [--duration 10]

For a 100-object and a 1-object download batch under wrk (-t2 -c8), this
prints req/s, p50/p99 and the CPU milliseconds per request spent by gunicorn
(Flask), nginx and wrk, read from /proc and getrusage: on a 2-core machine
1000 req/s leaves 2 ms of CPU per request for everything.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import bench_batch
from common import (
    KiB,
    Stack,
    batch,
    curl_put,
    log,
    make_object,
    remove,
    start_stack,
    tree_pids,
    wait_for_quiet,
)

REPO = "bench/batch"
_HZ = os.sysconf("SC_CLK_TCK")


def cpu_by_kind(pids: list[int]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        kind = (
            "gunicorn" if b"gunicorn" in cmdline else "nginx" if b"nginx" in cmdline else "launcher"
        )
        totals[kind] = totals.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / _HZ
    return totals


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(stack: Stack, work: Path, duration: int, label: str) -> None:
    objects = []
    for i in range(100):
        path = work / f"small-{i}.bin"
        oid = make_object(path, 4 * KiB)
        objects.append((oid, 4 * KiB))
        (obj,) = batch(stack, REPO, "upload", [(oid, 4 * KiB)])
        curl_put(obj["actions"]["upload"]["href"], path, obj["actions"]["upload"]["header"])
        path.unlink()
    url = f"{stack.lfs_base(REPO)}/objects/batch"
    assert stack.proc is not None
    for count in (100, 1):
        body = json.dumps(
            {
                "operation": "download",
                "objects": [{"oid": o, "size": s} for o, s in objects[:count]],
            }
        )
        wait_for_quiet(30)
        pids = tree_pids(stack.proc.pid)
        before, wrk_before, started = cpu_by_kind(pids), children_cpu(), time.monotonic()
        result = bench_batch.wrk(url, body, work / "profile.lua", duration)
        wall = time.monotonic() - started
        after, wrk_cpu = cpu_by_kind(pids), children_cpu() - wrk_before
        requests = result["requests"]
        per = {kind: 1000 * (after[kind] - before.get(kind, 0.0)) / requests for kind in after}
        per["wrk"] = 1000 * wrk_cpu / requests
        used = (sum(per.values()) * requests / 1000) / wall
        print(
            f"{label:<10} {count:>3}-object batch: {result['rps']:6.0f} req/s, "
            f"p50 {result['p50_us'] / 1000:5.1f} ms, p99 {result['p99_us'] / 1000:5.1f} ms | "
            "CPU ms/request: "
            + ", ".join(f"{k} {v:.2f}" for k, v in per.items() if k != "launcher")
            + f" | these processes used {used:.2f} of {os.cpu_count()} cores",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", help="profile this git revision (see run_all.py --rev)")
    parser.add_argument("--duration", type=int, default=10, help="seconds of wrk per case")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="lfs-profile-batch-"))
    work.chmod(0o711)  # the server's own user must reach its data dir inside
    cwd = Path.cwd()
    env_before = os.environ.get("PYTHONPATH")
    try:
        import run_all

        source = run_all.select_source(args.rev, work)
        log(f"server measured: {source}")
        with start_stack(work / "stack") as stack:
            measure(stack, work, args.duration, "server")
    finally:
        os.chdir(cwd)
        if env_before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = env_before
        remove(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
