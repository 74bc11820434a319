"""Benchmark 5: peak memory of the whole server process tree vs object size.

The sum of RSS of every process under the launcher (`lfs-server serve`, the
nginx master and workers, the gunicorn master and workers) is sampled from
/proc every 50 ms while one object is uploaded (curl -T) and downloaded
(curl GET), for a small and a large object. The reference is the small
object: a server that streams keeps the same peak for an object 16 times
larger (ratio = small peak / large peak, ~1.0).
"""

from __future__ import annotations

import sys
import time

from common import (
    Context,
    GiB,
    MiB,
    Row,
    RssSampler,
    action,
    curl_get,
    curl_put,
    forget,
    human_size,
    log,
    make_object,
    remove,
    start_stack,
    tree_rss,
)

REPO = "bench/memory"
GROWTH_LIMIT = 0.10  # the large object's peak may exceed the small one's by 10 % at most


def run(ctx: Context) -> list[Row]:
    sizes = (16 * MiB, 256 * MiB) if ctx.quick else (256 * MiB, 4 * GiB)
    work = ctx.scratch("memory")
    peaks: dict[str, dict[int, int]] = {"upload": {}, "download": {}}
    details: dict[str, object] = {}
    try:
        with start_stack(work / "stack") as stack:
            assert stack.proc is not None
            root = stack.proc.pid
            time.sleep(1.0)
            idle, processes = tree_rss(root)
            details["idle_rss"] = idle
            details["processes"] = processes
            for size in sizes:
                src = work / "object.bin"
                log(f"memory: writing a {human_size(size)} object")
                oid = make_object(src, size)
                href, headers = action(stack, REPO, "upload", oid, size)
                with RssSampler(root) as sampler:
                    seconds = curl_put(href, src, headers)
                peaks["upload"][size] = sampler.peak
                details[f"upload_{size}"] = {
                    "seconds": seconds,
                    "samples": sampler.samples,
                    "peak": sampler.peak,
                    "processes": sampler.peak_processes,
                }
                remove(src)  # the stored object is the only copy from here on
                href, headers = action(stack, REPO, "download", oid, size)
                with RssSampler(root) as sampler:
                    seconds = curl_get(href, size, headers)
                peaks["download"][size] = sampler.peak
                details[f"download_{size}"] = {
                    "seconds": seconds,
                    "samples": sampler.samples,
                    "peak": sampler.peak,
                    "processes": sampler.peak_processes,
                }
                forget(stack, REPO, oid)
    finally:
        remove(work)
    ctx.raw["memory"] = details
    small, large = sizes
    rows = []
    for op in ("upload", "download"):
        a, b = peaks[op][small], peaks[op][large]
        growth = (b - a) / a
        rows.append(
            Row(
                "5",
                f"Peak RSS of the server tree during {op}: {human_size(large)} vs {human_size(small)}",
                f"{b / MiB:.1f} MiB ({human_size(large)})",
                f"{a / MiB:.1f} MiB ({human_size(small)})",
                a / b,
                f"no growth (<= +{GROWTH_LIMIT:.0%})",
                growth <= GROWTH_LIMIT,
                notes=f"growth {(b - a) / MiB:+.1f} MiB; idle {idle / MiB:.1f} MiB, "
                f"{processes} processes",
            )
        )
    return rows


if __name__ == "__main__":
    import run_all

    sys.exit(run_all.main(["--only", "memory", *sys.argv[1:]]))
