"""Many small objects with the real git-lfs client: a baseline commit, the working tree, file://.

    .venv/bin/python bench/bench_small.py                      # baseline 7233615, 5 runs
    .venv/bin/python bench/bench_small.py --baseline HEAD~3 --runs 3
    .venv/bin/python bench/bench_small.py --baseline-tree /path/to/checkout

`git lfs push` and `git lfs fetch` of 500 x 16 KiB (--count, --size-kib) to
and from three places in one run: a server running the baseline commit
(lfs_server/ and nginx/ exported with git archive, or a checkout given with
--baseline-tree, put first on its PYTHONPATH), a server running the working
tree, and a file:// remote on tmpfs (git-lfs copying files, no HTTP: the
client's own floor). Both servers run side by side with the same settings
(local store, anonymous writes, the launcher's defaults) and the same venv;
runs rotate the order of the three. Every push uploads every object: the
store's files of the previous run are removed and each run pushes to a new
repository. Every fetch starts from an empty .git/lfs/objects. Each git
command is bounded (--timeout); results are medians of --runs.

Writes bench/results-small.md and .json (--out).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from bench_git_lfs import count_files, setup_home
from common import (
    REPO_ROOT,
    KiB,
    Stack,
    batch,
    log,
    machine_facts,
    make_object,
    median,
    remove,
    wait_for_quiet,
)

HERE = Path(__file__).resolve().parent
DEFAULT_BASELINE = "7233615"
TARGETS = ("baseline", "ours", "file")
FLOOR = "durable floor"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="commit to compare with")
    parser.add_argument(
        "--baseline-tree", type=Path, help="a checkout to run as the baseline instead"
    )
    parser.add_argument(
        "--candidate", help="commit to measure instead of the working tree (default: the tree)"
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--size-kib", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per git command")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="before each round wait up to this long for the machine to be idle; 0 disables",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results-small.md")
    return parser.parse_args(argv)


def export_tree(rev: str, dest: Path) -> str:
    """lfs_server/ and nginx/ of `rev` under `dest`; the full commit id."""
    commit = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", commit, "lfs_server", "nginx"],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return commit


class Runner:
    """git with a private HOME, each command bounded in time."""

    def __init__(self, env: dict[str, str], timeout: float) -> None:
        self.env = env
        self.timeout = timeout

    def __call__(self, args: list[str], cwd: Path) -> str:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=self.timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)} failed in {cwd}:\n{done.stdout}{done.stderr}")
        return done.stdout

    def timed(self, args: list[str], cwd: Path) -> float:
        started = time.perf_counter()
        self(args, cwd)
        return time.perf_counter() - started


@contextmanager
def server(root: Path, tree: Path) -> Iterator[Stack]:
    """`lfs-server serve` with `tree` first on its PYTHONPATH (and a neutral cwd)."""
    root.mkdir(parents=True)
    stack = Stack(root, LFS_ANONYMOUS="write", PYTHONPATH=str(tree))
    try:
        stack.start(timeout=120)
        yield stack
    finally:
        stack.stop()


def clear_store(stack: Stack) -> None:
    """Remove every stored file, so the next push stores (and fsyncs) each object anew."""
    objects = stack.data_dir / "objects"
    for entry in objects.iterdir():
        remove(entry)


def prepare(git: Runner, root: Path, count: int, size: int) -> tuple[Path, Path, list]:
    """A repository with `count` new LFS files; a bare origin with its refs; the oids."""
    repo = root / "work"
    repo.mkdir(parents=True)
    git(["init", "-q"], repo)
    git(["lfs", "track", "*.bin"], repo)
    oids = [(make_object(repo / f"f{i:04d}.bin", size), size) for i in range(count)]
    git(["add", "."], repo)
    git(["commit", "-q", "-m", f"{count} objects"], repo)
    origin = root / "origin.git"
    git(["init", "-q", "--bare", str(origin)], root)
    git(["--git-dir", str(origin), "fetch", "-q", str(repo), "main:main"], root)
    for i in range(count):
        (repo / f"f{i:04d}.bin").unlink()
    return repo, origin, oids


def durable_floor(root: Path, count: int, size: int, lanes: int = 8) -> float:
    """Seconds this checkout's own commit code takes for `count` new objects,
    `lanes` at a time as git-lfs sends them, without HTTP: each a temp file
    written, verified, put in a local store and given its index row (SQLite,
    FULL), exactly as upload-commit does. What the disk's fsyncs cost here,
    now: no server can push faster than this and keep those guarantees."""
    from concurrent.futures import ThreadPoolExecutor

    from lfs_server.db import SQLiteDatabase
    from lfs_server.store import LocalStore, ObjectIndex, UploadVerifier

    for name in ("tmp", "objects"):
        (root / name).mkdir(parents=True)
    store = LocalStore(root / "objects", root / "tmp")
    index = ObjectIndex(store, SQLiteDatabase(root / "lfs.db"), UploadVerifier())
    blobs = [os.urandom(size) for _ in range(count)]

    def commit(number: int) -> None:
        upload = root / "tmp" / f"{number:010d}"
        upload.write_bytes(blobs[number])
        oid = hashlib.sha256(blobs[number]).hexdigest()
        index.accept("bench/floor", oid, size, upload)
        upload.unlink()

    started = time.perf_counter()
    with ThreadPoolExecutor(lanes) as pool:
        list(pool.map(commit, range(count)))
    elapsed = time.perf_counter() - started
    remove(root)
    return elapsed


def rotation(i: int) -> tuple[str, ...]:
    return TARGETS[i % 3 :] + TARGETS[: i % 3]


def measure(args: argparse.Namespace, work: Path, trees: dict[str, Path]) -> dict:
    size = args.size_kib * KiB
    shm = Path("/dev/shm")
    refs = Path(tempfile.mkdtemp(prefix="lfs-bench-small-", dir=shm if shm.is_dir() else work))
    times: dict[str, dict[str, list[float]]] = {
        op: {t: [] for t in TARGETS} for op in ("push", "fetch")
    }
    times["push"][FLOOR] = []
    try:
        git = Runner(setup_home(work / "home"), args.timeout)
        repo, origin, oids = prepare(git, work / "data", args.count, size)
        with ExitStack() as stacks:
            servers = {
                name: stacks.enter_context(server(work / name, tree))
                for name, tree in trees.items()
            }
            last: dict[str, str] = {}
            for i in range(args.runs):
                if args.wait_idle > 0:
                    wait_for_quiet(args.wait_idle)
                for target in rotation(i):
                    remote = f"{target}-{i}"
                    if target == "file":
                        url = refs / f"{remote}.git"
                        git(["init", "-q", "--bare", str(url)], work)
                        git(["remote", "add", remote, str(url)], repo)
                        cfg: list[str] = []
                    else:
                        clear_store(servers[target])
                        last[target] = f"bench/small-{i}"
                        git(["remote", "add", remote, str(origin)], repo)
                        cfg = ["-c", f"lfs.url={servers[target].lfs_base(last[target])}"]
                    times["push"][target].append(
                        git.timed([*cfg, "lfs", "push", remote, "main"], repo)
                    )
                    if target == "file":
                        if count_files(url / "lfs" / "objects") != args.count:
                            raise RuntimeError("the file:// remote did not get every object")
                        last["file"] = str(url)
                    else:
                        found = batch(servers[target], last[target], "download", oids)
                        if not all("actions" in o for o in found):
                            raise RuntimeError(f"{target}: git lfs push did not store every object")
                times["push"][FLOOR].append(durable_floor(work / f"floor-{i}", args.count, size))
                log(
                    f"push run {i + 1}: "
                    + ", ".join(f"{t} {times['push'][t][-1]:.2f} s" for t in (*TARGETS, FLOOR))
                )
            clone = work / "clone"
            git(["clone", "-q", str(origin), str(clone)], work)
            git(["remote", "add", "file", last["file"]], clone)
            for i in range(args.runs):
                if args.wait_idle > 0:
                    wait_for_quiet(args.wait_idle)
                for target in rotation(i):
                    remove(clone / ".git" / "lfs" / "objects")
                    if target == "file":
                        cmd = ["lfs", "fetch", "file", "main"]
                    else:
                        url = servers[target].lfs_base(last[target])
                        cmd = ["-c", f"lfs.url={url}", "lfs", "fetch", "origin", "main"]
                    times["fetch"][target].append(git.timed(cmd, clone))
                    if count_files(clone / ".git" / "lfs" / "objects") != args.count:
                        raise RuntimeError(f"git lfs fetch from {target} missed objects")
                log(
                    f"fetch run {i + 1}: "
                    + ", ".join(f"{t} {times['fetch'][t][-1]:.2f} s" for t in TARGETS)
                )
    finally:
        remove(refs)
    return times


def render(
    args: argparse.Namespace, times: dict, source: str, candidate: str, facts: dict, elapsed: float
) -> str:
    label = f"{args.count} x {args.size_kib} KiB"
    lines = [
        f"# git-lfs, {label}: baseline vs measured server vs file://",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- Command: `.venv/bin/python bench/bench_small.py {' '.join(sys.argv[1:])}`".rstrip()
        + f" ({elapsed / 60:.1f} min)",
        f"- Baseline: {source}; measured: {candidate}",
        "- Machine: " + "; ".join(f"{k}: {v}" for k, v in facts.items()),
        "",
        f"Medians of {args.runs} runs; the three targets rotate within each run. "
        "speed-up = baseline / measured; above floor = measured - file://.",
        "",
        "| operation | baseline | measured | file:// floor | speed-up | above floor "
        "| runs (baseline / measured / file) |",
        "|---|---|---|---|---|---|---|",
    ]
    for op in ("push", "fetch"):
        med = {t: median(times[op][t]) for t in TARGETS}
        runs = " / ".join(",".join(f"{v:.2f}" for v in times[op][t]) for t in TARGETS)
        lines.append(
            f"| git lfs {op} | {med['baseline']:.2f} s | {med['ours']:.2f} s | {med['file']:.2f} s "
            f"| {med['baseline'] / med['ours']:.2f}x | {med['ours'] - med['file']:+.2f} s "
            f"({med['ours'] / med['file']:.1f}x floor) | {runs} |"
        )
    floor = times["push"][FLOOR]
    lines += [
        "",
        f"Durable floor of a push: {median(floor):.2f} s (runs: "
        + ",".join(f"{v:.2f}" for v in floor)
        + f"): this checkout's own commit code for {args.count} new objects, 8 at a time, "
        "called directly (no HTTP, no nginx, no git-lfs): temp file written, size and SHA-256 "
        "checked, linked, file and folders fsynced, index row committed (SQLite, FULL). "
        "No server keeping those guarantees pushes faster on this disk at this moment.",
    ]
    return "\n".join(lines) + "\n"


def describe_worktree() -> str:
    head = subprocess.run(
        ["git", "--no-optional-locks", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    dirty = subprocess.run(
        [
            "git",
            "--no-optional-locks",
            "-C",
            str(REPO_ROOT),
            "status",
            "--porcelain",
            "--",
            "lfs_server",
            "nginx",
        ],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{head}" + (" with uncommitted changes" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    facts = machine_facts()
    work = Path(tempfile.mkdtemp(prefix="lfs-bench-small-"))
    work.chmod(0o711)  # the servers run as LFS_USER, which must pass through here
    cwd = Path.cwd()
    try:
        if args.baseline_tree:
            baseline, source = args.baseline_tree.resolve(), f"checkout {args.baseline_tree}"
        else:
            baseline = work / "baseline-src"
            source = f"commit {export_tree(args.baseline, baseline)[:12]} ({args.baseline})"
        log(f"baseline: {source}")
        if args.candidate:
            ours = work / "candidate-src"
            candidate = f"commit {export_tree(args.candidate, ours)[:12]} ({args.candidate})"
        else:
            ours, candidate = REPO_ROOT, f"working tree at {describe_worktree()}"
        log(f"measured: {candidate}")
        # `python -m` puts the cwd first on sys.path: a neutral one lets PYTHONPATH decide.
        os.chdir(work)
        times = measure(args, work, {"baseline": baseline, "ours": ours})
    finally:
        os.chdir(cwd)
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - started
    text = render(args, times, source, candidate, facts, elapsed)
    args.out.write_text(text)
    raw = {
        "facts": facts,
        "baseline": source,
        "measured": candidate,
        "args": vars(args),
        "seconds": times,
    }
    args.out.with_suffix(".json").write_text(json.dumps(raw, indent=2, default=str) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
