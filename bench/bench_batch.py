"""Benchmark 3: the Batch API under load (wrk), this server vs a static answer.

100 small objects are uploaded first, then wrk (2 threads, 8 connections,
--latency) POSTs one 100-object download batch over and over. The reference
is a plain nginx answering the same POST with a static file holding a real
batch answer of the same size: what this machine's loopback, nginx and wrk
manage when no work is done per request. A 1-object batch shows the fixed
cost per request apart from the cost per object.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys

from common import (
    LFS_MEDIA_TYPE,
    Context,
    KiB,
    PlainNginx,
    Row,
    batch,
    curl_put,
    log,
    make_object,
    remove,
    start_stack,
    tree_cpu_seconds,
)

REPO = "bench/batch"
OBJECTS = 100
RPS_GOAL = 1000.0
P99_GOAL_MS = 25.0
AUTH_RATIO_GOAL = 0.8
BENCH_USER, BENCH_PASSWORD = "bench-reader", "bench-password-1"


def basic_auth(stack) -> str:
    """A user with read access to REPO, as a Basic Authorization header value."""
    stack.add_user(BENCH_USER, BENCH_PASSWORD, (REPO, "read"))
    return "Basic " + base64.b64encode(f"{BENCH_USER}:{BENCH_PASSWORD}".encode()).decode()


LUA = """
wrk.method = "POST"
wrk.body = [==[%(body)s]==]
wrk.headers["Content-Type"] = "%(media)s"
wrk.headers["Accept"] = "%(media)s"
%(auth)s

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH-JSON {\\"requests\\":%%d,\\"duration_us\\":%%d,\\"bytes\\":%%d," ..
    "\\"p50_us\\":%%d,\\"p90_us\\":%%d,\\"p99_us\\":%%d,\\"max_us\\":%%d," ..
    "\\"connect\\":%%d,\\"read\\":%%d,\\"write\\":%%d,\\"status\\":%%d,\\"timeout\\":%%d}\\n",
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def wrk(url: str, body: str, script_path, duration: int, auth: str = "") -> dict:
    """wrk POSTing `body`; `auth` is an Authorization header value, if any."""
    header = f'wrk.headers["Authorization"] = "{auth}"' if auth else ""
    script_path.write_text(LUA % {"body": body, "media": LFS_MEDIA_TYPE, "auth": header})
    cmd = ["wrk", "-t2", "-c8", f"-d{duration}s", "--latency", "-s", str(script_path), url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr.strip()}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("BENCH-JSON "))
    result = json.loads(line.removeprefix("BENCH-JSON "))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["stdout"] = done.stdout
    errors = sum(result[k] for k in ("connect", "read", "write", "status", "timeout"))
    if errors:
        raise RuntimeError(f"wrk saw {errors} errors or non-2xx answers:\n{done.stdout}")
    return result


