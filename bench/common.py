"""Shared pieces of the benchmarks: the stack, a plain nginx reference, curl, memory sampling (PSS and RSS).

Everything listens on 127.0.0.1 on free ports, lives in one temp dir per run
and is stopped by the PID this process started. Only the stdlib, requests
and the installed tools (nginx, curl, wrk, git, git-lfs) are used.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from lfs_server.db import SQLiteDatabase  # noqa: E402
from tests.engines.postgres import binaries  # noqa: E402
from tests.stack import Stack, free_port  # noqa: E402
from tests.stores import StoreEnv  # noqa: E402

LFS_MEDIA_TYPE = "application/vnd.git-lfs+json"

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def human_size(size: int) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def rotations(sides: list[str], runs: int) -> list[list[str]]:
    """Each run starts one side later than the one before (ABC, BCA, CAB...),
    so slow drifts of the shared machine hit every side alike."""
    return [sides[i % len(sides) :] + sides[: i % len(sides)] for i in range(runs)]


@dataclass
class Row:
    """One line of the results table."""

    number: str
    name: str
    ours: str
    reference: str
    ratio: float | None
    goal: str = ""
    met: bool | None = None
    notes: str = ""


@dataclass
class Context:
    """What every benchmark gets: a scratch dir, the mode, and a place for raw data."""

    workdir: Path
    quick: bool
    runs: int | None = None  # override of the number of timed runs (transfer, git-lfs)
    raw: dict[str, Any] = field(default_factory=dict)

    def scratch(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path


# ---------------------------------------------------------------- machine facts


def _first_line(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else "unavailable"


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unavailable"


def machine_facts() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / (1 << 20):.1f} GiB"
    except OSError:
        pass
    return {
        "nproc": _first_line(["nproc"]),
        "CPU model": model,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": _first_line(["nginx", "-v"]),
        "curl": _first_line(["curl", "--version"]).split(" (")[0],
        "git-lfs": _first_line(["git", "lfs", "version"]),
        "wrk": _first_line(["wrk", "--version"]).split(" [")[0],
        "SeaweedFS": _first_line([str(Path(sys.executable).parent / "weed"), "version"]),
        "PostgreSQL": _first_line([str(binaries() or Path("/nonexistent")) + "/postgres", "-V"]),
        "boto3": _package_version("boto3"),
    }


# ---------------------------------------------------------------- machine load

_HZ = os.sysconf("SC_CLK_TCK")


def cpu_busy_seconds() -> float:
    """Core-seconds the whole machine has been busy (every process, every core)."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:9]]
    return (sum(values) - values[3] - values[4]) / _HZ  # minus idle and iowait


def own_cpu_seconds() -> float:
    """Core-seconds used by this process and every child it has reaped (servers,
    curl, wrk, git: each parent reaps its own children, so nginx and gunicorn
    workers are included once their stack has stopped)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _tree(root: int) -> Iterator[tuple[int, str]]:
    """(pid, role) of `root` and its living descendants, parents first."""
    children = _children_map()
    todo: list[tuple[int, bytes]] = [(root, b"")]
    while todo:
        pid, parent = todo.pop()
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmd:
                cmdline = cmd.read()
        except OSError:
            continue  # gone meanwhile
        yield pid, _role(cmdline, parent)
        todo.extend((child, cmdline) for child in children.get(pid, []))


def _cpu_seconds(pid: int) -> float:
    """Core-seconds (user + system) one process used so far; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _HZ


def cpu_by_role(root: int) -> dict[str, float]:
    """Core-seconds (user + system) used so far by the live processes of a
    tree, summed per role (launcher, prehasher, nginx worker, ...)."""
    totals: dict[str, float] = {}
    for pid, role in _tree(root):
        totals[role] = totals.get(role, 0.0) + _cpu_seconds(pid)
    return totals


def tree_cpu_seconds(root: int) -> float:
    """Core-seconds (user + system) used so far by the live processes of a tree."""
    return sum(cpu_by_role(root).values())


