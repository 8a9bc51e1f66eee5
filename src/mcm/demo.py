"""`mcm demo`: the whole method on the built-in world, offline, on a CPU, in minutes.

1. distil an MCM student (learnable motion head, latent discriminator on high-quality
   images, mixed trajectories) and a plain LCM student from the shipped world teacher;
2. sample the teacher (guided DDIM-50 and DDIM-4) and both students at 1/2/4 steps on a
   fixed set of evaluation prompts;
3. score every set with the world metrics, and write metrics.json and report.html.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path

import torch

from mcm.training.config import TrainConfig
from mcm.training.config_io import from_dict, to_dict
from mcm.world.scenes import COLOURS, DIRECTIONS, SHAPES

log = logging.getLogger("mcm.demo")

STUDENT_STEPS = (1, 2, 4)
TEACHER_GUIDANCE = 7.5

_DATA = {"num_frames": 8, "frame_stride": 1, "resolution": 32, "crop": "center", "num_workers": 0}
_BASE = {
    "model": {"teacher": "world", "lora_rank": 16, "lora_alpha": 16},
    "data": {"video": {"source": "world:lowq_video:512", **_DATA}},
    "train": {
        "batch_size": 4,
        "lr": 5e-4,
        "warmup_steps": 10,
        "checkpoint_every": 0,
        "keep_checkpoints": 1,
        "log_every": 10,
        "tracker": "none",
    },
}
# lambda_adv 3 and a discriminator lr of 3e-4 (paper: 1 and 1e-4) because the demo has only
# a few hundred steps: measured at 200 steps on the world, they raise mcm@4's prompt
# accuracy from 0.83 to 1.0 (docs/RESULTS.md, "Tuning the demo").
MCM_PRESET = {
    "method": {
        "motion": "learnable",
        "lambda_real": 0.5,
        "mixed_trajectories": True,
        "lambda_adv": 3.0,
    },
    "discriminator": {"enabled": True, "backbone": "latent", "lr": 3e-4},
    "data": {
        "images": {
            "source": "world:hq_image:512",
            "resolution": 32,
            "crop": "center",
            "num_workers": 0,
        }
    },
}
LCM_PRESET = {
    "method": {"motion": "raw", "mixed_trajectories": False},
    "discriminator": {"enabled": False},
}


def _merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def demo_config(
    kind: str,
    out_dir: Path,
    steps: int,
    images: str = "world:hq_image:512",
    clips: int = 512,
    overrides: dict | None = None,
) -> TrainConfig:
    """The demo's training config for ``kind`` ("mcm" or "lcm") on ``clips`` rendered clips.

    ``overrides`` (a nested dict, e.g. ``{"method": {"lambda_real": 0.0}}``) is merged last;
    its ``output_dir`` replaces ``out_dir / kind``.
    """
    preset = MCM_PRESET if kind == "mcm" else LCM_PRESET
    data = _merge(_BASE, preset)
    data["output_dir"] = str(out_dir / kind)
    data["train"]["max_steps"] = steps
    data["data"]["video"]["source"] = f"world:lowq_video:{clips}"
    if kind == "mcm":
        data["data"]["images"]["source"] = images
    return from_dict(TrainConfig, _merge(data, overrides or {}))


def evaluation_prompts(n: int = 24) -> list[str]:
    """n distinct world prompts covering every shape, colour and direction."""
    colours, directions = list(COLOURS), list(DIRECTIONS)
    return [
        f"a {colours[i % len(colours)]} {SHAPES[i % len(SHAPES)]} moving {directions[i % len(directions)]}"
        for i in range(n)
    ]


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def sample_and_score(
    sample, prompts: list[str], nfe: int, probes=None
) -> tuple[torch.Tensor, dict]:
    """Time ``sample()`` (-> videos [N, 3, F, H, W] for the N ``prompts``) and score them.

    Returns the videos and the world metrics dict plus ``"nfe"`` (per video) and
    ``"seconds_per_video"`` (the batched sampling time over N).
    """
    from mcm.world.metrics import world_metrics

    videos, seconds = _timed(sample)
    metrics = world_metrics(videos, prompts, probes=probes)
    metrics.update(nfe=nfe, seconds_per_video=seconds / len(prompts))
    return videos, metrics


def run_demo(
    out_dir: str | Path = "demo-out",
    mcm_steps: int = 200,
    lcm_steps: int = 100,
    num_prompts: int = 24,
    seed: int = 0,
    images: str = "world:hq_image:512",
    clips: int = 512,
) -> dict:
    """Run the demo; returns the metrics dict written to out_dir/metrics.json."""
    from mcm.generate import sample_student, sample_teacher
    from mcm.models import disable_adapters
    from mcm.report import write_report
    from mcm.training.recipe import DistillRecipe
    from mcm.world.data import resolve_world_sources
    from mcm.world.probes import load_probes

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    recipes = {}
    for kind, steps in (("mcm", mcm_steps), ("lcm", lcm_steps)):
        cfg = demo_config(kind, out, steps, images, clips)
        print(f"[demo] rendering/reading the world data for {kind} ...", flush=True)
        resolve_world_sources(cfg)
        print(f"[demo] distilling the {kind.upper()} student: {steps} steps", flush=True)
        recipe = DistillRecipe(cfg)
        recipe.setup()
        _, timings[f"train_{kind}_s"] = _timed(recipe.train)
        recipes[kind] = recipe

    prompts = evaluation_prompts(num_prompts)
    probes = load_probes()
    bundle = recipes["mcm"].bundle
    samples: dict[str, torch.Tensor] = {}
    results: dict[str, dict] = {}

    def score(key: str, sample, nfe: int) -> None:
        samples[key], metrics = sample_and_score(sample, prompts, nfe, probes)
        results[key] = metrics
        print(
            f"[demo] {key:>11}: prompt {metrics['prompt_accuracy']:.2f}  motion {metrics['motion_accuracy']:.2f}  "
            f"watermark {metrics['watermark_score']:.2f}  sharpness {metrics['sharpness']:.2f}  "
            f"frame_fd {metrics['frame_fd']:.2f}  {metrics['seconds_per_video']:.3f} s/video",
            flush=True,
        )

    print(f"[demo] sampling and scoring {len(prompts)} prompts ...", flush=True)
    with disable_adapters(bundle.denoiser):
        for steps in (50, 4):
            score(
                f"teacher@{steps}",
                lambda s=steps: sample_teacher(
                    bundle, prompts, s, TEACHER_GUIDANCE, seed=seed, num_frames=8
                ),
                2 * steps,
            )
    for kind, recipe in recipes.items():
        for steps in STUDENT_STEPS:
            score(
                f"{kind}@{steps}",
                lambda r=recipe, s=steps: sample_student(
                    r.bundle,
                    prompts,
                    s,
                    seed=seed,
                    timestep_scaling=r.cfg.method.timestep_scaling,
                    num_frames=8,
                ),
                steps,
            )

    timings["total_s"] = time.perf_counter() - t_start
    settings = {
        "prompts": prompts,
        "teacher": "world (shipped)",
        "teacher_sampling": f"DDIM, guidance {TEACHER_GUIDANCE} (2 NFE per step)",
        "student_sampling": "multistep consistency (LCM), timestep scaling 4, no CFG (1 NFE per step)",
        "seed": seed,
        "torch_threads": torch.get_num_threads(),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "configs": {k: to_dict(r.cfg) for k, r in recipes.items()},
    }
    report = {"metrics": results, "settings": settings}
    (out / "metrics.json").write_text(json.dumps(results, indent=1))
    (out / "settings.json").write_text(json.dumps(settings, indent=1))
    write_report(out, report, samples, prompts)
    print(f"[demo] done in {timings['total_s']:.0f} s: {out / 'report.html'}", flush=True)
    return results
