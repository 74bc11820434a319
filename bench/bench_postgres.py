"""Benchmark 7: the database on PostgreSQL against SQLite, and its round trips.

7. 100-object download batches with Basic auth (a user with a read grant,
password checked; wrk -t2 -c8 --latency with benchmark 3's Lua script) on a
stack whose database is PostgreSQL (LFS_DATABASE_URL) against a stack on
SQLite in its data dir, on the same machine in the same run. Rounds rotate
between the two; the medians are compared. A diagnostic row gives the CPU
milliseconds per request of the stack (nginx, gunicorn), PostgreSQL and wrk:
on a machine this run alone keeps busy, their ratio is the req/s ratio.

7a/7b. Round trips to the database, counted by PostgreSQL: a third stack on a
database of its own, for which the server logs every statement
(log_min_duration_statement = 0 for that database alone, so the throughput
rounds pay no logging). A request's lines are those the log gained while it
ran (the server writes them before it answers). Per request, over many:

- round trips: simple queries (BEGIN, COMMIT, the pool's empty-query check
  of a connection idle for more than a second at checkout, ...) and
  extended-protocol executes, each a wait for the database; the one-off
  preparation of a query (psycopg prepares it at its 5th use on a
  connection) is left out;
- statements: those round trips less the pool's checks;
- transactions: BEGIN..COMMIT blocks, and statements run outside one.

Download and upload batches of 100 objects are counted against batches of
one (the counts must not grow with the objects), and uploads of one new
object each (batch + PUT + verify). A batch's login is checked in full (brake,
user, last good login, grants) by each worker at most once per
LOGIN_CACHE_SECONDS for a client; the rows count those requests apart from
the ones whose login the worker remembered.

The PostgreSQL server is the tests' (tests/engines/postgres.py: initdb and
pg_ctl from Debian's postgresql package, a free 127.0.0.1 port, fsync off as
in the tests; the read path measured writes nothing), started in the
benchmark's scratch dir and stopped at the end with pg_ctl, which signals
the postmaster whose PID it recorded.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import psycopg
import requests
from bench_batch import wrk
from common import (
    LFS_MEDIA_TYPE,
    Context,
    KiB,
    Row,
    log,
    median,
    own_cpu_seconds,
    remove,
    rotations,
    start_stack,
    tree_cpu_seconds,
)

from tests.engines.postgres import PostgresServer, binaries
from tests.stack import Stack

REPO = "bench/postgres"
OBJECTS = 100
RATIO_GOAL = 0.8
READER = ("bench-reader", "bench-password-1")
WRITER = ("bench-writer", "bench-password-2")
POSTGRESQL, SQLITE = "PostgreSQL", "SQLite"
# Every line of the server's log names the session and the database.
SERVER_SETTINGS = {"log_line_prefix": "BENCH|%c|%d|"}
LOG_LINE = re.compile(
    r"^BENCH\|(?P<session>[^|]*)\|(?P<database>[^|]*)\|LOG:  duration: \S+ ms  "
    r"(?P<kind>statement|execute [^:]*): ?(?P<query>.*)$"
)
TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE)\s+(\w+)", re.IGNORECASE)
HEADERS = {"Accept": LFS_MEDIA_TYPE, "Content-Type": LFS_MEDIA_TYPE}


# ---------------------------------------------------------------- counting


@dataclass
class Counts:
    """What the database did for some requests."""

    requests: int = 0
    round_trips: int = 0
    statements: int = 0
    transactions: int = 0
    checks: int = 0
    queries: Counter[str] = field(default_factory=Counter)

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.requests + other.requests,
            self.round_trips + other.round_trips,
            self.statements + other.statements,
            self.transactions + other.transactions,
            self.checks + other.checks,
            self.queries + other.queries,
        )

    def key(self) -> tuple[int, int, int]:
        return self.round_trips, self.statements, self.transactions

    def per_request(self) -> dict[str, float]:
        n = max(1, self.requests)
        return {
            "round_trips": self.round_trips / n,
            "statements": self.statements / n,
            "transactions": self.transactions / n,
            "pool_checks": self.checks / n,
        }

    def text(self) -> str:
        each = self.per_request()
        return (
            f"{_num(each['round_trips'])} round trips ({_num(each['statements'])} statements "
            f"+ {_num(each['pool_checks'])} pool checks), "
            f"{_num(each['transactions'])} transactions"
        )

    def query_text(self) -> str:
        n = max(1, self.requests)
        return ", ".join(f"{_num(calls / n)} x {shape}" for shape, calls in self.queries.items())


# The statement only a login checked in full makes (login_cache.py), and a
# pause past LOGIN_CACHE_SECONDS there, so some of the counted logins are.
LOGIN_READ = "SELECT users"
LOGIN_FORGOTTEN = 1.1
FULL_LOGIN_EVERY = 50


def _num(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.2f}"


def _shape(query: str) -> str:
    """`SELECT users`: the verb and first table of a statement."""
    table = TABLE.search(query)
    return query.split(None, 1)[0].upper() + (f" {table.group(1)}" if table else "")


def count_lines(lines: Iterable[str], database: str) -> Counts:
    """The statements of one request, from the server's log lines."""
    counts = Counts(requests=1)
    in_block: set[str] = set()
    for line in lines:
        match = LOG_LINE.match(line)
        if match is None or match["database"] != database:
            continue
        counts.round_trips += 1
        query = match["query"].strip()
        if not query:
            counts.checks += 1
            continue
        counts.statements += 1
        word = query.split(None, 1)[0].upper()
        if word in ("BEGIN", "START"):
            in_block.add(match["session"])
        elif word in ("COMMIT", "ROLLBACK", "END"):
            in_block.discard(match["session"])
            counts.transactions += 1
        else:
            counts.queries[_shape(query)] += 1
            if match["session"] not in in_block:
                counts.transactions += 1
    return counts


