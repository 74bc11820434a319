"""How many CPUs this process may use: its affinity, capped by a cgroup quota.

nginx's `worker_processes auto` counts the host's CPUs; in a container
limited to one CPU (`docker run --cpus 1`) that starts a worker per host
core, all throttled. This count follows the limit instead.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _ratio(quota: str, period: str) -> float | None:
    """CPUs a quota allows, or None when unlimited or unreadable."""
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:
        return None  # "max": no limit
    if quota_us <= 0 or period_us <= 0:
        return None  # -1 in cgroup v1: no limit
    return quota_us / period_us


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _levels(base: Path, cgroup: str) -> list[Path]:
    """The cgroup's folder under a mount and each parent up to the mount.

    In a container the path in /proc/self/cgroup may name the host's
    hierarchy while the mount shows only the container's own part: then
    the mount itself is the cgroup.
    """
    own = base / cgroup.strip("/")
    if not own.is_dir():
        return [base]
    levels = [own]
    while levels[-1] != base:
        levels.append(levels[-1].parent)
    return levels


def _v2_limit(base: Path, cgroup: str) -> float | None:
    limits = []
    for level in _levels(base, cgroup):
        text = _read(level / "cpu.max")
        if text and len(text.split()) == 2:
            limit = _ratio(*text.split())
            if limit is not None:
                limits.append(limit)
    return min(limits, default=None)


def _v1_limit(base: Path, cgroup: str) -> float | None:
    limits = []
    for level in _levels(base, cgroup):
        quota, period = _read(level / "cpu.cfs_quota_us"), _read(level / "cpu.cfs_period_us")
        if quota and period:
            limit = _ratio(quota, period)
            if limit is not None:
                limits.append(limit)
    return min(limits, default=None)


def cgroup_cpu_limit(proc_cgroup: Path = PROC_CGROUP, root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota of this process's cgroup (v2 cpu.max or v1 cfs_quota_us), if any."""
    text = _read(proc_cgroup)
    if text is None:
        return None
    limits = []
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, cgroup = rest.partition(":")
        if hierarchy == "0" and not controllers:
            unified = root if (root / "cgroup.controllers").exists() else root / "unified"
            limits.append(_v2_limit(unified, cgroup))
        elif "cpu" in controllers.split(","):
            for mount in sorted(root.glob("*")):
                if "cpu" in mount.name.split(",") and mount.is_dir():
                    limits.append(_v1_limit(mount, cgroup))
    return min((limit for limit in limits if limit is not None), default=None)


def available_cpus(proc_cgroup: Path = PROC_CGROUP, root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may run on, rounded up to whole CPUs under a quota; at least 1."""
    count = len(os.sched_getaffinity(0))
    limit = cgroup_cpu_limit(proc_cgroup, root)
    if limit is not None:
        count = min(count, math.ceil(limit))
    return max(1, count)