def children_cpu_seconds() -> float:
    """Core-seconds of the children this process has reaped (curl, ...)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class LoadMeter:
    """Background load: CPU the rest of the machine used while a benchmark ran."""

    def __enter__(self) -> LoadMeter:
        self.started = time.monotonic()
        self.busy0, self.own0 = cpu_busy_seconds(), own_cpu_seconds()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.wall = time.monotonic() - self.started
        self.busy = cpu_busy_seconds() - self.busy0
        self.own = own_cpu_seconds() - self.own0
        self.other = max(0.0, self.busy - self.own)

    def summary(self) -> str:
        return (
            f"{self.wall:.0f} s wall; CPU used by the benchmark {self.own:.1f} core-s, "
            f"by other processes {self.other:.1f} core-s "
            f"({self.other / self.wall:.2f} of {os.cpu_count()} cores on average)"
        )


def wait_for_quiet(max_wait: float, threshold: float = 0.25, window: float = 1.0) -> float:
    """Wait (at most `max_wait` s) until the machine is almost idle; return its busy share."""
    deadline = time.monotonic() + max_wait
    cores = os.cpu_count() or 1
    while True:
        before = cpu_busy_seconds()
        time.sleep(window)
        share = (cpu_busy_seconds() - before) / window / cores
        if share <= threshold or time.monotonic() >= deadline:
            return share


# ---------------------------------------------------------------- test data


def make_object(path: Path, size: int) -> str:
    """Write `size` fresh random-looking bytes to `path`; return their SHA-256.

    One random MiB is repeated, each copy prefixed by its index, so every file
    has new bytes (a new oid) without paying for `size` bytes of urandom.
    """
    block = bytearray(os.urandom(min(MiB, max(size, 8))))
    digest = hashlib.sha256()
    written = 0
    index = 0
    with open(path, "wb") as out:
        while written < size:
            block[:8] = index.to_bytes(8, "little")
            chunk = memoryview(block)[: min(len(block), size - written)]
            out.write(chunk)
            digest.update(chunk)
            written += len(chunk)
            index += 1
    return digest.hexdigest()


# ---------------------------------------------------------------- servers


@contextmanager
def start_stack(root: Path, store: StoreEnv | None = None, **settings: str) -> Iterator[Stack]:
    """This server (`lfs-server serve`: nginx + gunicorn), anonymous writes
    allowed unless `settings` say otherwise, on the local store or on `store`."""
    root.mkdir(parents=True, exist_ok=True)
    env = {"LFS_ANONYMOUS": "write", **(store.env if store is not None else {}), **settings}
    stack = Stack(root, store, **env)
    try:
        try:
            stack.start(timeout=60)
        except requests.Timeout:
            # Stack.start retries only refused connections; on a loaded machine
            # the first /healthz may take longer than its 1 s read timeout.
            _wait_healthy(stack, 60)
        yield stack
    finally:
        stack.stop()


def _wait_healthy(stack: Stack, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack.proc is not None and stack.proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{stack.log.read_text()}")
        try:
            if requests.get(f"{stack.url}/healthz", timeout=10).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server did not become healthy:\n{stack.log.read_text()}")


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class PlainNginx:
    """The reference: a minimal nginx (sendfile on), no auth, no app.

    - GET  /files/<name>  serves files from `files_dir` (sendfile).
    - PUT  /put/<name>    the dav module writes the body to `put_dir` (temp file
      in the same filesystem, then rename), answering 201/204.
    - POST /static-json   answers with the file `json_file` (for the batch reference).
    """

    def __init__(self, root: Path, files_dir: Path, put_dir: Path, json_file: Path | None = None):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.files_dir = files_dir
        self.put_dir = put_dir
        self.json_file = json_file
        self.conf = root / "nginx.conf"
        self.log = root / "nginx.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def render(self) -> str:
        user = "user root root;" if os.geteuid() == 0 else ""
        json_location = ""
        if self.json_file is not None:
            # POST to a static file is a 405; error_page turns it into a GET of the file.
            json_location = f"""
        location = /static-json {{
            alias {self.json_file};
            default_type application/vnd.git-lfs+json;
            error_page 405 =200 /static-json-file;
        }}
        location = /static-json-file {{
            internal;
            alias {self.json_file};
            default_type application/vnd.git-lfs+json;
        }}"""
        return f"""{user}
