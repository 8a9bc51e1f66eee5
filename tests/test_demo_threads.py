"""`mcm demo` chooses its thread split from the CPUs it may use (affinity, cgroup quota)."""

import os

from mcm.cpus import cgroup_cpu_quota, usable_cpus


def test_cgroup_quotas_v2_and_v1(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(v2) == 1.5
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(v2) is None
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("200000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(tmp_path / "v1") == 2.0
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(tmp_path / "v1") is None
    (v1 / "cpu.cfs_quota_us").write_text("garbage\n")
    assert cgroup_cpu_quota(tmp_path / "v1") is None
    assert cgroup_cpu_quota(tmp_path / "none") is None


def test_usable_cpus_follow_the_affinity():
    mask = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(mask)})
        assert usable_cpus() == 1
    finally:
        os.sched_setaffinity(0, mask)
    assert 1 <= usable_cpus() <= len(mask)
