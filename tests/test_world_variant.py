"""benchmarks/world_variant.py, discriminator_probe.py, sampling_seeds.py and
world_trajectory.py at a tiny size: one student of the demo recipe with overrides, what its
discriminator looks at, its scores over sampling seeds, and its scores while it trains."""

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import discriminator_probe  # noqa: E402
import sampling_seeds  # noqa: E402
import world_trajectory  # noqa: E402
import world_variant  # noqa: E402


@pytest.mark.slow
def test_variant_trains_with_overrides_and_its_discriminator_is_probed(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("MCM_CACHE", str(tmp_path / "cache"))
    args = ["--name", "v", "--out", str(tmp_path), "--steps", "1", "--prompts", "2"]
    args += ["--clips", "16", "--set", "discriminator.conditional=false"]
    assert world_variant.main(args) == 0
    done = json.loads((tmp_path / "v" / "table_run.json").read_text())
    assert done["config"]["discriminator"]["conditional"] is False
    assert set(done["results"]) == {"1", "2", "4", "8"}
    assert world_variant.main(args) == 0  # cached: no second training
    assert "cached" in capsys.readouterr().out

    assert discriminator_probe.main([str(tmp_path / "v"), "--images", "4"]) == 0
    logits = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["mean_logits"]
    assert len(logits) == 6 and all(math.isfinite(v) for v in logits.values())
    # Unconditional heads: swapping the captions changes nothing.
    assert logits["hq images, clean, video-style captions"] == pytest.approx(
        logits["hq images, clean, image captions"]
    )

    assert sampling_seeds.main([str(tmp_path / "v"), "--seeds", "0", "1", "--prompts", "2"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [x["seed"] for x in lines] == [0, 1]
    assert all(x["steps"] == 4 and x["num_videos"] == 2 for x in lines)
    # seed 0 reproduces the variant's own 4-step score (same seed, same sampler)
    assert lines[0]["watermark_score"] == pytest.approx(
        done["results"]["4"]["watermark_score"], abs=1e-4
    )


@pytest.mark.slow
def test_trajectory_scores_the_live_student_from_the_teacher_on(tmp_path, monkeypatch):
    import torch

    from mcm.demo import evaluation_prompts
    from mcm.models import load_teacher
    from mcm.models.sampling import sample_student
    from mcm.world.metrics import world_metrics
    from mcm.world.probes import load_probes

    monkeypatch.setenv("MCM_CACHE", str(tmp_path / "cache"))
    args = ["--name", "t", "--out", str(tmp_path), "--steps", "2", "--every", "1"]
    args += ["--prompts", "2", "--clips", "16", "--sample-steps", "2", "--seed", "3"]
    assert world_trajectory.main(args) == 0
    result = json.loads((tmp_path / "t" / "trajectory.json").read_text())
    rows = result["rows"]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert result["overrides"]["train"]["seed"] == 3
    assert (tmp_path / "t" / "trajectory.md").read_text().count("\n") == 2 + len(rows)
    # Before the first step the LoRA is zero: the scores are the teacher's under the same sampler.
    prompts = evaluation_prompts(2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as world_trajectory's default --threads
    try:
        videos = sample_student(load_teacher("world"), prompts, 2, seed=3, num_frames=8)
    finally:
        torch.set_num_threads(threads)
    teacher = world_metrics(videos, prompts, probes=load_probes())
    for key in world_trajectory.KEYS:
        assert rows[0][key] == pytest.approx(teacher[key], abs=2e-4)