worker_processes auto;
daemon off;
master_process on;
pid {self.root}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    keepalive_requests 10000;
    client_body_temp_path {self.put_dir}/.tmp;
    proxy_temp_path {self.root}/proxy_temp;
    fastcgi_temp_path {self.root}/fastcgi_temp;
    uwsgi_temp_path {self.root}/uwsgi_temp;
    scgi_temp_path {self.root}/scgi_temp;
    server {{
        listen 127.0.0.1:{self.port};
        location /files/ {{
            alias {self.files_dir}/;
        }}
        location /put/ {{
            alias {self.put_dir}/;
            dav_methods PUT;
            client_max_body_size 0;
            # the same body buffer as this server's upload location
            client_body_buffer_size 1m;
        }}{json_location}
    }}
}}
"""

    def start(self) -> PlainNginx:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.put_dir / ".tmp").mkdir(parents=True, exist_ok=True)
        self.conf.write_text(self.render())
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                ["nginx", "-p", str(self.root), "-c", str(self.conf), "-e", "stderr"],
                stdout=out,
                stderr=out,
            )
        try:
            wait_for_port(self.port, self.proc)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"plain nginx did not start:\n{self.log.read_text()}") from None
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> PlainNginx:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------- clients

_CURL_FORMAT = '{"code":%{http_code},"bytes_down":%{size_download},"bytes_up":%{size_upload},"total":%{time_total},"ttfb":%{time_starttransfer}}'


def _curl(args: list[str], expect: Iterable[int]) -> dict[str, Any]:
    done = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", _CURL_FORMAT, *args],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"curl {' '.join(args)} failed: {done.stderr.strip()}")
    result = json.loads(done.stdout)
    if result["code"] not in set(expect):
        raise RuntimeError(f"curl {args[-1]}: unexpected HTTP {result['code']}")
    return result


def _header_args(headers: dict[str, str] | None) -> list[str]:
    return [arg for name, value in (headers or {}).items() for arg in ("-H", f"{name}: {value}")]


def curl_get(url: str, size: int, headers: dict[str, str] | None = None) -> float:
    """Seconds curl took to GET `url` into /dev/null (checked: 200 and `size` bytes)."""
    return curl_get_timings(url, size, headers)[0]


def curl_get_timings(
    url: str, size: int, headers: dict[str, str] | None = None
) -> tuple[float, float]:
    """(total seconds, seconds to the first byte) of a checked GET into /dev/null."""
    result = _curl([*_header_args(headers), url], expect=(200,))
    if result["bytes_down"] != size:
        raise RuntimeError(f"GET {url}: got {result['bytes_down']} bytes, expected {size}")
    return float(result["total"]), float(result["ttfb"])


def curl_put(
    url: str, path: Path, headers: dict[str, str] | None = None, expect: Iterable[int] = (200,)
) -> float:
    """Seconds curl took to PUT the file (curl -T: exact Content-Length)."""
    result = _curl(["-T", str(path), *_header_args(headers), url], expect=expect)
    return float(result["total"])


# ---------------------------------------------------------------- LFS helpers


def batch(stack: Stack, repo: str, operation: str, objects: list[tuple[str, int]]) -> list[dict]:
    answer = stack.batch(
        repo,
        {"operation": operation, "objects": [{"oid": o, "size": s} for o, s in objects]},
    )
    answer.raise_for_status()
    return answer.json()["objects"]


def action(stack: Stack, repo: str, operation: str, oid: str, size: int) -> tuple[str, dict]:
    """(href, headers) of the batch action for one object."""
    (obj,) = batch(stack, repo, operation, [(oid, size)])
    if "actions" not in obj or operation not in obj["actions"]:
        raise RuntimeError(f"batch {operation} of {oid[:12]}: no action: {obj}")
    act = obj["actions"][operation]
    return act["href"], dict(act.get("header", {}))


def stored_path(stack: Stack, oid: str) -> Path:
    """Where the local store keeps an object (read-only knowledge, for clean-up)."""
    return stack.data_dir / "objects" / oid[:2] / oid[2:4] / oid


def forget(stack: Stack, repo: str, oid: str) -> None:
    """Make the server forget an object of `repo` (its file and its index row),
    so that the next upload of it stores it again."""
    remove(stored_path(stack, oid))
    SQLiteDatabase(stack.data_dir / "lfs.db").remove_objects(oid, [repo])


def upload(stack: Stack, repo: str, path: Path, oid: str, size: int) -> float:
    href, headers = action(stack, repo, "upload", oid, size)
    return curl_put(href, path, headers)


# ---------------------------------------------------------------- memory


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                text = stat.read()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: split after the last ')'
        ppid = int(text[text.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def tree_pids(root: int) -> list[int]:
    children = _children_map()
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children.get(pid, []))
    return pids


@dataclass(frozen=True)
class ProcessMemory:
    """One process of a tree: what it is and its memory in bytes.

    PSS (proportional set size) counts each page a process shares once in
    all: a page shared by three processes adds a third to each. Summed over
    a tree it is what the tree costs the machine, where a sum of RSS counts
    every shared page (libraries, the pages gunicorn's workers share with
    their master) once per process.
    """

    pid: int
    role: str
    rss: int
    pss: int


def _role(cmdline: bytes, parent: bytes) -> str:
    text = cmdline.replace(b"\0", b" ").decode(errors="replace")
    if text.startswith("nginx: master"):
        return "nginx master"
    if text.startswith("nginx: worker"):
        return "nginx worker"
    if "gunicorn" in text:
        return "gunicorn worker" if b"gunicorn" in parent else "gunicorn master"
    if "lfs_server.prehash_process" in text:
        return "prehasher"
    if "lfs_server.cli" in text:
        return "launcher"
    return text.split(" ", 1)[0] or "?"


def _rollup(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes, from /proc/<pid>/smaps_rollup."""
    rss = pss = 0
    with open(f"/proc/{pid}/smaps_rollup", "rb") as rollup:
        for line in rollup:
            if line.startswith(b"Rss:"):
                rss = int(line.split()[1]) * KiB
            elif line.startswith(b"Pss:"):
                pss = int(line.split()[1]) * KiB
    return rss, pss


