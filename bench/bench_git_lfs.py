"""Benchmark 4: the real git-lfs client, `git lfs push` and `git lfs fetch`.

Two data sets: many small files and a few large ones. HOME is a temp dir (no
user config leaks in), git refs live in a bare local remote, and the LFS
endpoint is this server (`git -c lfs.url=...`). The reference is the same
git-lfs client moving the same objects to and from a local file:// remote
(git-lfs's built-in standalone file transfer: no HTTP, just copies), the
floor of what the client itself costs on this machine.

Every push goes to a fresh server repository (and a fresh file:// remote),
so every run really uploads every object; every fetch starts from an empty
.git/lfs/objects. Push is checked by a batch that finds all objects; fetch by
counting the fetched files.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    Context,
    KiB,
    MiB,
    Row,
    batch,
    human_size,
    log,
    make_object,
    median,
    remove,
    start_stack,
)


def git(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {cwd}:\n{done.stdout}{done.stderr}")
    return done.stdout


def timed_git(args: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    git(args, cwd, env)
    return time.perf_counter() - started


def git_env(home: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("GIT_", "LFS_")) and key not in ("XDG_CONFIG_HOME",)
    }
    env.update(
        HOME=str(home),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_TERMINAL_PROMPT="0",
        GIT_LFS_SKIP_SMUDGE="1",
    )
    return env


def setup_home(home: Path) -> dict[str, str]:
    home.mkdir(parents=True)
    env = git_env(home)
    for key, value in (
        ("user.name", "bench"),
        ("user.email", "bench@127.0.0.1"),
        ("init.defaultBranch", "main"),
        ("lfs.locksverify", "false"),
        ("credential.helper", ""),
    ):
        git(["config", "--global", key, value], home, env)
    git(["lfs", "install", "--skip-repo"], home, env)
    return env


def count_files(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root)) if root.exists() else 0


def run(ctx: Context) -> list[Row]:
    if ctx.quick:
        datasets = [("small", 50, 16 * KiB), ("large", 2, 16 * MiB)]
        runs = 1
    else:
        datasets = [("small", 500, 16 * KiB), ("large", 4, 256 * MiB)]
        runs = 3
    runs = ctx.runs or runs
    work = ctx.scratch("git-lfs")
    # The file:// remotes live on another filesystem (tmpfs) when there is one:
    # on the same filesystem git-lfs hard-links instead of copying.
    shm = Path("/dev/shm")
    refs = Path(tempfile.mkdtemp(prefix="lfs-bench-ref-", dir=shm if shm.is_dir() else work))
    rows: list[Row] = []
    try:
        env = setup_home(work / "home")
        with start_stack(work / "stack") as stack:
            for name, count, size in datasets:
                rows.extend(
                    _dataset(ctx, stack, env, work / name, refs / name, name, count, size, runs)
                )
    finally:
        remove(work)
        remove(refs)
    return rows


def _dataset(ctx, stack, env, root: Path, refs: Path, name, count: int, size: int, runs: int):
    label = f"{count} x {human_size(size)}"
    log(f"git-lfs: preparing {label}")
    root.mkdir(parents=True)
    refs.mkdir(parents=True)
    repo = root / "work"
    repo.mkdir()
    git(["init", "-q"], repo, env)
    git(["lfs", "track", "*.bin"], repo, env)
    oids = []
    for i in range(count):
        oids.append((make_object(repo / f"f{i:04d}.bin", size), size))
    git(["add", "."], repo, env)
    git(["commit", "-q", "-m", label], repo, env)
    origin = root / "origin.git"  # git refs only, for the clone that fetches
    git(["init", "-q", "--bare", str(origin)], root, env)
    git(["--git-dir", str(origin), "fetch", "-q", str(repo), "main:main"], root, env)
    # Work-tree copies are not needed any more; .git/lfs/objects holds the data.
    for i in range(count):
        (repo / f"f{i:04d}.bin").unlink()

    times: dict[str, list[float]] = {"push": [], "push_ref": [], "fetch": [], "fetch_ref": []}
    server_repo = ref_remote = None
    log(f"git-lfs: push {label}, {runs} run(s) each")
    for i in range(runs):
        # a fresh destination every run, so every object is sent again
        if server_repo is not None:
            remove(stack.data_dir / "objects" / f"{server_repo}.git")
            remove(ref_remote)
        server_repo = f"bench/{name}-{i}"
        ref_remote = refs / f"ref-{i}.git"
        git(["init", "-q", "--bare", str(ref_remote)], root, env)
        for remote, url in (("srv", origin), ("ref", ref_remote)):
            if i:
                git(["remote", "remove", remote], repo, env)
            git(["remote", "add", remote, str(url)], repo, env)
        ours_cfg = ["-c", f"lfs.url={stack.lfs_base(server_repo)}"]
        order = ("srv", "ref") if i % 2 == 0 else ("ref", "srv")
        for remote in order:
            key = "push" if remote == "srv" else "push_ref"
            extra = ours_cfg if remote == "srv" else []
            times[key].append(timed_git([*extra, "lfs", "push", remote, "main"], repo, env))
        found = batch(stack, server_repo, "download", oids)
        if not all("actions" in o for o in found):
            raise RuntimeError(f"git lfs push did not store all {count} objects")
        if count_files(ref_remote / "lfs" / "objects") != count:
            raise RuntimeError("git lfs push to the file:// remote did not copy all objects")

    clone = root / "clone"
    git(["clone", "-q", str(origin), str(clone)], root, env)
    ours_cfg = ["-c", f"lfs.url={stack.lfs_base(server_repo)}"]
    git(["remote", "add", "ref", str(ref_remote)], clone, env)
    log(f"git-lfs: fetch {label}, {runs} run(s) each")
    for i in range(runs):
        order = ("origin", "ref") if i % 2 == 0 else ("ref", "origin")
        for remote in order:
            remove(clone / ".git" / "lfs" / "objects")
            key = "fetch" if remote == "origin" else "fetch_ref"
            extra = ours_cfg if remote == "origin" else []
            times[key].append(timed_git([*extra, "lfs", "fetch", remote, "main"], clone, env))
            if count_files(clone / ".git" / "lfs" / "objects") != count:
                raise RuntimeError(f"git lfs fetch from {remote} did not fetch {count} objects")
    remove(root)
    remove(refs)
    remove(stack.data_dir / "objects" / f"{server_repo}.git")
    ctx.raw[f"git_lfs_{name}"] = {"count": count, "size": size, "seconds": times}

    rows = []
    total = count * size
    for op in ("push", "fetch"):
        ours, ref = median(times[op]), median(times[f"{op}_ref"])
        rows.append(
            Row(
                "4",
                f"git lfs {op} {label} (s, median of {runs})",
                f"{ours:.2f} s ({total / MiB / ours:.0f} MiB/s, {count / ours:.0f} obj/s)",
                f"{ref:.2f} s (file:// remote on tmpfs)",
                ref / ours,
                notes="ratio = file:// time / our time",
            )
        )
    return rows


if __name__ == "__main__":
    import run_all

    sys.exit(run_all.main(["--only", "git-lfs", *sys.argv[1:]]))
