"""`mcm demo` end to end at a tiny size: real training, sampling, metrics and report."""

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mcm.demo import STUDENT_STEPS, cache_clip_latents, demo_config, run_demo
from mcm.training.config import TrainConfig
from mcm.training.config_io import from_dict
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


@pytest.fixture
def keep_torch_threads():
    """The demo samples with both training processes' threads: restore the count after."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_demo_writes_report_and_metrics(tmp_path, monkeypatch, keep_torch_threads):
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
    # mcm@1 comes from the one-step student, its phase as short as the training (3 steps)
    assert (out / "mcm" / "one_step" / "export" / "merged" / "model_index.json").is_file()
    assert "3 steps" in settings["one_step_students"]["mcm"]
    assert settings["lcm_trained_in_parallel"] and (out / "lcm" / "train.log").is_file()
    cache = settings["configs"]["mcm"]["data"]["video"]["latent_cache"]
    assert cache == str(out / "latent-cache") and (out / "latent-cache" / "cache.json").is_file()

    # The LCM baseline trained in the second process is the student this process trains from
    # the same config (same seed, one thread): the same LoRA up to float rounding, hence the
    # same samples and scores. (Cheaper than a second, sequential demo: 2 steps, no sampling.)
    cfg = from_dict(TrainConfig, dict(settings["configs"]["lcm"], output_dir=str(tmp_path / "lcm")))
    torch.set_num_threads(settings["torch_threads"]["training"])
    recipe = DistillRecipe(cfg)
    recipe.setup()
    recipe.train()
    lora = Path("export") / "lora" / "pytorch_lora_weights.safetensors"
    parallel, here = load_file(out / "lcm" / lora), load_file(tmp_path / "lcm" / lora)
    assert parallel.keys() == here.keys() and len(here) > 0
    for name, weight in here.items():
        torch.testing.assert_close(parallel[name], weight, rtol=1e-5, atol=1e-6, msg=name)
    # ... and the 2 steps trained it: the LoRA is not the zero update it starts as
    assert any(torch.count_nonzero(w) for name, w in here.items() if "lora_B" in name)
