"""`mcm demo --family wan` on a flow-matching world teacher built here (a few steps: the
plumbing, not the quality): the same metrics keys as the UNet demo, and exports that stock
diffusers loads as WanPipeline and samples with N transformer calls at N steps."""

import json

import pytest
import torch
from diffusers import DiffusionPipeline, WanPipeline

from mcm.cli import main

KEYS = {"teacher@50", "teacher@4", *(f"{k}@{n}" for k in ("mcm", "lcm") for n in (1, 2, 4))}


@pytest.fixture
def one_torch_thread():
    """The demo sets torch's threads for its own processes: one here (the other xdist
    worker has the other core), and the count restored after, for the tests that follow."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_demo_family_wan_runs_and_exports_stock_wan_pipelines(
    tmp_path, monkeypatch, one_torch_thread
):
    monkeypatch.setenv("MCM_CACHE", str(tmp_path / "cache"))
    teacher = tmp_path / "teacher"
    build = ["world", "build", "--family", "wan", "--out", str(teacher), "--vae-steps", "1",
             "--unet-steps", "1", "--vae-batch-size", "36", "--batch-size", "8",
             "--pool-size", "16", "--no-progress"]  # fmt: skip
    assert main(build) == 0
    out = tmp_path / "demo"
    demo = ["demo", "--family", "wan", "--teacher", str(teacher), "--mcm-steps", "1",
            "--lcm-steps", "1", "--clips", "4", "--prompts", "2", "--images",
            "world:hq_image:4", "--sequential", "--threads", "1", "--out", str(out)]  # fmt: skip
    assert main(demo) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == KEYS
    assert json.loads((out / "settings.json").read_text())["scored_frames"] == "0-7"
    pipe = DiffusionPipeline.from_pretrained(out / "mcm" / "export" / "merged")
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe, WanPipeline)
    calls = []
    pipe.transformer.register_forward_hook(lambda *_: calls.append(1))
    frames = pipe("a red circle moving left", num_inference_steps=2, guidance_scale=1.0,
                  num_frames=9, height=32, width=32, max_sequence_length=16,
                  generator=torch.Generator().manual_seed(0), output_type="pt").frames  # fmt: skip
    assert frames.shape == (1, 9, 3, 32, 32) and len(calls) == 2


def test_demo_family_must_match_the_teacher(capsys):
    assert main(["demo", "--family", "wan", "--teacher", "world", "--out", "/nonexistent/x"]) == 2
    assert "--family unet" in capsys.readouterr().err