def tree_memory(root: int) -> list[ProcessMemory]:
    """Every process of the tree under `root` (root included) that is still there."""
    found: list[ProcessMemory] = []
    for pid, role in _tree(root):
        try:
            rss, pss = _rollup(pid)
        except OSError:
            continue  # gone meanwhile
        found.append(ProcessMemory(pid, role, rss, pss))
    return found


def by_role(processes: list[ProcessMemory]) -> dict[str, dict[str, int]]:
    """PSS, RSS and the count of processes per role."""
    roles: dict[str, dict[str, int]] = {}
    for proc in processes:
        entry = roles.setdefault(proc.role, {"processes": 0, "pss": 0, "rss": 0})
        entry["processes"] += 1
        entry["pss"] += proc.pss
        entry["rss"] += proc.rss
    return roles


def roles_text(processes: list[ProcessMemory]) -> str:
    """`launcher 12.3, prehasher 8.1, ...`: MiB of PSS per role (count when more than one)."""
    parts = []
    for role, entry in by_role(processes).items():
        count = f" x{entry['processes']}" if entry["processes"] > 1 else ""
        parts.append(f"{role}{count} {entry['pss'] / MiB:.1f}")
    return ", ".join(parts)


class MemorySampler:
    """Samples the PSS and RSS of a process tree every `interval` seconds in a thread;
    keeps the peak of each sum and the processes at the PSS peak."""

    def __init__(self, root: int, interval: float = 0.05) -> None:
        self.root = root
        self.interval = interval
        self.peak_pss = 0
        self.peak_rss = 0
        self.at_peak: list[ProcessMemory] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            processes = tree_memory(self.root)
            self.samples += 1
            pss = sum(proc.pss for proc in processes)
            self.peak_rss = max(self.peak_rss, sum(proc.rss for proc in processes))
            if pss > self.peak_pss:
                self.peak_pss, self.at_peak = pss, processes
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def raw(self) -> dict[str, object]:
        return {
            "samples": self.samples,
            "peak_pss": self.peak_pss,
            "peak_rss": self.peak_rss,
            "at_peak_pss": by_role(self.at_peak),
        }


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
