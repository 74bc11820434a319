"""Where a Batch API request's CPU goes, and what a leaner download path would give.

    .venv/bin/python bench/profile_batch.py [--rev HEAD] [--duration 10] [--prototype]

For a 100-object and a 1-object download batch under wrk (-t2 -c8), this
prints req/s, p50/p99 and the CPU milliseconds per request spent by gunicorn
(Flask), nginx and wrk, read from /proc and getrusage: on a 2-core machine
1000 req/s leaves 2 ms of CPU per request for everything.

--prototype also measures, in the same run, a copy of the same server with
an experimental download fast path added (the code in PROTOTYPE below:
per-object tokens byte-identical to today's, built with f-strings and
hmac.digest, os.stat on a prebuilt path, the answer assembled as JSON text).
The copy lives in the temp dir; lfs_server/ itself is never touched.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import bench_batch
from common import (
    REPO_ROOT,
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

PROTOTYPE = r"""

# ---- PROTOTYPE added by bench/profile_batch.py (a temp copy only) ----------
import hmac as _hmac  # noqa: E402
import json as _json  # noqa: E402
import os as _os  # noqa: E402
import re as _re  # noqa: E402

from lfs_server.tokens import _b64  # noqa: E402

_OID = _re.compile(r"[0-9a-f]{64}")


def _fast_download(repo, caller, objects):
    app = services()
    settings, signer, store = app.settings, app.signer, app.store
    key, header = signer._key, signer._header
    now = int(time.time())
    exp = now + settings.token_ttl
    root = f"{store._root}/{repo}.git/"
    head = ('{"repo":' + _json.dumps(repo) + ',"oid":"').encode()
    tail = (
        f',"op":"download","sub":{_json.dumps(caller.name)},"right":{_json.dumps(caller.right)},'
        f'"iat":{now},"exp":{exp}}}'
    ).encode()
    href = _json.dumps(f"{settings.public_url}/.lfs/download/")[:-1]
    end = f'"}},"expires_in":{settings.token_ttl},"expires_at":"{rfc3339(exp)}"}}}}}}'
    parts, seen = [], set()
    for oid, size in objects:
        if oid in seen:
            continue
        seen.add(oid)
        if _OID.fullmatch(oid) is None or size < 0:
            parts.append(_json.dumps(_error(oid, size, 422, "invalid oid or size")))
            continue
        try:
            stored = _os.stat(f"{root}{oid[:2]}/{oid[2:4]}/{oid}").st_size
        except FileNotFoundError:
            parts.append(_json.dumps(_error(oid, size, 404, "object does not exist")))
            continue
        if stored != size:
            parts.append(_json.dumps(_error(oid, size, 422, "size mismatch")))
            continue
        claims = head + oid.encode() + b'","size":' + str(size).encode() + tail
        signing = header + b"." + _b64(claims)
        token = (signing + b"." + _b64(_hmac.digest(key, signing, "sha256"))).decode()
        parts.append(
            f'{{"oid":"{oid}","size":{size},"authenticated":true,"actions":{{"download":'
            f'{{"href":{href}{oid}","header":{{"Authorization":"Bearer {token}{end}'
        )
    body = '{"transfer":"basic","objects":[' + ",".join(parts) + '],"hash_algo":"sha256"}'
    return Response(body, mimetype="application/vnd.git-lfs+json")


_slow_batch = batch


def _batch_with_fast_path(repo_path):
    body = request.get_json(force=True, silent=True)
    if (
        isinstance(body, dict)
        and body.get("operation") == "download"
        and body.get("hash_algo", "sha256") == "sha256"
        and body.get("transfers") in (None, ["basic"])
        and isinstance(body.get("ref"), (dict, type(None)))
    ):
        repo = repo_from_path(repo_path)
        return _fast_download(repo, require(repo, "read"), _parse_objects(body.get("objects")))
    return _slow_batch(repo_path)
"""


def make_prototype(src: Path, dest: Path) -> None:
    shutil.copytree(src, dest)
    (dest / "lfs_server" / "batch.py").open("a").write(PROTOTYPE)
    app_py = dest / "lfs_server" / "app.py"
    text = app_py.read_text()
    hook = "    register_error_handlers(app)\n"
    if hook not in text:
        raise RuntimeError("app.py changed: cannot hook the prototype in")
    app_py.write_text(
        text.replace(
            hook, hook + '    app.view_functions["batch.batch"] = batch._batch_with_fast_path\n'
        )
    )


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
    parser.add_argument(
        "--prototype", action="store_true", help="also measure the download fast-path prototype"
    )
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="lfs-profile-batch-"))
    cwd = Path.cwd()
    env_before = os.environ.get("PYTHONPATH")
    try:
        import run_all

        source = run_all.select_source(args.rev, work)
        log(f"server measured: {source}")
        variants = [("current", Path.cwd() if args.rev else None)]
        if args.prototype:
            base = Path.cwd() if args.rev else work / "tree"
            if not args.rev:
                (work / "tree").mkdir()
                for part in ("lfs_server", "nginx"):
                    shutil.copytree(REPO_ROOT / part, work / "tree" / part)
            make_prototype(base, work / "prototype")
            variants.append(("prototype", work / "prototype"))
        for label, src in variants:
            if src is not None:
                os.environ["PYTHONPATH"] = str(src)
                os.chdir(src)
            with start_stack(work / f"stack-{label}") as stack:
                measure(stack, work, args.duration, label)
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
