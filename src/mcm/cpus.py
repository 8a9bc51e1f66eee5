"""How many CPUs this process may use: its CPU affinity, capped by a cgroup CPU quota
(containers and cluster jobs often get fewer CPUs than ``os.cpu_count()`` reports)."""

from __future__ import annotations

import math
import os
from pathlib import Path


def cgroup_cpu_quota(root: str | Path = "/sys/fs/cgroup") -> float | None:
    """The CPUs a cgroup quota allows this process (e.g. 1.5), or None without a quota:
    cgroup v2's ``cpu.max`` ("quota period") or v1's ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``."""
    root = Path(root)
    try:
        if (root / "cpu.max").is_file():
            quota, period = (root / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1 = root / "cpu"
        if (v1 / "cpu.cfs_quota_us").is_file():
            quota = int((v1 / "cpu.cfs_quota_us").read_text())
            return None if quota <= 0 else quota / int((v1 / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):  # unreadable or unexpected: no quota known
        return None
    return None


def usable_cpus() -> int:
    """The CPUs this process may use: its CPU affinity, capped by a cgroup quota."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = cgroup_cpu_quota()
    return max(1, min(cpus or 1, math.ceil(quota) if quota else cpus or 1))
