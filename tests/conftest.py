import os

# Tests never touch the network: a failed hub lookup otherwise retries for ~50 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# One thread: tiny models gain nothing from more, and two spinning OpenMP threads make each
# forward ~10x slower whenever another job shares the 2 cores.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(16)


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """family -> a saved tiny pipeline directory ("modelscope", "animatediff")."""
    from mcm.models.tiny import save_tiny_pipeline

    root = tmp_path_factory.mktemp("tiny")
    return {f: save_tiny_pipeline(f, root / f) for f in ("modelscope", "animatediff")}


def pytest_collection_modifyitems(config, items):
    """Start the tests marked slow first, each followed by a short one, then the rest.

    `make test` runs two pytest-xdist workers that take one test at a time
    (--maxschedchunk 1) in this order: each starts on a long test, the long ones run side by
    side, and the short ones fill the gaps at the end, instead of a long test at the end
    keeping one worker busy while the other waits. The order is stable, so a run alone
    (no -n) differs only in that the slow tests come first.
    """
    slow = [item for item in items if item.get_closest_marker("slow")]
    fast = [item for item in items if not item.get_closest_marker("slow")]
    head = [item for pair in zip(slow, fast) for item in pair]
    n = min(len(slow), len(fast))
    items[:] = head + slow[n:] + fast[n:]