def run(ctx: Context) -> list[Row]:
    duration = 3 if ctx.quick else 15
    work = ctx.scratch("batch")
    try:
        with start_stack(work / "stack") as stack:
            log(f"batch: uploading {OBJECTS} small objects")
            objects = []
            for i in range(OBJECTS):
                path = work / f"small-{i}.bin"
                oid = make_object(path, 4 * KiB)
                objects.append((oid, 4 * KiB))
                (obj,) = batch(stack, REPO, "upload", [(oid, 4 * KiB)])
                up = obj["actions"]["upload"]
                curl_put(up["href"], path, up["header"])
                path.unlink()
            body = json.dumps(
                {"operation": "download", "objects": [{"oid": o, "size": s} for o, s in objects]}
            )
            answer = stack.batch(REPO, json.loads(body))
            answer.raise_for_status()
            got = answer.json()["objects"]
            if len(got) != OBJECTS or not all("download" in o.get("actions", {}) for o in got):
                raise RuntimeError("the 100-object batch does not offer 100 downloads")
            static = work / "batch-answer.json"
            static.write_bytes(answer.content)
            one_body = json.dumps(
                {"operation": "download", "objects": [{"oid": objects[0][0], "size": 4 * KiB}]}
            )
            url = f"{stack.lfs_base(REPO)}/objects/batch"
            with PlainNginx(work / "plain", work, work / "put", json_file=static) as plain:
                log(f"batch: wrk {duration} s against plain nginx (static answer)")
                ref = wrk(f"{plain.url}/static-json", body, work / "ref.lua", duration)
                log(f"batch: wrk {duration} s against this server, {OBJECTS} objects")
                assert stack.proc is not None
                cpu_before = tree_cpu_seconds(stack.proc.pid)
                ours = wrk(url, body, work / "ours.lua", duration)
                cpu_per_answer = (tree_cpu_seconds(stack.proc.pid) - cpu_before) / ours["requests"]
                log(f"batch: wrk {duration} s against this server, 1 object")
                one = wrk(url, one_body, work / "one.lua", duration)
                log(f"batch: wrk {duration} s against this server, {OBJECTS} objects, Basic auth")
                basic = wrk(url, body, work / "basic.lua", duration, auth=basic_auth(stack))
    finally:
        remove(work)
    ctx.raw["batch"] = {
        "answer_bytes": len(answer.content),
        "request_bytes": len(body),
        "ours_100": {k: v for k, v in ours.items() if k != "stdout"},
        "cpu_seconds_per_answer_100": cpu_per_answer,
        "ours_1": {k: v for k, v in one.items() if k != "stdout"},
        "plain_static": {k: v for k, v in ref.items() if k != "stdout"},
        "ours_100_basic_auth": {k: v for k, v in basic.items() if k != "stdout"},
        "wrk_stdout_ours_100": ours["stdout"],
    }

    def lat(r: dict) -> str:
        return f"p50 {r['p50_us'] / 1000:.1f} ms, p99 {r['p99_us'] / 1000:.1f} ms"

    def lat90(r: dict) -> str:
        return (
            f"p50 {r['p50_us'] / 1000:.1f} ms, p90 {r['p90_us'] / 1000:.1f} ms, "
            f"p99 {r['p99_us'] / 1000:.1f} ms"
        )

    p99 = ours["p99_us"] / 1000
    return [
        Row(
            "3",
            f"Batch API, {OBJECTS}-object download batch: req/s (wrk -t2 -c8 -d{duration}s)",
            f"{ours['rps']:.0f} req/s",
            f"{ref['rps']:.0f} req/s (static answer)",
            ours["rps"] / ref["rps"],
            f">= {RPS_GOAL:.0f} req/s",
            ours["rps"] >= RPS_GOAL,
            notes=f"answer {len(answer.content) // 1024} KiB; {ours['rps'] * OBJECTS:.0f} objects/s",
        ),
        Row(
            "3",
            f"Batch API, {OBJECTS}-object download batch: latency",
            lat90(ours),
            lat90(ref),
            ref["p99_us"] / ours["p99_us"],
            f"p99 < {P99_GOAL_MS:.0f} ms",
            p99 < P99_GOAL_MS,
            notes=f"ratio = reference p99 / our p99; CPU per answer (nginx + gunicorn) "
            f"{cpu_per_answer * 1000:.2f} ms",
        ),
        Row(
            "3b",
            f"Batch API, {OBJECTS}-object batch with Basic auth (password) vs anonymous",
            f"{basic['rps']:.0f} req/s, {lat(basic)}",
            f"{ours['rps']:.0f} req/s (anonymous)",
            basic["rps"] / ours["rps"],
            f">= {AUTH_RATIO_GOAL}",
            basic["rps"] / ours["rps"] >= AUTH_RATIO_GOAL,
            notes="a user with a read grant; the password check is cached per worker",
        ),
        Row(
            "3a",
            "  diagnostic: 1-object download batch (fixed cost per request)",
            f"{one['rps']:.0f} req/s, {lat(one)}",
            f"{ref['rps']:.0f} req/s",
            one["rps"] / ref["rps"],
        ),
    ]


if __name__ == "__main__":
    import run_all

    sys.exit(run_all.main(["--only", "batch", *sys.argv[1:]]))
