"""A SIGTERM to `mcm demo` (a real process) reaches its second training process: both
students stop at a step boundary with a checkpoint, and the demo exits 143."""

import os
import signal
import subprocess
import sys
import time

import pytest


@pytest.mark.slow
def test_sigterm_stops_both_students_with_checkpoints(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MCM_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "mcm", "demo", "--out", str(out), "--mcm-steps", "1000",
           "--lcm-steps", "1000", "--clips", "8", "--images", "world:hq_image:8", "--prompts", "2"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lcm_log = out / "lcm" / "train.log"
    deadline = time.time() + 300
    for line in proc.stdout:  # the MCM student's setup has begun ...
        if "distilling the MCM student" in line or time.time() > deadline:
            break
    while time.time() < deadline:  # ... and the LCM process handles signals
        if lcm_log.is_file() and "process has started" in lcm_log.read_text():
            break
        time.sleep(0.2)
    # Wherever each process is (its setup, warm-up or steps), it stops at a step boundary.
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, rest[-3000:]
    assert "stopped by signal SIGTERM" in rest
    for kind in ("mcm", "lcm"):
        assert list((out / kind).glob("checkpoint-*")), (kind, rest[-2000:])
    assert "Received signal" in lcm_log.read_text()  # the LCM process stopped at a step boundary
    assert not (out / "metrics.json").exists()
