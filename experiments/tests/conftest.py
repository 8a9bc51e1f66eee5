"""Fixtures for the experiments' tests: each script runs as a real process
(``python experiments/NAME.py ...``, as its docstring says), and its helpers are read with
``runpy.run_path``; nothing is added to ``sys.path``."""

import os

# Never touch the network: a failed hub lookup otherwise retries for ~50 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import runpy  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

EXPERIMENTS = Path(__file__).resolve().parents[1]

# One thread, as in tests/: tiny models gain nothing from more on a shared 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(16)


@pytest.fixture
def run_script():
    """run_script(name, *args) -> the finished ``python experiments/<name>.py args`` process
    (stdout and stderr as text); fails the test, with the script's output, unless it exits 0.
    It inherits the environment (``MCM_CACHE`` set by monkeypatch included)."""

    def run(name: str, *args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, str(EXPERIMENTS / f"{name}.py"), *map(str, args)],
            cwd=EXPERIMENTS.parent,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            pytest.fail(
                f"{name}.py exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
                f"\n--- stderr\n{proc.stderr[-4000:]}"
            )
        return proc

    return run


@pytest.fixture
def load_script():
    """load_script(name) -> the globals of experiments/<name>.py run as a module, not as
    ``__main__`` (its functions and constants; ``main`` does not run)."""

    def load(name: str) -> dict:
        return runpy.run_path(str(EXPERIMENTS / f"{name}.py"))

    return load
