"""`mcm demo` end to end at a tiny size: real training, sampling, metrics and report."""

import copy
import json

import pytest
import torch

from mcm.demo import STUDENT_STEPS, cache_clip_latents, demo_config, run_demo
from mcm.training.recipe import DistillRecipe
from mcm.world.data import resolve_world_sources


def test_the_clip_latent_cache_gives_the_uncached_batches_bit_for_bit(tmp_path, monkeypatch):
    monkeypatch.setenv("MCM_CACHE", str(tmp_path / "cache"))
    cfg = demo_config("mcm", tmp_path, 3, images="world:hq_image:16", clips=16)
    resolve_world_sources(cfg)
    cached = copy.deepcopy(cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the demo's training processes
    try:
        cached.data.video.latent_cache = cache_clip_latents(cfg, tmp_path / "latent-cache")
        batches = []
        for c in (cfg, cached):
            recipe = DistillRecipe(c)
            recipe.setup()
            batches.append([recipe.next_batch() for _ in range(6)])  # 24 draws of 16 clips
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*batches):
        assert torch.equal(a.latents, b.latents)
        assert torch.equal(a.text_emb, b.text_emb) and torch.equal(a.real_frames, b.real_frames)


@pytest.mark.slow
def test_demo_writes_report_and_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("MCM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    run_demo(out, mcm_steps=3, lcm_steps=2, num_prompts=4, images="world:hq_image:16", clips=16)
    metrics = json.loads((out / "metrics.json").read_text())
    expected = {"teacher@50", "teacher@4"} | {
        f"{k}@{s}" for k in ("mcm", "lcm") for s in STUDENT_STEPS
    }
    assert set(metrics) == expected
    for key, m in metrics.items():
        assert {
            "prompt_accuracy",
            "motion_accuracy",
            "watermark_score",
            "sharpness",
            "frame_fd",
            "video_fd",
        } <= set(m)
        assert m["nfe"] == (
            2 * int(key.split("@")[1]) if key.startswith("teacher") else int(key.split("@")[1])
        )
        assert m["seconds_per_video"] > 0
    html = (out / "report.html").read_text()
    assert "<svg" in html and "mcm@4" in html
    gifs = sorted(p.name for p in (out / "videos").iterdir())
    assert "mcm-4-00.gif" in gifs and "teacher-50-03.gif" in gifs
    assert (out / "mcm" / "export" / "merged" / "model_index.json").is_file()
    settings = json.loads((out / "settings.json").read_text())
    assert settings["lcm_trained_in_parallel"] and (out / "lcm" / "train.log").is_file()
    cache = settings["configs"]["mcm"]["data"]["video"]["latent_cache"]
    assert cache == str(out / "latent-cache") and (out / "latent-cache" / "cache.json").is_file()

    # The LCM baseline trained in this process instead: the same student, the same scores
    # (up to float rounding: the parallel one is reloaded from its exported LoRA).
    again = tmp_path / "sequential"
    run_demo(again, 3, 2, num_prompts=4, images="world:hq_image:16", clips=16, parallel=False)
    sequential = json.loads((again / "metrics.json").read_text())
    for key in (f"lcm@{s}" for s in STUDENT_STEPS):
        for name, value in sequential[key].items():
            if name != "seconds_per_video":
                assert metrics[key][name] == pytest.approx(value, rel=1e-5, abs=1e-6), (key, name)
