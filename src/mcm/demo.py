"""`mcm demo`: the whole method on the built-in world, offline, on a CPU, in minutes.

1. distil an MCM student (learnable motion head, latent discriminator on high-quality
   images, mixed trajectories) and a plain LCM student from the shipped world teacher;
2. sample the teacher (guided DDIM-50 and DDIM-4) and both students at 1/2/4 steps on a
   fixed set of evaluation prompts;
3. score every set with the world metrics, and write metrics.json and report.html.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import multiprocessing
import os
import shutil
import time
from pathlib import Path

import torch

from mcm.data.cache import write_latent_cache
from mcm.models import load_teacher
from mcm.models.sampling import sample_student, sample_teacher
from mcm.report import write_report
from mcm.training.config import TrainConfig
from mcm.training.config_io import from_dict, to_dict
from mcm.training.recipe import DistillRecipe
from mcm.world.data import resolve_world_sources
from mcm.world.metrics import world_metrics
from mcm.world.probes import load_probes
from mcm.world.scenes import COLOURS, DIRECTIONS, SHAPES
from mcm.world.train_config import TEACHER_GUIDANCE

log = logging.getLogger("mcm.demo")

STUDENT_STEPS = (1, 2, 4)
MCM_STEPS = 250  # the MCM student's distillation steps (after the discriminator's warm-up)

_DATA = {"num_frames": 8, "frame_stride": 1, "resolution": 32, "crop": "center", "num_workers": 0}
_BASE = {
    "model": {"teacher": "world", "lora_rank": 16, "lora_alpha": 16},
    # The teacher's targets are guided at w in [1.5, 3] (LCM form, CFG scale 2.5-4): the
    # world teacher loses shape accuracy at higher guidance (docs/WORLD.md).
    "method": {"w_min": 1.5, "w_max": 3.0},
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
# Measured at 200 steps on the world (docs/RESULTS.md, "The discriminator warm-up"). The
# discriminator judges appearance, not captions: unconditional heads (the world's image
# captions never say "moving ...", so caption-conditioned heads separate real from fake by
# the text alone), noise levels t <= 100 (more noise drowns the look), translation as the
# only augmentation (the colour jitter is meant for pixels, not latents) and lr 2e-3 (paper:
# 1e-4). Its heads alone need ~150 steps to learn the look (discriminator_separation.py),
# so they take 150 D-only steps first; with that head start the adversarial term is strong
# from step 1, and lambda_adv 0.35 (paper: 1) balances it: higher weights shed more of the
# watermark but lose the prompt. Chosen on the mean over four training seeds, which spread
# wider than neighbouring weights do (docs/RESULTS.md, "One seed is not enough").
MCM_PRESET = {
    # Right after the warm-up the adversarial term collapses the student and the consistency
    # loss then brings the teacher back; at lr 5e-4 with a cosine decay part of the watermark
    # comes back with it, how much depending on the seed. At a constant 1e-4 the collapse is
    # gentler and the recovery keeps the watermark off (by step 250; docs/RESULTS.md,
    # "What happens during the training").
    "train": {"lr": 1e-4, "lr_schedule": "constant"},
    "method": {
        "motion": "learnable",
        "lambda_real": 0.5,
        "mixed_trajectories": True,
        "lambda_adv": 0.35,
    },
    "discriminator": {
        "enabled": True,
        "backbone": "latent",
        "lr": 2e-3,
        "conditional": False,
        "latent_t_max": 100,
        "augment": "translation",
        "warmup_steps": 150,
    },
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
        disc = data["discriminator"]  # a short run gets no longer a warm-up than its training
        disc["warmup_steps"] = min(disc["warmup_steps"], steps)
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
    videos, seconds = _timed(sample)
    metrics = world_metrics(videos, prompts, probes=probes)
    metrics.update(nfe=nfe, seconds_per_video=seconds / len(prompts))
    return videos, metrics


def _take_over_threads(process):
    """An ``on_step`` that doubles this process's torch threads once ``process`` (the LCM
    baseline, trained with as many threads) has finished, so its cores are not left idle."""
    state = {"done": False}

    def on_step(step: int) -> None:
        if not state["done"] and not process.is_alive():
            torch.set_num_threads(2 * torch.get_num_threads())
            log.info(
                "LCM baseline finished at MCM step %d: now %d threads",
                step,
                torch.get_num_threads(),
            )
            state["done"] = True

    return on_step


def cache_clip_latents(cfg: TrainConfig, folder: Path) -> str:
    """Write a latent cache of ``cfg``'s training clips into ``folder`` (replaced); returns it.

    The MCM run draws 400 batches from 512 clips, and uncached every batch re-encodes its
    clips with the VAE (timings: docs/RESULTS.md). The demo's views are fixed (all 8 frames,
    the whole frame) and the VAE encodes chunks of ``vae_chunk_size`` frames, so at the same
    thread count the cached latents equal the uncached ones bit for bit.
    """
    shutil.rmtree(folder, ignore_errors=True)
    m = cfg.model
    vae = load_teacher(m.teacher, dtype_policy=m.frozen_dtype, vae_chunk_size=m.vae_chunk_size).vae
    write_latent_cache(
        cfg.data.video,
        vae.encode,
        folder,
        batch_size=cfg.train.batch_size,
        seed=cfg.train.seed,
        teacher=m.teacher,
    )
    return str(folder)


def _train_lcm_process(cfg: TrainConfig, threads: int, log_path: str) -> None:
    """Child process: train the LCM baseline, output to ``log_path``, time in ``timing.json``."""
    with open(log_path, "w") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        torch.set_num_threads(threads)
        recipe = DistillRecipe(cfg)
        recipe.setup()
        _, seconds = _timed(recipe.train)
        (Path(cfg.output_dir) / "timing.json").write_text(json.dumps({"train_s": seconds}))


def run_demo(
    out_dir: str | Path = "demo-out",
    mcm_steps: int = MCM_STEPS,
    lcm_steps: int = 100,
    num_prompts: int = 24,
    seed: int = 0,
    images: str = "world:hq_image:512",
    clips: int = 512,
    parallel: bool | None = None,
) -> dict:
    """Run the demo; returns the metrics dict written to out_dir/metrics.json.

    ``parallel`` (default: when the machine has >= 2 CPUs) trains the LCM baseline in a
    second process while this one trains the MCM student; its output goes to
    out_dir/lcm/train.log. Each student's training is seeded by its own config, so the
    students are the same either way (up to float rounding).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if parallel is None:
        parallel = (os.cpu_count() or 1) >= 2
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    threads = torch.get_num_threads()  # per training process
    cfgs = {
        kind: demo_config(kind, out, steps, images, clips)
        for kind, steps in (("mcm", mcm_steps), ("lcm", lcm_steps))
    }
    for kind, cfg in cfgs.items():
        print(f"[demo] rendering/reading the world data for {kind} ...", flush=True)
        resolve_world_sources(cfg)
    lcm_process = None
    if parallel:
        Path(cfgs["lcm"].output_dir).mkdir(parents=True, exist_ok=True)
        lcm_log = Path(cfgs["lcm"].output_dir) / "train.log"
        print(
            f"[demo] distilling the LCM student ({lcm_steps} steps) in a second process: {lcm_log}",
            flush=True,
        )
        lcm_process = multiprocessing.get_context("spawn").Process(
            target=_train_lcm_process, args=(cfgs["lcm"], torch.get_num_threads(), str(lcm_log))
        )
        lcm_process.start()
    try:
        print("[demo] encoding the MCM student's clips once (a latent cache) ...", flush=True)
        cfgs["mcm"].data.video.latent_cache = cache_clip_latents(cfgs["mcm"], out / "latent-cache")
        for kind, cfg in cfgs.items():
            if kind == "lcm" and lcm_process is not None:
                continue
            print(
                f"[demo] distilling the {kind.upper()} student: {cfg.train.max_steps} steps",
                flush=True,
            )
            recipe = DistillRecipe(cfg)
            recipe.setup()
            on_step = _take_over_threads(lcm_process) if lcm_process is not None else None
            _, timings[f"train_{kind}_s"] = _timed(functools.partial(recipe.train, on_step))
            del recipe
    except BaseException:  # e.g. Ctrl-C: do not leave the LCM process running
        if lcm_process is not None:
            lcm_process.terminate()
        raise
    if lcm_process is not None:
        print("[demo] waiting for the LCM student ...", flush=True)
        lcm_process.join()
        if lcm_process.exitcode != 0:
            raise RuntimeError(
                f"The LCM baseline's process failed (exit code {lcm_process.exitcode}); its "
                f"output is in {lcm_log}. Rerun with --sequential to train it in this process."
            )
        timing = json.loads((Path(cfgs["lcm"].output_dir) / "timing.json").read_text())
        timings["train_lcm_s"] = timing["train_s"]
        torch.set_num_threads(2 * threads)  # both processes' cores for the sampling
    # Sample what a user deploys: the stock teacher, and each student's merged export (the
    # same weights as its LoRA; no adapter layers left to slow either side's timing down).
    bundle = load_teacher(cfgs["mcm"].model.teacher)
    students = {
        kind: load_teacher(str(Path(c.output_dir) / "export" / "merged"))
        for kind, c in cfgs.items()
    }

    prompts = evaluation_prompts(num_prompts)
    probes = load_probes()
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
    for steps in (50, 4):
        score(
            f"teacher@{steps}",
            lambda s=steps: sample_teacher(
                bundle, prompts, s, TEACHER_GUIDANCE, seed=seed, num_frames=8
            ),
            2 * steps,
        )
    for kind, student in students.items():
        for steps in STUDENT_STEPS:
            score(
                f"{kind}@{steps}",
                lambda b=student, s=steps, k=kind: sample_student(
                    b,
                    prompts,
                    s,
                    seed=seed,
                    timestep_scaling=cfgs[k].method.timestep_scaling,
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
        "torch_threads": {"training": threads, "sampling": torch.get_num_threads()},
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "lcm_trained_in_parallel": lcm_process is not None,
        "configs": {k: to_dict(c) for k, c in cfgs.items()},
    }
    report = {"metrics": results, "settings": settings}
    (out / "metrics.json").write_text(json.dumps(results, indent=1))
    (out / "settings.json").write_text(json.dumps(settings, indent=1))
    write_report(out, report, samples, prompts)
    print(f"[demo] done in {timings['total_s']:.0f} s: {out / 'report.html'}", flush=True)
    return results
