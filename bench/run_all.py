"""Run every benchmark and write bench/results.md (and the raw numbers as JSON).

    .venv/bin/python bench/run_all.py            # full run (about 5-10 minutes)
    .venv/bin/python bench/run_all.py --quick    # small sizes, a smoke run (~1 minute)
    .venv/bin/python bench/run_all.py --only transfer,batch
    .venv/bin/python bench/run_all.py --rev HEAD   # a committed snapshot, not the work tree

Each benchmark runs this server and a reference in the same run and reports
the ratio, because the machines are shared and noisy (docs/environment.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import bench_batch
import bench_git_lfs
import bench_memory
import bench_postgres
import bench_s3
import bench_transfer
from common import REPO_ROOT, Context, LoadMeter, Row, log, machine_facts, wait_for_quiet

BENCHMARKS = {
    "transfer": bench_transfer,
    "batch": bench_batch,
    "git-lfs": bench_git_lfs,
    "memory": bench_memory,
    "s3": bench_s3,
    "postgres": bench_postgres,
}
HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few runs")
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help=f"comma-separated subset of: {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="Markdown results (default bench/results.md, bench/results-quick.md with --quick)",
    )
    parser.add_argument(
        "--workdir", type=Path, help="where temp data goes (default: a new dir in $TMPDIR)"
    )
    parser.add_argument("--runs", type=int, help="timed runs per case (default 5, git-lfs 3)")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="before each benchmark wait up to this long for the shared machine to be "
        "idle (< 25%% busy over 1 s); 0 disables (default 60)",
    )
    parser.add_argument(
        "--rev",
        help="benchmark this git revision (lfs_server/ and nginx/ exported with git archive "
        "into the temp dir) instead of the working tree",
    )
    parser.add_argument(
        "--keep-going", action="store_true", help="run the other benchmarks when one fails"
    )
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in args.only if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    if args.out is None:
        args.out = HERE / ("results-quick.md" if args.quick else "results.md")
    return args


def _git(*args: str) -> str:
    """Read-only git queries (no optional locks: never even refreshes the index)."""
    done = subprocess.run(
        ["git", "--no-optional-locks", "-C", str(REPO_ROOT), *args],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def select_source(rev: str | None, workdir: Path) -> str:
    """Make the stack run `rev` (or the working tree); return a description of it."""
    if rev is None:
        try:
            head = _git("rev-parse", "--short", "HEAD")
            dirty = _git("status", "--porcelain", "--", "lfs_server", "nginx")
        except (OSError, RuntimeError):
            return "working tree"
        return f"working tree at {head}" + (" with uncommitted changes" if dirty else "")
    commit = _git("rev-parse", "--verify", f"{rev}^{{commit}}")
    src = workdir / "src"
    src.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", commit, "lfs_server", "nginx"],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
    # `python -m` and gunicorn put the current directory first on sys.path, and
    # PYTHONPATH comes before the editable install: both point at the snapshot.
    os.environ["PYTHONPATH"] = str(src)
    os.chdir(src)
    return f"commit {commit[:12]} ({rev})"


def fmt_ratio(ratio: float | None) -> str:
    return "" if ratio is None else f"{ratio:.2f}"


def fmt_met(met: bool | None) -> str:
    return "" if met is None else ("met" if met else "**MISSED**")


def render(
    rows: list[Row],
    facts: dict[str, str],
    args: argparse.Namespace,
    elapsed: float,
    failures: list[str],
    source: str,
    loads: dict[str, str],
) -> str:
    command = "bench/run_all.py" + (" --quick" if args.quick else "")
    if sorted(args.only) != sorted(BENCHMARKS):
        command += f" --only {','.join(args.only)}"
    if args.rev:
        command += f" --rev {args.rev}"
    lines = [
        "# Benchmark results",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- Command: `.venv/bin/python {command}` ({'QUICK smoke run' if args.quick else 'full run'}, "
        f"{elapsed / 60:.1f} min)",
        f"- Server measured: {source}",
        "- Machine: " + "; ".join(f"{k}: {v}" for k, v in facts.items()),
        "",
        "Every ratio compares this server with its reference measured in the same run "
        "(shared, noisy machines: compare ratios, not absolute figures). "
        "For throughput rows ratio = our throughput / reference throughput (higher is better).",
        "",
        "| # | Benchmark | This server | Reference | Ratio | Goal | Result | Notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [
            row.number,
            row.name.strip(),
            row.ours,
            row.reference,
            fmt_ratio(row.ratio),
            row.goal,
            fmt_met(row.met),
            row.notes,
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if loads:
        lines += ["", "## Background load during each benchmark", ""]
        lines += [f"- {name}: {text}" for name, text in loads.items()]
    if failures:
        lines += ["", "## Failures", ""] + [f"- {f}" for f in failures]
    lines += [
        "",
        "## References",
        "",
        "1. Download: a plain nginx (`sendfile on`, no auth) serving a hard link to the very "
        "same stored file; curl -o /dev/null over loopback; runs alternate between servers.",
        "2. Upload: a plain nginx whose dav module (`dav_methods PUT`, same 1m body buffer) "
        "writes the PUT body to a file, which the benchmark fsyncs right after the PUT: "
        "PUT + fsync is the durable limit (row 2), the PUT alone is row 2a (not durable). "
        "Row 2b adds the SHA-256 of the file, one step after the other: what a server "
        "that did not overlap the work would take.",
        "3. Batch: plain nginx answering the same POST with a static copy of a real 100-object "
        "answer (the loopback + nginx + wrk ceiling on this machine; wrk shares the 2 cores).",
        "4. git lfs: the same git-lfs client pushing to / fetching from a local file:// remote "
        "(its built-in standalone file transfer, no HTTP).",
        "5. Memory: PSS of the whole server tree (smaps_rollup), RSS sum beside it; the limit "
        "is 100 MiB; peaks during transfers are compared with the same operation on a 16x "
        "smaller object.",
        "6. S3: boto3 (the server's TransferConfig: part size, parallel parts) moving the same "
        "file to and from the same SeaweedFS directly; runs rotate between proxy, direct and "
        "boto3. 6b: the same 100-object batch (wrk) on the local store, rounds rotating.",
        "7. PostgreSQL: the same server and batch (wrk, Basic auth) on SQLite in its data dir, "
        "rounds rotating. 7a: the same batch with 1 object. 7b: the upload's steps. Round trips "
        "are counted from PostgreSQL's statement log of a database of their own: each simple "
        "query (BEGIN, COMMIT, the pool's empty-query check of an idle connection) and "
        "each extended-protocol execute is one; transactions are BEGIN..COMMIT blocks and "
        "statements run outside one.",
        "",
        "Raw per-run numbers are in the JSON file next to this one.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    facts = machine_facts()
    log("machine: " + "; ".join(f"{k}: {v}" for k, v in facts.items()))
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="lfs-bench-", dir=args.workdir))
    # Started as root, the server runs as LFS_USER, which must pass through here.
    workdir.chmod(0o711)
    ctx = Context(workdir=workdir, quick=args.quick, runs=args.runs)
    loads: dict[str, str] = {}
    rows: list[Row] = []
    failures: list[str] = []
    cwd = Path.cwd()
    source = "unknown"
    try:
        source = select_source(args.rev, workdir)
        log(f"server measured: {source}")
        for name in args.only:
            log(f"=== {name}")
            t0 = time.monotonic()
            if args.wait_idle > 0:
                busy = wait_for_quiet(args.wait_idle)
                log(
                    f"machine busy {busy:.0%} before starting (waited {time.monotonic() - t0:.0f} s)"
                )
            meter = LoadMeter()
            try:
                with meter:
                    new_rows = BENCHMARKS[name].run(ctx)
                loads[name] = meter.summary()
                log(f"load: {loads[name]}")
            except Exception as exc:
                failures.append(f"{name}: {exc}")
                traceback.print_exc()
                if not args.keep_going:
                    break
                continue
            rows.extend(new_rows)
            for row in new_rows:
                log(
                    f"  {row.name.strip()}: {row.ours} | ref {row.reference} | "
                    f"ratio {fmt_ratio(row.ratio)} {fmt_met(row.met)}"
                )
            log(f"=== {name} took {time.monotonic() - t0:.0f} s")
    finally:
        os.chdir(cwd)
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    args.out.write_text(render(rows, facts, args, elapsed, failures, source, loads))
    raw = {"facts": facts, "source": source, "quick": args.quick, "elapsed_s": elapsed}
    raw["raw"] = ctx.raw
    raw["background_load"] = loads
    raw["rows"] = [row.__dict__ for row in rows]
    args.out.with_suffix(".json").write_text(json.dumps(raw, indent=2, default=str) + "\n")
    log(f"wrote {args.out} and {args.out.with_suffix('.json')} ({elapsed / 60:.1f} min)")
    print(args.out.read_text())
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
