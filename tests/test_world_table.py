"""benchmarks/world_table.py end to end at a tiny size: real students on the shipped world
teacher, the JSON and markdown tables, and the cached runs reused by a second call.

The script is loaded from its file as a module (importlib; nothing is added to sys.path)
and its ``main`` runs in this process: a subprocess per call would import torch, diffusers
and mcm three more times (~10 s of CPU each on 2 cores)."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "world_table.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("benchmarks_world_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


world_table = _load_script()

ARGS = [
    "--steps",
    "2",
    "--prompts",
    "2",
    "--clips",
    "16",
    "--only",
    "main",
    "--only",
    "discriminator",
]


@pytest.mark.slow
def test_world_table_writes_tables_and_reuses_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("MCM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "table"
    assert world_table.main([*ARGS, "--out", str(out)]) == 0

    result = json.loads((out / "world_table.json").read_text())
    rows = result["rows"]
    keys = {(r["group"], r["method"], r["setting"], r["steps"]) for r in rows}
    assert {("main", "teacher", world_table.teacher_label(), s) for s in (50, 1, 2, 4, 8)} <= keys
    for method in ("lcm", "mcm"):
        assert {s for g, m, _, s in keys if (g, m) == ("main", method)} == {1, 2, 4, 8}
    assert {(s, n) for g, _, s, n in keys if g == "discriminator"} == {
        (setting, n)
        for setting in ("off", "on (preset)", "on, no warm-up", "on, caption-conditioned heads")
        for n in (1, 2, 4, 8)
    }
    assert len(rows) == 5 + 2 * 4 + 4 * 4
    for r in rows:
        assert r["nfe"] == (2 * r["steps"] if r["method"] == "teacher" else r["steps"])
        assert r["seconds_per_video"] > 0
        for name in ("prompt_accuracy", "watermark_score", "sharpness", "frame_fd", "video_fd"):
            assert math.isfinite(r["metrics"][name]), (r["run"], name)
        assert (r["train_seconds"] is None) == (r["method"] == "teacher")
    off = next(r for r in rows if r["setting"] == "off")
    assert off["overrides"]["discriminator"] == {"enabled": False}
    assert off["overrides"]["method"] == {"mixed_trajectories": False}
    assert result["configs"]["discriminator-off"]["discriminator"]["enabled"] is False
    assert result["configs"]["discriminator-conditional"]["discriminator"]["conditional"] is True
    assert result["configs"]["mcm"]["train"]["max_steps"] == 2
    # the preset student is trained once and shared by the main table and the ablation
    runs = {
        "teacher",
        "lcm",
        "mcm",
        "discriminator-off",
        "discriminator-no-warmup",
        "discriminator-conditional",
    }
    assert {r["run"] for r in rows} == runs
    assert sorted(p.name for p in (out / "runs").iterdir()) == [
        "discriminator-conditional",
        "discriminator-no-warmup",
        "discriminator-off",
        "lcm",
        "mcm",
        "teacher",
    ]

    md = (out / "world_table.md").read_text()
    assert "### Main table" in md and "### Ablation: discriminator" in md
    assert (
        "| mcm | on (preset) | 4 |" in md
        and f"| teacher | {world_table.teacher_label()} | 50 |" in md
    )

    # A second call reuses every run; one whose scoring was lost is only sampled again.
    trained = {n: (out / "runs" / n / "train.json").stat().st_mtime_ns for n in ("lcm", "mcm")}
    (out / "runs" / "lcm" / "table_run.json").unlink()
    assert world_table.main([*ARGS, "--out", str(out)]) == 0
    again = json.loads((out / "world_table.json").read_text())
    assert trained == {
        n: (out / "runs" / n / "train.json").stat().st_mtime_ns for n in ("lcm", "mcm")
    }
    strip = [({k: v for k, v in r.items() if k != "seconds_per_video"}) for r in again["rows"]]
    assert strip == [({k: v for k, v in r.items() if k != "seconds_per_video"}) for r in rows]

    # Other settings on the same folder are refused, not mixed in.
    with pytest.raises(ValueError, match="other settings"):
        world_table.main(["--steps", "3", *ARGS[2:], "--out", str(out)])
