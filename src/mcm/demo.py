"""`mcm demo`: the whole method on the built-in world, offline, on a CPU, in minutes.

1. distil an MCM student (learnable motion head, latent discriminator on high-quality
   images, mixed trajectories) and a plain LCM student from the shipped world teacher
   (``family="wan"``: from a flow-matching world teacher, a stock WanPipeline on 9-frame
   clips, of which frames 0-7 are scored);
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
import signal
import sys
import time
from pathlib import Path

import torch
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

from mcm.cpus import usable_cpus
from mcm.data.cache import write_latent_cache
from mcm.errors import InputError
from mcm.models import load_teacher
from mcm.models.loading import detect_family, read_model_index
from mcm.models.sampling import sample_student, sample_teacher
from mcm.paths import CONFIGS, resolve_teacher
from mcm.report import write_report
from mcm.schema import read_yaml
from mcm.training.config import TrainConfig
from mcm.training.config_io import from_dict, to_dict
from mcm.training.one_step import OneStepRecipe, one_step_dir
from mcm.training.recipe import DistillRecipe
from mcm.training.signals import Interrupted, StopSignals
from mcm.training.trainer import TRAIN_LOG
from mcm.world.data import resolve_world_sources
from mcm.world.metrics import world_metrics
from mcm.world.probes import load_probes
from mcm.world.scenes import COLOURS, DIRECTIONS, SHAPES
from mcm.world.train_config import TEACHER_GUIDANCE

log = logging.getLogger("mcm.demo")

STUDENT_STEPS = (1, 2, 4)
# The demo's recipes: YAML files shipped inside the package (configs/world.yaml and
# configs/world-lcm.yaml in the repository are symlinks to them), so that
# `mcm train --config configs/world.yaml` trains exactly the demo's MCM student.
RECIPES = {
    "unet": {"mcm": "world.yaml", "lcm": "world-lcm.yaml"},
    "wan": {"mcm": "world-wan.yaml", "lcm": "world-wan-lcm.yaml"},
}
SCORED_FRAMES = 8  # the world probes score 8 frames (a Wan clip's frames 0-7 of 9)


def demo_recipe(kind: str, family: str = "unet") -> dict:
    """The packaged YAML recipe of ``kind`` ("mcm" or "lcm") for the teacher ``family``
    ("unet": the shipped world teacher, "wan": a flow-matching one) as a nested dict (read
    as ``mcm train`` reads a config: its scalars are typed by the config schema later)."""
    if family not in RECIPES or kind not in RECIPES[family]:
        raise ValueError(
            f"Unknown demo student {family}/{kind}; families {sorted(RECIPES)}, students "
            "mcm and lcm."
        )
    return read_yaml(CONFIGS / RECIPES[family][kind])


MCM_STEPS = from_dict(TrainConfig, demo_recipe("mcm")).train.max_steps  # after D's warm-up
LCM_STEPS = from_dict(TrainConfig, demo_recipe("lcm")).train.max_steps


def _merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def demo_config(
    kind: str,
    out_dir: Path,
    steps: int | None = None,
    images: str | None = None,
    clips: int | None = None,
    overrides: dict | None = None,
    family: str = "unet",
    teacher: str | None = None,
) -> TrainConfig:
    """The demo's training config for ``kind`` ("mcm" or "lcm"): the packaged recipe
    (:func:`demo_recipe` of ``family``) with this run's settings; ``teacher`` replaces the
    recipe's teacher unless None.

    ``out_dir / kind`` is the output_dir; ``steps`` (training steps), ``clips`` (the number
    of rendered world clips) and, for "mcm", ``images`` (the discriminator's real images)
    replace the recipe's values unless None. ``overrides`` (a nested dict, e.g.
    ``{"method": {"lambda_real": 0.0}}``) is merged last; its ``output_dir`` replaces
    ``out_dir / kind``.
    """
    data = demo_recipe(kind, family)
    data["output_dir"] = str(Path(out_dir) / kind)
    if teacher is not None:
        data["model"]["teacher"] = teacher
    train = data["train"]
    if steps is not None:
        train["max_steps"] = steps
    if clips is not None:
        data["data"]["video"]["source"] = f"world:lowq_video:{clips}"
    if kind == "mcm":
        if images is not None:
            data["data"]["images"]["source"] = images
        # a short run gets no longer a warm-up or one-step phase than its training
        disc, one_step = data["discriminator"], data.get("one_step", {})
        disc["warmup_steps"] = min(int(disc["warmup_steps"]), int(train["max_steps"]))
        if "steps" in one_step:
            one_step["steps"] = min(int(one_step["steps"]), int(train["max_steps"]))
    return from_dict(TrainConfig, _merge(data, overrides or {}))


def demo_configs(
    out_dir: str | Path,
    mcm_steps: int | None = None,
    lcm_steps: int | None = None,
    images: str | None = None,
    clips: int | None = None,
    family: str = "unet",
    teacher: str | None = None,
) -> dict[str, TrainConfig]:
    """{"mcm": config, "lcm": config}: the two students :func:`run_demo` trains."""
    return {
        kind: demo_config(kind, Path(out_dir), steps, images, clips, None, family, teacher)
        for kind, steps in (("mcm", mcm_steps), ("lcm", lcm_steps))
    }


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
    """Time ``sample()`` (-> videos [N, 3, F, H, W] for the N ``prompts``) and score their
    first :data:`SCORED_FRAMES` frames.

    Returns the videos and the world metrics dict plus ``"nfe"`` (per video) and
    ``"seconds_per_video"`` (the batched sampling time over N).
    """
    videos, seconds = _timed(sample)
    metrics = world_metrics(videos[:, :, :SCORED_FRAMES], prompts, probes=probes)
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
    clips with the VAE (docs/RESULTS.md, "Where the time goes"). The demo's views are fixed (all 8 frames,
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
    """Child process: train the LCM baseline, time in ``timing.json``; after a stop signal (a
    checkpoint saved) it exits with 128 + the signal number. Its stdout and stderr (prints,
    tracebacks) are appended to ``log_path``, its output folder's train.log, where the
    trainer appends the log lines (and nothing writes them to stderr as well)."""
    with open(log_path, "a") as f, StopSignals():  # a signal during the setup stops at step 0
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        print("[demo] the LCM baseline's process has started", flush=True)
        for library in (diffusers_logging, transformers_logging):  # no loading bars in the log
            library.disable_progress_bar()
        torch.set_num_threads(threads)
        recipe = DistillRecipe(cfg)
        recipe.setup()
        _, seconds = _timed(recipe.train)
        recipe.cleanup()
        if recipe.exit_status:
            sys.exit(recipe.exit_status)
        (Path(cfg.output_dir) / "timing.json").write_text(json.dumps({"train_s": seconds}))


class _Students:
    """Trains the demo's students: the LCM baseline in a second process (``parallel``)
    while this one trains the MCM student, or both here. A stop signal reaches both: the
    second process gets it passed on (:meth:`pass_on`), and each saves a checkpoint."""

    def __init__(self, cfgs: dict[str, TrainConfig], parallel: bool):
        self.cfgs, self.parallel, self.process = cfgs, parallel, None
        self.log = Path(cfgs["lcm"].output_dir) / TRAIN_LOG
        self.timings: dict[str, float] = {}

    def pass_on(self, signum: int) -> None:
        if self.process is not None and self.process.is_alive():
            os.kill(self.process.pid, signum)

    def start_lcm(self) -> None:
        if not self.parallel:
            return
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.unlink(missing_ok=True)  # a new demo starts its students' logs over
        steps = self.cfgs["lcm"].train.max_steps
        print(
            f"[demo] distilling the LCM student ({steps} steps) in a second process: {self.log}",
            flush=True,
        )
        self.process = multiprocessing.get_context("spawn").Process(
            target=_train_lcm_process,
            args=(self.cfgs["lcm"], torch.get_num_threads(), str(self.log)),
        )
        self.process.start()

    def train_here(self, signals: StopSignals) -> None:
        """The students this process trains, one after the other."""
        for kind, cfg in self.cfgs.items():
            if kind == "lcm" and self.process is not None:
                continue
            _check(signals, "demo")
            steps = cfg.train.max_steps
            print(f"[demo] distilling the {kind.upper()} student: {steps} steps", flush=True)
            (Path(cfg.output_dir) / TRAIN_LOG).unlink(missing_ok=True)
            recipe = DistillRecipe(cfg)
            recipe.setup()
            on_step = _take_over_threads(self.process) if self.process is not None else None
            _, self.timings[f"train_{kind}_s"] = _timed(functools.partial(recipe.train, on_step))
            recipe.cleanup()
            _check(signals, "demo")
            if cfg.one_step.steps:
                print(
                    f"[demo] distilling the {kind.upper()} one-step student: "
                    f"{cfg.one_step.steps} steps",
                    flush=True,
                )
                phase = OneStepRecipe(cfg)
                _, self.timings[f"train_{kind}_one_step_s"] = _timed(phase.run)
                _check(signals, "demo")

    def wait_for_lcm(self) -> None:
        if self.process is None:
            return
        print("[demo] waiting for the LCM student ...", flush=True)
        self.process.join()
        code = self.process.exitcode
        if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
            raise Interrupted(code - 128, "demo's LCM baseline")
        if code != 0:
            raise RuntimeError(
                f"The LCM baseline's process failed (exit code {code}); its output is in "
                f"{self.log}. Rerun with --sequential to train it in this process."
            )
        timing = json.loads((self.log.parent / "timing.json").read_text())
        self.timings["train_lcm_s"] = timing["train_s"]

    def stop(self) -> None:
        """On an error here: do not leave the LCM process running."""
        if self.process is not None and self.process.is_alive():
            self.process.terminate()
            self.process.join()


def _check(signals: StopSignals, what: str) -> None:
    """Raise Interrupted if a stop signal arrived (the current step has ended)."""
    if signals.received is not None:
        raise Interrupted(signals.received, what)


def run_demo(
    out_dir: str | Path = "demo-out",
    mcm_steps: int | None = None,
    lcm_steps: int | None = None,
    num_prompts: int = 24,
    seed: int = 0,
    images: str | None = None,
    clips: int | None = None,
    parallel: bool | None = None,
    threads: int | None = None,
    family: str = "unet",
    teacher: str | None = None,
) -> dict:
    """Run the demo; returns the metrics dict written to out_dir/metrics.json.

    ``family`` "wan" runs it on a flow-matching world teacher (``teacher``: its folder;
    default the shipped one, when there is one).

    The students' recipes are the packaged configs (:func:`demo_config`); the steps,
    ``images`` and ``clips`` (None: the recipe's) replace the training steps, the
    discriminator's images and the clip count.

    ``parallel`` (default: when this process may use >= 2 CPUs, :func:`usable_cpus`) trains
    the LCM baseline in a second process while this one trains the MCM student; its output
    goes to out_dir/lcm/train.log. Each student's training is seeded by its own config, so
    the students are the same either way (up to float rounding). ``threads``: torch threads
    per training process (default: the usable CPUs shared between the training processes;
    two OpenMP threads per process on 2 cores made each step 2.5x slower); the sampling
    uses all of them.

    SIGINT/SIGTERM stop the demo at the next step boundary of whatever runs (the second
    process gets the signal too, and each student saves a checkpoint under out_dir/<kind>);
    then :class:`~mcm.training.signals.Interrupted` is raised. A new run starts over.
    """
    out = Path(out_dir)
    cfgs = demo_configs(out, mcm_steps, lcm_steps, images, clips, family, teacher)
    found = detect_family(read_model_index(resolve_teacher(cfgs["mcm"].model.teacher)))
    if (found == "wan") != (family == "wan"):
        raise InputError(
            f"The teacher {cfgs['mcm'].model.teacher!r} is a {found} pipeline; use --family "
            f"{'wan' if found == 'wan' else 'unet'} for it."
        )
    out.mkdir(parents=True, exist_ok=True)
    cpus = usable_cpus()
    if parallel is None:
        parallel = cpus >= 2
    threads = threads or max(1, cpus // 2 if parallel else cpus)  # per training process
    torch.set_num_threads(threads)
    t_start = time.perf_counter()
    students = _Students(cfgs, parallel)
    with StopSignals(on_signal=students.pass_on) as signals:
        for kind, cfg in cfgs.items():
            print(f"[demo] rendering/reading the world data for {kind} ...", flush=True)
            resolve_world_sources(cfg)
        _check(signals, "demo")
        students.start_lcm()
        try:
            print("[demo] encoding the MCM student's clips once (a latent cache) ...", flush=True)
            cfgs["mcm"].data.video.latent_cache = cache_clip_latents(
                cfgs["mcm"], out / "latent-cache"
            )
            students.train_here(signals)
            students.wait_for_lcm()
        except BaseException:
            students.stop()
            raise
        if parallel:
            torch.set_num_threads(2 * threads)  # both processes' cores for the sampling
        samples, results = _sample_and_score(cfgs, num_prompts, seed, signals)
    timings = {**students.timings, "total_s": time.perf_counter() - t_start}
    settings = {
        "prompts": evaluation_prompts(num_prompts),
        "teacher": cfgs["mcm"].model.teacher,
        "teacher_sampling": f"{'Euler (flow)' if family == 'wan' else 'DDIM'}, guidance "
        f"{TEACHER_GUIDANCE} (2 NFE per step)",
        "student_sampling": "deterministic Euler steps on the flow grid, no CFG (1 NFE per step)"
        if family == "wan"
        else "multistep consistency (LCM), timestep scaling 4, no CFG (1 NFE per step)",
        "one_step_students": {
            kind: f"{kind}@1 is the one-step student distilled from the multi-step one's "
            f"{c.one_step.target_steps}-step samples ({c.one_step.steps} steps; "
            f"{one_step_dir(c) / 'export'})"
            for kind, c in cfgs.items()
            if c.one_step.steps
        },
        "scored_frames": f"0-{SCORED_FRAMES - 1}",
        "seed": seed,
        "torch_threads": {"training": threads, "sampling": torch.get_num_threads()},
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "lcm_trained_in_parallel": students.process is not None,
        "configs": {k: to_dict(c) for k, c in cfgs.items()},
    }
    report = {"metrics": results, "settings": settings}
    (out / "metrics.json").write_text(json.dumps(results, indent=1))
    (out / "settings.json").write_text(json.dumps(settings, indent=1))
    write_report(out, report, samples, settings["prompts"])
    print(f"[demo] done in {timings['total_s']:.0f} s: {out / 'report.html'}", flush=True)
    return results


def _sample_and_score(cfgs: dict, num_prompts: int, seed: int, signals: StopSignals):
    """Sample what a user deploys - the stock teacher (guided DDIM-50 and DDIM-4) and each
    student's merged export (the same weights as its LoRA; no adapter layers to slow its
    timing down) at 1/2/4 steps - and score every set. Returns (videos, metrics) by key."""
    m, video = cfgs["mcm"].model, cfgs["mcm"].data.video
    load = functools.partial(load_teacher, max_sequence_length=m.max_sequence_length)
    bundle = load(m.teacher)
    students = {
        kind: load(str(Path(c.output_dir) / "export" / "merged")) for kind, c in cfgs.items()
    }
    one_step = {  # a one-step student, where the recipe distils one, samples the 1-step row
        kind: load(str(one_step_dir(c) / "export" / "merged"))
        for kind, c in cfgs.items()
        if c.one_step.steps
    }
    size = {"num_frames": video.num_frames}
    if bundle.family == "wan":  # a transformer's config has no default size
        r = video.resolution
        size.update(zip(("height", "width"), (r, r) if isinstance(r, int) else r))
    prompts = evaluation_prompts(num_prompts)
    probes = load_probes()
    runs = {
        f"teacher@{steps}": (
            functools.partial(
                sample_teacher, bundle, prompts, steps, TEACHER_GUIDANCE, seed=seed, **size
            ),
            2 * steps,
        )
        for steps in (50, 4)
    }
    for kind, student in students.items():
        for steps in STUDENT_STEPS:
            method = cfgs[kind].method
            sample = functools.partial(
                sample_student, one_step.get(kind, student) if steps == 1 else student,
                prompts, steps, seed=seed,
                timestep_scaling=method.timestep_scaling,
                original_inference_steps=method.num_ode_steps, **size,
            )  # fmt: skip
            runs[f"{kind}@{steps}"] = (sample, steps)
    print(f"[demo] sampling and scoring {len(prompts)} prompts ...", flush=True)
    samples, results = {}, {}
    for key, (sample, nfe) in runs.items():
        _check(signals, "demo")
        samples[key], m = sample_and_score(sample, prompts, nfe, probes)
        results[key] = m
        print(
            f"[demo] {key:>11}: prompt {m['prompt_accuracy']:.2f}  motion {m['motion_accuracy']:.2f}  "
            f"watermark {m['watermark_score']:.2f}  sharpness {m['sharpness']:.2f}  "
            f"frame_fd {m['frame_fd']:.2f}  {m['seconds_per_video']:.3f} s/video",
            flush=True,
        )
    return samples, results
