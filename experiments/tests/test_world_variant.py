"""experiments/world_variant.py, discriminator_probe.py, sampling_seeds.py and
world_trajectory.py at a tiny size: one student of the demo recipe with overrides, what its
discriminator looks at, its scores over sampling seeds, and its scores while it trains.
Each script runs as ``python experiments/NAME.py`` (the ``run_script`` fixture)."""

import json
import math

import pytest


@pytest.mark.slow
def test_variant_trains_with_overrides_and_its_discriminator_is_probed(
    tmp_path, monkeypatch, run_script
):
    monkeypatch.setenv("MCM_CACHE", str(tmp_path / "cache"))
    args = ["--name", "v", "--out", str(tmp_path), "--steps", "1", "--prompts", "2"]
    args += ["--clips", "16", "--set", "discriminator.conditional=false"]
    run_script("world_variant", *args)
    done = json.loads((tmp_path / "v" / "table_run.json").read_text())
    assert done["config"]["discriminator"]["conditional"] is False
    assert set(done["results"]) == {"1", "2", "4", "8"}
    assert "cached" in run_script("world_variant", *args).stdout  # no second training
    # the recipe's one-step phase ran, as short as the training, and gave the 1-step row
    assert (tmp_path / "v" / "one_step" / "export" / "merged" / "model_index.json").is_file()
    phase = ["--run", tmp_path / "v", "--name", "p", "--set", "one_step.steps=2"]
    run_script("one_step_phase", *phase, "--seeds", "0", "1", "--clips", "16")
    scores = json.loads((tmp_path / "v" / "one_step-p" / "scores.json").read_text())
    assert set(scores["by_seed"]) == {"0", "1"} and 0 <= scores["mean"]["prompt_accuracy"] <= 1
    assert (tmp_path / "v" / "one_step" / "export" / "merged" / "model_index.json").is_file()

    out = run_script("discriminator_probe", tmp_path / "v", "--images", "4").stdout
    logits = json.loads(out.strip().splitlines()[-1])["mean_logits"]
    assert len(logits) == 6 and all(math.isfinite(v) for v in logits.values())
    # Unconditional heads: swapping the captions changes nothing.
    assert logits["hq images, clean, video-style captions"] == pytest.approx(
        logits["hq images, clean, image captions"]
    )

    out = run_script("sampling_seeds", tmp_path / "v", "--seeds", "0", "1", "--prompts", "2")
    lines = [json.loads(x) for x in out.stdout.strip().splitlines()]
    assert [x["seed"] for x in lines] == [0, 1]
    assert all(x["steps"] == 4 and x["num_videos"] == 2 for x in lines)
    # seed 0 reproduces the variant's own 4-step score (same seed, same sampler)
    assert lines[0]["watermark_score"] == pytest.approx(
        done["results"]["4"]["watermark_score"], abs=1e-4
    )


@pytest.mark.slow
def test_trajectory_scores_the_live_student_from_the_teacher_on(
    tmp_path, monkeypatch, run_script, load_script
):
    import torch

    from mcm.demo import evaluation_prompts
    from mcm.models import load_teacher
    from mcm.models.sampling import sample_student
    from mcm.world.metrics import world_metrics
    from mcm.world.probes import load_probes

    monkeypatch.setenv("MCM_CACHE", str(tmp_path / "cache"))
    args = ["--name", "t", "--out", str(tmp_path), "--steps", "2", "--every", "1"]
    args += ["--prompts", "2", "--clips", "16", "--sample-steps", "2", "--seed", "3"]
    run_script("world_trajectory", *args)
    result = json.loads((tmp_path / "t" / "trajectory.json").read_text())
    rows = result["rows"]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert result["overrides"]["train"]["seed"] == "3"  # as given on the command line
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
    for key in load_script("world_trajectory")["KEYS"]:
        assert rows[0][key] == pytest.approx(teacher[key], abs=2e-4)
