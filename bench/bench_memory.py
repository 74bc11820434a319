"""Benchmark 5: memory of the whole server process tree, idle and during transfers.

The tree is every process under the launcher (`lfs-server serve`, the
Prehasher, the nginx master and workers, the gunicorn master and workers).
Its PSS (each shared page counted once in all, from /proc/<pid>/smaps_rollup)
is what it costs the machine; the sum of RSS, which counts a shared page once
per process, is reported beside it. Both are sampled every 50 ms while one
object is uploaded (curl -T) and downloaded (curl GET), for a small object
and one 16 times larger (1 GiB in a full run): the peak must stay under the
limit and must not grow with the object (ratio = small peak / large peak,
~1.0). Idle is measured once the server answers, after a warm-up of a few
requests (the first batch, upload and download load code each worker then
keeps), and again after the transfers.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from common import (
    Context,
    GiB,
    MemorySampler,
    MiB,
    Row,
    action,
    by_role,
    curl_get,
    curl_put,
    forget,
    human_size,
    log,
    make_object,
    remove,
    roles_text,
    start_stack,
    tree_memory,
)

REPO = "bench/memory"
LIMIT = 100 * MiB  # PSS of the whole tree, idle and during transfers
GROWTH_LIMIT = 0.10  # the large object's peak may exceed the small one's by 10 % at most
WARM_UP_SIZE = 64 * 1024


def _mib(size: int) -> str:
    return f"{size / MiB:.1f} MiB"


def _transfer(stack, src: Path, oid: str, size: int, root: int) -> dict[str, MemorySampler]:
    """Upload then download the object, each under its own sampler."""
    samplers = {}
    href, headers = action(stack, REPO, "upload", oid, size)
    with MemorySampler(root) as samplers["upload"]:
        curl_put(href, src, headers)
    href, headers = action(stack, REPO, "download", oid, size)
    with MemorySampler(root) as samplers["download"]:
        curl_get(href, size, headers)
    return samplers


def run(ctx: Context) -> list[Row]:
    small, large = (16 * MiB, 256 * MiB) if ctx.quick else (64 * MiB, GiB)
    work = ctx.scratch("memory")
    peaks: dict[str, dict[int, MemorySampler]] = {"upload": {}, "download": {}}
    details: dict[str, object] = {}
    try:
        with start_stack(work / "stack") as stack:
            assert stack.proc is not None
            root = stack.proc.pid
            src = work / "object.bin"
            # Warm-up: every worker's first requests import and build what it keeps.
            oid = make_object(src, WARM_UP_SIZE)
            for _ in range(4):
                _transfer(stack, src, oid, WARM_UP_SIZE, root)
                forget(stack, REPO, oid)
            time.sleep(1.0)
            idle = tree_memory(root)
            details["idle"] = by_role(idle)
            for size in (small, large):
                log(f"memory: writing a {human_size(size)} object")
                oid = make_object(src, size)
                samplers = _transfer(stack, src, oid, size, root)
                for op, sampler in samplers.items():
                    peaks[op][size] = sampler
                    details[f"{op}_{size}"] = sampler.raw()
                forget(stack, REPO, oid)
            remove(src)
            time.sleep(1.0)
            after = tree_memory(root)
            details["idle_after"] = by_role(after)
    finally:
        remove(work)
    ctx.raw["memory"] = details
    idle_pss = sum(proc.pss for proc in idle)
    after_pss = sum(proc.pss for proc in after)
    rows = [
        Row(
            "5",
            "PSS of the server tree, idle (after a warm-up)",
            f"{_mib(idle_pss)} (RSS sum {_mib(sum(proc.rss for proc in idle))})",
            f"limit {_mib(LIMIT)}",
            None,
            f"<= {_mib(LIMIT)}",
            idle_pss <= LIMIT,
            notes=f"{len(idle)} processes, PSS MiB: {roles_text(idle)}; "
            f"idle after the transfers {_mib(after_pss)}",
        )
    ]
    for op in ("upload", "download"):
        a, b = peaks[op][small], peaks[op][large]
        growth = (b.peak_pss - a.peak_pss) / a.peak_pss
        rows.append(
            Row(
                "5" + ("a" if op == "upload" else "b"),
                f"Peak PSS of the server tree during {op} of {human_size(large)} "
                f"(vs {human_size(small)})",
                f"{_mib(b.peak_pss)} (RSS sum {_mib(b.peak_rss)})",
                f"{_mib(a.peak_pss)} ({human_size(small)})",
                a.peak_pss / b.peak_pss,
                f"<= {_mib(LIMIT)}, no growth (<= +{GROWTH_LIMIT:.0%})",
                b.peak_pss <= LIMIT and growth <= GROWTH_LIMIT,
                notes=f"growth {(b.peak_pss - a.peak_pss) / MiB:+.1f} MiB; at the peak, "
                f"PSS MiB: {roles_text(b.at_peak)}",
            )
        )
    return rows


if __name__ == "__main__":
    import run_all

    sys.exit(run_all.main(["--only", "memory", *sys.argv[1:]]))