class StatementLog:
    """The server's log, read for the statements of one database."""

    def __init__(self, path: Path, database: str) -> None:
        self.path = path
        self.database = database

    def offset(self) -> int:
        return self.path.stat().st_size

    def counted(self, call: Callable[[], None]) -> Counts:
        """Run `call` (one request) and count what the database did for it."""
        start = self.offset()
        call()
        with open(self.path, "rb") as log_file:
            log_file.seek(start)
            text = log_file.read(self.offset() - start).decode(errors="replace")
        return count_lines(text.splitlines(), self.database)


# ---------------------------------------------------------------- requests


def _basic(user: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()


def _body(operation: str, objects: list[tuple[str, int]]) -> str:
    return json.dumps(
        {"operation": operation, "objects": [{"oid": o, "size": s} for o, s in objects]}
    )


def _batch(session: requests.Session, stack: Stack, body: str, auth: tuple[str, str]) -> list:
    answer = session.post(
        f"{stack.lfs_base(REPO)}/objects/batch", data=body, headers=HEADERS, auth=auth, timeout=60
    )
    if answer.status_code != 200:
        raise RuntimeError(f"batch answered {answer.status_code}: {answer.text[:200]}")
    return answer.json()["objects"]


def _offers(objects: list, operation: str, count: int) -> None:
    if len(objects) != count or not all(operation in o.get("actions", {}) for o in objects):
        raise RuntimeError(f"the batch does not offer {count} {operation}s: {objects[:2]}")


def _checked_batch(
    session: requests.Session,
    stack: Stack,
    body: str,
    auth: tuple[str, str],
    operation: str,
    count: int,
) -> None:
    _offers(_batch(session, stack, body, auth), operation, count)


class Uploader:
    """Uploads of new objects as git-lfs makes them: batch, PUT, verify."""

    def __init__(self, session: requests.Session, stack: Stack) -> None:
        self.session = session
        self.stack = stack
        self.step: dict[str, Callable[[], None]] = {}

    def prepare(self, data: bytes) -> str:
        """Set the three steps of uploading `data` (run in order); its oid."""
        oid = hashlib.sha256(data).hexdigest()
        actions: dict = {}

        def batch() -> None:
            (obj,) = _batch(self.session, self.stack, _body("upload", [(oid, len(data))]), WRITER)
            actions.update(obj["actions"])

        def put() -> None:
            up = actions["upload"]
            self._expect(self.session.put(up["href"], data=data, headers=up["header"], timeout=60))

        def verify() -> None:
            check = actions.get("verify")
            if check is None:  # the local store's PUT answers once the object is verified
                return
            headers = {**check["header"], **HEADERS}
            body = json.dumps({"oid": oid, "size": len(data)})
            self._expect(self.session.post(check["href"], data=body, headers=headers, timeout=60))

        self.step = {"batch": batch, "PUT": put, "verify": verify}
        return oid

    def upload(self, data: bytes) -> str:
        oid = self.prepare(data)
        for step in self.step.values():
            step()
        return oid

    @staticmethod
    def _expect(answer: requests.Response) -> None:
        if answer.status_code != 200:
            raise RuntimeError(f"{answer.request.method} answered {answer.status_code}")


def _setup(stack: Stack) -> list[tuple[str, int]]:
    """The users, and OBJECTS small objects in REPO; their (oid, size)."""
    stack.add_user(*READER, (REPO, "read"))
    stack.add_user(*WRITER, (REPO, "write"))
    with requests.Session() as session:
        uploader = Uploader(session, stack)
        return [(uploader.upload(_object(i)), 4 * KiB) for i in range(OBJECTS)]


_SALT = os.urandom(16)


def _object(i: int, size: int = 4 * KiB) -> bytes:
    """The same bytes for every stack of a run, new for every run."""
    return i.to_bytes(8, "little") + _SALT + bytes(size - 8 - len(_SALT))


# ---------------------------------------------------------------- run


def run(ctx: Context) -> list[Row]:
    bin_dir = binaries()
    if bin_dir is None:
        raise RuntimeError(
            "PostgreSQL's initdb and pg_ctl are missing (apt-get install postgresql)"
        )
    work = ctx.scratch("postgres")
    log("postgres: starting PostgreSQL")
    server_root = work / "server"
    server_root.mkdir()
    server = PostgresServer(server_root, bin_dir, settings=SERVER_SETTINGS).start()
    try:
        rows = _throughput(ctx, work, server)
        rows += _round_trips(ctx, work, server)
    finally:
        server.stop()
        remove(work)
    return rows


def _throughput(ctx: Context, work: Path, server: PostgresServer) -> list[Row]:
    duration = 3 if ctx.quick else 10
    rounds = ctx.runs or (2 if ctx.quick else 5)
    auth = _basic(READER)
    postmaster = int((server.data_dir / "postmaster.pid").read_text().split()[0])
    database_url = server.new_database()
    with (
        start_stack(
            work / "stack-postgresql", LFS_ANONYMOUS="none", LFS_DATABASE_URL=database_url
        ) as pg,
        start_stack(work / "stack-sqlite", LFS_ANONYMOUS="none") as sqlite,
    ):
        stacks = {POSTGRESQL: pg, SQLITE: sqlite}
        log(f"postgres: uploading {OBJECTS} small objects to each stack")
        objects = {name: _setup(stack) for name, stack in stacks.items()}
        if objects[POSTGRESQL] != objects[SQLITE]:
            raise RuntimeError("the two stacks hold different objects")
        body = _body("download", objects[SQLITE])
        with requests.Session() as session:
            for stack in stacks.values():
                _offers(_batch(session, stack, body, READER), "download", OBJECTS)
        urls = {name: f"{stack.lfs_base(REPO)}/objects/batch" for name, stack in stacks.items()}
        for name in stacks:  # warm-up, untimed: pools filled, the password check cached
            wrk(urls[name], body, work / f"{name}.lua", 1, auth=auth)
        rps: dict[str, list[float]] = {name: [] for name in stacks}
        p50: dict[str, list[float]] = {name: [] for name in stacks}
        p99: dict[str, list[float]] = {name: [] for name in stacks}
        # CPU ms per request: the stack (nginx, gunicorn), PostgreSQL, wrk.
        cpu: dict[str, list[dict[str, float]]] = {name: [] for name in stacks}
        log(f"postgres: {rounds} rounds of wrk {duration} s on {', '.join(stacks)}")
        for order in rotations(list(stacks), rounds):
            for name in order:
                meters = _cpu_meters(stacks[name], postmaster)
                before = {what: meter() for what, meter in meters.items()}
                result = wrk(urls[name], body, work / f"{name}.lua", duration, auth=auth)
                cpu[name].append(
                    {
                        what: 1000 * (meter() - before[what]) / result["requests"]
                        for what, meter in meters.items()
                    }
                )
                rps[name].append(result["rps"])
                p50[name].append(result["p50_us"] / 1000)
                p99[name].append(result["p99_us"] / 1000)
                log(f"  {name}: {rps[name][-1]:.0f} req/s, p99 {p99[name][-1]:.1f} ms")
    ctx.raw["postgres_batch"] = {
        "requests_per_second": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "cpu_ms_per_request": cpu,
        "duration_s": duration,
    }
    spent = {
        name: {what: median(run[what] for run in cpu[name]) for what in cpu[name][0]}
        for name in stacks
    }
    ours, ref = median(rps[POSTGRESQL]), median(rps[SQLITE])

    def latency(name: str) -> str:
        return f"p50 {median(p50[name]):.1f} ms, p99 {median(p99[name]):.1f} ms"

    runs = "; ".join(f"{name}: " + ", ".join(f"{r:.0f}" for r in rps[name]) for name in stacks)
    return [
        Row(
            "7",
            f"Batch, {OBJECTS}-object download with Basic auth, PostgreSQL vs SQLite "
            f"(wrk -t2 -c8 -d{duration}s, median of {rounds})",
            f"{ours:.0f} req/s",
            f"{ref:.0f} req/s (SQLite)",
            ours / ref,
            f">= {RATIO_GOAL}",
            ours / ref >= RATIO_GOAL,
            notes=f"a user with a read grant, password checked; runs: {runs}",
        ),
        Row(
            "7",
            "  latency of the same (medians of the rounds)",
            latency(POSTGRESQL),
            f"{latency(SQLITE)} (SQLite)",
            median(p99[SQLITE]) / median(p99[POSTGRESQL]),
            notes="ratio = SQLite p99 / PostgreSQL p99",
        ),
        Row(
            "7",
            "  diagnostic: CPU ms per request (medians of the rounds)",
            _cpu_text(spent[POSTGRESQL]),
            f"{_cpu_text(spent[SQLITE])} (SQLite)",
            sum(spent[SQLITE].values()) / sum(spent[POSTGRESQL].values()),
            notes="ratio = SQLite total / PostgreSQL total: the req/s ratio where this run "
            "alone keeps the cores busy; server = nginx + gunicorn; PostgreSQL idles "
            "during the SQLite rounds",
        ),
    ]


def _cpu_meters(stack: Stack, postmaster: int) -> dict[str, Callable[[], float]]:
    """Core-seconds used so far by the stack's processes, PostgreSQL's and wrk
    (a child of this process, counted once reaped)."""
    assert stack.proc is not None
    root = stack.proc.pid
    return {
        "server": lambda: tree_cpu_seconds(root),
        "PostgreSQL": lambda: tree_cpu_seconds(postmaster),
        "wrk": own_cpu_seconds,
    }


def _cpu_text(spent: dict[str, float]) -> str:
    parts = ", ".join(f"{what} {ms:.2f}" for what, ms in spent.items() if ms >= 0.005)
    return f"{sum(spent.values()):.2f} ({parts})"


def _round_trips(ctx: Context, work: Path, server: PostgresServer) -> list[Row]:
    n_batch = 20 if ctx.quick else 200
    n_upload = 10 if ctx.quick else 50
    url = server.new_database()
    database = url.rsplit("/", 1)[1]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{database}" SET log_min_duration_statement = 0')  # type: ignore[call-overload]
    statements = StatementLog(server.log, database)
    tally: dict[str, list[Counts]] = {}
    with (
        start_stack(work / "stack-counted", LFS_ANONYMOUS="none", LFS_DATABASE_URL=url) as stack,
        requests.Session() as session,
    ):
        log(f"postgres: uploading {OBJECTS} small objects to the counted stack")
        stored = _setup(stack)
        new = [(hashlib.sha256(_SALT + bytes([i])).hexdigest(), KiB) for i in range(OBJECTS)]
        batches = {
            "download-100": (_body("download", stored), READER, "download", OBJECTS),
            "download-1": (_body("download", stored[:1]), READER, "download", 1),
            "upload-100": (_body("upload", new), WRITER, "upload", OBJECTS),
            "upload-1": (_body("upload", new[:1]), WRITER, "upload", 1),
        }
        log(f"postgres: counting statements over {n_batch} batches of each kind")
        for kind, (body, user, operation, size) in batches.items():
            call = partial(_checked_batch, session, stack, body, user, operation, size)
            for _ in range(10):  # warm-up, uncounted
                call()
            tally[kind] = []
            for i in range(n_batch):
                if i % FULL_LOGIN_EVERY == 0:
                    time.sleep(LOGIN_FORGOTTEN)  # the next login is checked in full
                tally[kind].append(statements.counted(call))
        log(f"postgres: counting statements over {n_upload} uploads")
        uploader = Uploader(session, stack)
        for i in range(3):  # warm-up, uncounted
            uploader.upload(_object(OBJECTS + i, KiB))
        for i in range(n_upload):
            uploader.prepare(_object(OBJECTS + 3 + i, KiB))
            for step, call in uploader.step.items():
                tally.setdefault(f"upload {step}", []).append(statements.counted(call))
    totals = {kind: sum(counted, Counts()) for kind, counted in tally.items()}
    upload_steps = [k for k in tally if k.startswith("upload ")]
    per_upload = [
        sum(each, Counts()) for each in zip(*(tally[k] for k in upload_steps), strict=True)
    ]
    totals["upload"] = sum(per_upload, Counts())
    totals["upload"].requests = n_upload
    ctx.raw["postgres_round_trips"] = {
        kind: {**total.per_request(), "requests": total.requests, "queries": dict(total.queries)}
        for kind, total in totals.items()
    }

    def alike(counted: list[Counts]) -> bool:
        return len({c.key() for c in counted}) == 1

    def by_login(counted: list[Counts]) -> tuple[list[Counts], list[Counts]]:
        """Requests whose login the worker remembered, and those it checked
        in full (a worker's first request after the login cache's bound)."""
        full = [c for c in counted if c.queries[LOGIN_READ]]
        return [c for c in counted if not c.queries[LOGIN_READ]], full

    def constant_row(number: str, what: str, many: str, one: str) -> Row:
        (a, a_full), (b, b_full) = by_login(tally[many]), by_login(tally[one])
        a_sum, b_sum = sum(a, Counts()), sum(b, Counts())
        a_full_sum, b_full_sum = sum(a_full, Counts()), sum(b_full, Counts())
        same = a_sum.per_request() == b_sum.per_request() and (
            a_full_sum.per_request() == b_full_sum.per_request()
        )
        every = all(alike(group) for group in (a, b, a_full, b_full) if group)
        return Row(
            number,
            f"Database per {what} batch, {OBJECTS} objects vs 1 "
            f"(Basic auth; PostgreSQL's statement log, {n_batch} requests each)",
            f"{a_sum.text()} ({len(a)} requests, login remembered); "
            f"{a_full_sum.text()} ({len(a_full)}, login checked in full)",
            f"{b_sum.text()}; {b_full_sum.text()} (1 object)",
            a_sum.round_trips / b_sum.round_trips if b_sum.round_trips else None,
            "same for 1 and 100 objects",
            same and bool(a) and bool(b),
            notes=f"per request, login remembered: {a_sum.query_text()}; "
            f"checked in full: {a_full_sum.query_text()}"
            + ("" if every else "; NOT the same for every request of a kind"),
        )

    steps = ", ".join(
        f"{k.removeprefix('upload ')} {_num(totals[k].per_request()['round_trips'])}"
        for k in upload_steps
    )
    return [
        constant_row("7a", "download", "download-100", "download-1"),
        constant_row("7a", "upload", "upload-100", "upload-1"),
        Row(
            "7b",
            f"Database per upload of one new object (batch + PUT + verify, {n_upload} uploads)",
            totals["upload"].text(),
            f"round trips: {steps}",
            None,
            "same for every upload",
            alike(per_upload),
            notes=f"per upload: {totals['upload'].query_text()}",
        ),
    ]


if __name__ == "__main__":
    import run_all

    sys.exit(run_all.main(["--only", "postgres", *sys.argv[1:]]))
