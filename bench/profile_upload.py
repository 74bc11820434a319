"""Where an upload's time goes, from the outside (no change to the server).

    .venv/bin/python bench/profile_upload.py [--size-mib 1024] [--runs 3] [--rev HEAD]

While curl PUTs one object, a 5 ms poller watches:
- the upload temp dir: when nginx's temp file appears and when it is complete
  (auth_request done -> body received),
- the gunicorn workers' /proc/PID/io rchar: when Flask has read the whole temp
  file again (SHA-256 done),
- the object's final path: when it is linked (fsync of the file done),
- curl's exit (fsync of the directory + the answer).
It also sums the CPU time (utime+stime) of the server's process tree and of
curl, against a plain nginx (dav PUT) receiving the same bytes, to show how
much CPU the 2 cores have to spare for the hash.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import (
    MiB,
    PlainNginx,
    action,
    forget,
    log,
    make_object,
    median,
    remove,
    start_stack,
    stored_path,
    tree_cpu_seconds,
    tree_pids,
)

REPO = "bench/profile"


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def rchar(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/io").read_text().splitlines():
                if line.startswith("rchar:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


class Watcher(threading.Thread):
    """Timestamps of the phases of one upload, polled every 5 ms."""

    def __init__(self, tmp_dir: Path, final: Path, workers: list[int], size: int) -> None:
        super().__init__(daemon=True)
        self.tmp_dir, self.final, self.workers, self.size = tmp_dir, final, workers, size
        self.marks: dict[str, float] = {}
        self.stop = threading.Event()

    def mark(self, name: str) -> None:
        self.marks.setdefault(name, time.perf_counter())

    def run(self) -> None:
        base_rchar = rchar(self.workers)
        while not self.stop.is_set():
            for entry in os.scandir(self.tmp_dir):
                self.mark("temp file created")
                try:
                    if entry.stat().st_size >= self.size:
                        self.mark("body received")
                except FileNotFoundError:
                    pass
            if rchar(self.workers) - base_rchar >= self.size:
                self.mark("SHA-256 done")
            if self.final.exists():
                self.mark("object linked (fsync done)")
            time.sleep(0.005)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rev", help="profile this git revision (see run_all.py --rev)")
    args = parser.parse_args(argv)
    size = args.size_mib * MiB
    work = Path(tempfile.mkdtemp(prefix="lfs-profile-"))
    work.chmod(0o711)  # started as root, the server runs as LFS_USER, which must pass
    cwd = Path.cwd()
    try:
        if args.rev:
            import run_all

            log(f"server measured: {run_all.select_source(args.rev, work)}")
        src = work / "object.bin"
        oid = make_object(src, size)
        phases: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {"ours": [], "plain": []}
        wall: dict[str, list[float]] = {"ours": [], "plain": []}
        with (
            start_stack(work / "stack") as stack,
            PlainNginx(work / "plain", work, work / "put") as plain,
        ):
            assert stack.proc is not None and plain.proc is not None
            workers = [
                pid
                for pid in tree_pids(stack.proc.pid)
                if b"gunicorn" in Path(f"/proc/{pid}/cmdline").read_bytes()
            ]
            final = stored_path(stack, oid)
            for i in range(args.runs):
                for who in ("ours", "plain") if i % 2 == 0 else ("plain", "ours"):
                    forget(stack, REPO, oid)
                    remove(plain.put_dir / "object.bin")
                    os.sync()
                    if who == "ours":
                        href, headers = action(stack, REPO, "upload", oid, size)
                        cmd = ["-H", f"Authorization: {headers['Authorization']}", href]
                        root = stack.proc.pid
                        watcher = Watcher(stack.data_dir / "tmp" / "uploads", final, workers, size)
                    else:
                        cmd = [f"{plain.url}/put/object.bin"]
                        root = plain.proc.pid
                        watcher = Watcher(plain.put_dir / ".tmp", final, [], size)
                    before = tree_cpu_seconds(root) + children_cpu()
                    watcher.start()
                    started = time.perf_counter()
                    subprocess.run(
                        ["curl", "-sS", "-f", "-o", "/dev/null", "-T", str(src), *cmd], check=True
                    )
                    ended = time.perf_counter()
                    watcher.stop.set()
                    watcher.join()
                    cpu[who].append(tree_cpu_seconds(root) + children_cpu() - before)
                    wall[who].append(ended - started)
                    if who == "ours":
                        marks = sorted(watcher.marks.items(), key=lambda kv: kv[1])
                        marks.append(("curl done (answer received)", ended))
                        last = started
                        for name, at in marks:
                            phases.setdefault(name, []).append(at - last)
                            last = at
            forget(stack, REPO, oid)
    finally:
        os.chdir(cwd)
        remove(work)
    print(
        f"\nupload of {args.size_mib} MiB, medians of {args.runs} runs (time since previous mark)"
    )
    for name, values in phases.items():
        print(f"  {name:<32} {median(values):7.3f} s   {[round(v, 3) for v in values]}")
    for who in ("ours", "plain"):
        w, c = median(wall[who]), median(cpu[who])
        print(
            f"  {who:<6} wall {w:6.3f} s   CPU (server tree + curl) {c:6.2f} core-s = {c / w:.2f} cores"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
