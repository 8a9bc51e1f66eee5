"""The paper's tables and ablations, reproduced on the built-in world.

    python benchmarks/world_table.py                                  # everything: 15 students, hours
    python benchmarks/world_table.py --only main --only lambda_real   # a subset
    python benchmarks/world_table.py --steps 600 --out runs/world-table-600

Main table: the teacher's guided DDIM (CFG ``TEACHER_GUIDANCE``, 2 NFE per step) at 50 and 1/2/4/8 steps,
a plain LCM student and the MCM student at 1/2/4/8 steps. Ablations: MCM students that
each change one setting of the demo's MCM recipe (configs/world.yaml, packaged as
``mcm/configs/world.yaml``; ``mcm.demo.demo_config``), scored at 1/2/4/8 steps:

* ``motion``: every motion representation the library offers (``mcm.motion``);
* ``lambda_real``: 0, 0.5, 1 (the share of steps on real, not generated, trajectories);
* ``discriminator``: off / on / on without the warm-up / on with caption-conditioned heads (off also turns mixed
  trajectories off: the config refuses mixing without a discriminator);
* ``data``: the discriminator's real images from the high-quality image domain
  (``world:hq_image``) or the style domain (``world:style_image``).

The preset's own setting in each ablation is the main table's MCM student: it is trained
once. Every student is distilled with ``mcm.training.recipe.DistillRecipe`` for ``--steps``
steps, exported, reloaded from ``export/merged`` (a stock diffusers pipeline) and sampled
with ``mcm.models.sampling.sample_student`` on the demo's evaluation prompts, all at once; each
set of videos is scored with ``mcm.world.metrics.world_metrics``. ``seconds_per_video`` is
that batched sampling time divided by the number of prompts.

Caching: each variant lives in OUT/runs/<name>. A finished variant (``table_run.json``) is
reused; a variant whose training finished (``train.json`` + ``export/merged``) is only
sampled and scored; anything else is trained from scratch. A cached run made with another
training config (the preset, steps, clips, teacher, seed, overrides) or other prompts is
an error, not silently mixed in: use another ``--out``.

Writes OUT/world_table.json (every row: group, method, setting, steps, the world metrics,
nfe, seconds_per_video, train_seconds, the exact config overrides on top of the demo
preset) and OUT/world_table.md, and prints the markdown. Torch threads: ``--threads``
(default 1).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mcm.demo import MCM_STEPS

GROUPS = ("main", "motion", "lambda_real", "discriminator", "data")
TEACHER_STEPS = (50, 1, 2, 4, 8)
STUDENT_STEPS = (1, 2, 4, 8)
LAMBDA_REAL = (0.0, 0.5, 1.0)
NUM_FRAMES = 8
RUN_FILE = "table_run.json"
TRAIN_FILE = "train.json"
METRIC_COLUMNS = (
    ("prompt_accuracy", "prompt acc."),
    ("motion_accuracy", "motion acc."),
    ("watermark_score", "watermark"),
    ("sharpness", "sharpness"),
    ("frame_fd", "frame FD"),
    ("video_fd", "video FD"),
)


@dataclass(frozen=True)
class Variant:
    """One student: the demo preset ``kind`` ("mcm" or "lcm") plus ``overrides``."""

    name: str  # its folder under OUT/runs
    kind: str
    overrides: dict = field(default_factory=dict, hash=False, compare=False)


def ablations(clips: int) -> dict[str, list[tuple[str, Variant]]]:
    """group -> [(setting, variant)]; the preset's own setting is the variant "mcm"."""
    from mcm.demo import demo_config
    from mcm.motion import MOTION_REPRESENTATIONS

    preset = demo_config("mcm", Path("."))  # the demo's MCM recipe, typed
    ref = Variant("mcm", "mcm")
    method = preset.method

    def one(name: str, overrides: dict) -> Variant:
        return Variant(name, "mcm", overrides)

    images = preset.data.images.source.split(":")[1]  # hq_image
    return {
        "motion": [
            (m, ref if m == method.motion else one(f"motion-{m}", {"method": {"motion": m}}))
            for m in MOTION_REPRESENTATIONS
        ],
        "lambda_real": [
            (
                f"{v:g}",
                ref
                if v == method.lambda_real
                else one(f"lambda_real-{v:g}", {"method": {"lambda_real": v}}),
            )
            for v in LAMBDA_REAL
        ],
        "discriminator": [
            (
                "off",
                one(
                    "discriminator-off",
                    {"discriminator": {"enabled": False}, "method": {"mixed_trajectories": False}},
                ),
            ),
            ("on", ref),
            (
                "on, no warm-up",
                one("discriminator-no-warmup", {"discriminator": {"warmup_steps": 0}}),
            ),
            (
                "on, caption-conditioned heads",
                one("discriminator-conditional", {"discriminator": {"conditional": True}}),
            ),
        ],
        "data": [
            (f"world:{domain}", ref)
            if domain == images
            else (
                f"world:{domain}",
                one(
                    f"data-{domain}",
                    {"data": {"images": {"source": f"world:{domain}:{clips}"}}},
                ),
            )
            for domain in ("hq_image", "style_image")
        ],
    }


def teacher_label() -> str:
    from mcm.demo import TEACHER_GUIDANCE

    return f"DDIM, CFG {TEACHER_GUIDANCE:g}"


# ---------------------------------------------------------------------- cached runs
def _check_key(run: Path, recorded: dict, key: dict) -> None:
    if recorded != key:
        raise ValueError(
            f"{run} was made with other settings ({recorded}, now {key}); "
            "pass another --out, or delete that folder to redo it."
        )


def _clean(metrics: dict) -> dict:
    return {
        k: (round(v, 5) if isinstance(v, float) and math.isfinite(v) else v)
        for k, v in metrics.items()
    }


def teacher_rows(run: Path, args, prompts: list[str], probes) -> dict:
    """The teacher's guided DDIM at TEACHER_STEPS: {"results": {steps: metrics}}, cached."""
    from mcm.demo import TEACHER_GUIDANCE, sample_and_score
    from mcm.models import load_teacher
    from mcm.models.sampling import sample_teacher

    key = {
        "teacher": args.teacher,
        "guidance": TEACHER_GUIDANCE,
        "seed": args.seed,
        "prompts": prompts,
    }
    if (run / RUN_FILE).is_file():
        done = json.loads((run / RUN_FILE).read_text())
        _check_key(run, done["key"], key)
        print(f"[table] teacher: cached in {run}", flush=True)
        return done
    bundle = load_teacher(args.teacher)
    results = {}
    for steps in TEACHER_STEPS:
        _, metrics = sample_and_score(
            lambda s=steps: sample_teacher(
                bundle, prompts, s, TEACHER_GUIDANCE, seed=args.seed, num_frames=NUM_FRAMES
            ),
            prompts,
            2 * steps,
            probes,
        )
        results[str(steps)] = _clean(metrics)
        _progress(f"teacher@{steps}", metrics)
    done = {"key": key, "train_seconds": None, "overrides": {}, "results": results}
    run.mkdir(parents=True, exist_ok=True)
    (run / RUN_FILE).write_text(json.dumps(done, indent=1))
    return done


def variant_overrides(variant: Variant, args) -> dict:
    """Everything set on top of the demo preset: the variant's change plus the table's options."""
    from mcm.demo import _merge

    common = {"model": {"teacher": args.teacher}, "train": {"seed": args.seed}}
    return _merge(common, variant.overrides)


def student_rows(variant: Variant, run: Path, args, prompts: list[str], probes) -> dict:
    """Train (unless cached), export, reload and score one student: {"results": {steps: ...}}."""
    from mcm.demo import demo_config
    from mcm.training.config_io import to_dict
    from mcm.training.one_step import one_step_dir

    overrides = variant_overrides(variant, args)
    cfg = demo_config(
        variant.kind,
        run,
        args.steps,
        clips=args.clips,
        overrides={**overrides, "output_dir": str(run)},
    )
    config = to_dict(cfg)
    # the whole config, so that a changed preset is noticed too (not the folder: it may move)
    key = {"kind": variant.kind, "config": {k: v for k, v in config.items() if k != "output_dir"}}
    if (run / RUN_FILE).is_file():
        done = json.loads((run / RUN_FILE).read_text())
        _check_key(run, done["key"], dict(key, prompts=prompts))
        print(f"[table] {variant.name}: cached in {run}", flush=True)
        return done
    merged = run / "export" / "merged"
    trained = (run / TRAIN_FILE).is_file() and (merged / "model_index.json").is_file()
    if trained:
        train = json.loads((run / TRAIN_FILE).read_text())
        _check_key(run, train["key"], key)
        print(f"[table] {variant.name}: trained in {run}; sampling it", flush=True)
    else:
        train = {"key": key, **train_student(cfg, variant.name, run)}
        (run / TRAIN_FILE).write_text(json.dumps(train, indent=1))

    student = load_student(merged)
    one_step = cfg.one_step.steps and load_student(one_step_dir(cfg) / "export" / "merged")
    results = {}
    for steps in STUDENT_STEPS:
        scored = one_step if steps == 1 and one_step else student
        metrics = score_student(scored, prompts, steps, args.seed, probes)
        results[str(steps)] = _clean(metrics)
        _progress(f"{variant.name}@{steps}", metrics)
    done = {
        "key": dict(key, prompts=prompts),
        "train_seconds": train["train_seconds"],
        "overrides": overrides,
        "config": config,
        "results": results,
    }
    (run / RUN_FILE).write_text(json.dumps(done, indent=1))
    return done


def load_student(merged: Path):
    """An exported student: (its merged pipeline's bundle, the sampling card beside it)."""
    from mcm.models import load_teacher

    card = json.loads((merged.parent / "mcm_student.json").read_text())["sampling"]
    return load_teacher(str(merged)), card


def score_student(student, prompts: list[str], steps: int, seed: int, probes) -> dict:
    """The world metrics of ``load_student``'s student sampled at ``steps`` with its card."""
    from mcm.demo import sample_and_score
    from mcm.models.sampling import sample_student

    bundle, card = student
    _, metrics = sample_and_score(
        lambda: sample_student(
            bundle,
            prompts,
            steps,
            seed=seed,
            timestep_scaling=card["timestep_scaling"],
            original_inference_steps=card["original_inference_steps"],
            num_frames=card["num_frames"],
        ),
        prompts,
        steps,
        probes,
    )
    return metrics


def train_student(cfg, name: str, run: Path) -> dict:
    """Distil one student into ``run`` (from scratch); returns {"train_seconds", "last_log"}."""
    from mcm.training.one_step import OneStepRecipe
    from mcm.training.recipe import DistillRecipe
    from mcm.world.data import resolve_world_sources

    if run.exists():  # an interrupted run: its checkpoints belong to a run that did not finish
        shutil.rmtree(run)
    cfg = copy.deepcopy(cfg)  # resolving world sources rewrites them to cache folders
    resolve_world_sources(cfg)
    print(f"[table] {name}: distilling {cfg.train.max_steps} steps into {run}", flush=True)
    recipe = DistillRecipe(cfg)
    recipe.setup()
    t0 = time.perf_counter()
    logged = recipe.train()
    seconds = time.perf_counter() - t0
    recipe.cleanup()
    done = {"train_seconds": round(seconds, 2), "last_log": _clean(logged)}
    if cfg.one_step.steps:
        t0 = time.perf_counter()
        OneStepRecipe(cfg).run()
        done["one_step_seconds"] = round(time.perf_counter() - t0, 2)
    return done


def _progress(label: str, m: dict) -> None:
    print(
        f"[table] {label:>24}: prompt {m['prompt_accuracy']:.2f}  motion {m['motion_accuracy']:.2f}  "
        f"watermark {m['watermark_score']:.2f}  sharpness {m['sharpness']:.2f}  "
        f"frame_fd {m['frame_fd']:.2f}  {m['seconds_per_video']:.3f} s/video",
        flush=True,
    )


# ---------------------------------------------------------------------- rows and tables
def make_rows(group: str, method: str, setting: str, run: str, done: dict) -> list[dict]:
    rows = []
    for steps, metrics in done["results"].items():
        metrics = dict(metrics)
        nfe, spv = metrics.pop("nfe"), metrics.pop("seconds_per_video")
        rows.append(
            {
                "group": group,
                "method": method,
                "setting": setting,
                "steps": int(steps),
                "metrics": metrics,
                "nfe": nfe,
                "seconds_per_video": spv,
                "train_seconds": done["train_seconds"],
                "overrides": done["overrides"],
                "run": run,
            }
        )
    return rows


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if not math.isfinite(v) else f"{v:.3f}"
    return str(v)


def markdown(rows: list[dict]) -> str:
    """One markdown table per group, in GROUPS order."""
    titles = {
        "main": f"Main table: {teacher_label()} vs LCM vs MCM",
        "motion": "Ablation: motion representation",
        "lambda_real": "Ablation: lambda_real (share of real trajectories)",
        "discriminator": "Ablation: discriminator",
        "data": "Ablation: the discriminator's real images",
    }
    head = (
        "| method | setting | steps | "
        + " | ".join(c for _, c in METRIC_COLUMNS)
        + " | NFE | s / video | train s |"
    )
    sep = "|" + "---|" * (len(METRIC_COLUMNS) + 6)
    out = []
    for group in GROUPS:
        mine = [r for r in rows if r["group"] == group]
        if not mine:
            continue
        out += [f"### {titles[group]}", "", head, sep]
        for r in mine:
            cells = [r["method"], r["setting"], r["steps"]]
            cells += [r["metrics"].get(k) for k, _ in METRIC_COLUMNS]
            cells += [r["nfe"], r["seconds_per_video"], r["train_seconds"]]
            out.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
        out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------------- main
def build_table(args) -> dict:
    from mcm.demo import demo_config, evaluation_prompts
    from mcm.world.probes import load_probes

    out = Path(args.out)
    runs = out / "runs"
    groups = [g for g in GROUPS if g in (args.only or GROUPS)]
    prompts = evaluation_prompts(args.prompts)
    probes = load_probes()
    table = ablations(args.clips)
    table["main"] = [("plain LCM", Variant("lcm", "lcm")), ("MCM preset", Variant("mcm", "mcm"))]
    preset = demo_config("mcm", Path("."))  # the demo's MCM recipe, typed
    ref_setting = {
        "motion": preset.method.motion,
        "lambda_real": f"{preset.method.lambda_real:g}",
        "discriminator": "on",
        "data": preset.data.images.source.rsplit(":", 1)[0],
    }

    rows, cache = [], {}
    for group in groups:
        if group == "main":
            done = teacher_rows(runs / "teacher", args, prompts, probes)
            rows += make_rows("main", "teacher", teacher_label(), "teacher", done)
        for setting, variant in table[group]:
            if variant.name not in cache:
                t0 = time.perf_counter()
                cache[variant.name] = student_rows(
                    variant, runs / variant.name, args, prompts, probes
                )
                print(f"[table] {variant.name}: {time.perf_counter() - t0:.0f} s", flush=True)
            method = variant.kind if group == "main" else "mcm"
            label = setting + (" (preset)" if setting == ref_setting.get(group) else "")
            rows += make_rows(group, method, label, variant.name, cache[variant.name])
    configs = {name: done["config"] for name, done in cache.items()}
    return {"prompts": prompts, "rows": rows, "configs": configs}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="The paper's main table and ablations on the built-in world.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--out", default="runs/world-table", help="runs/, world_table.json and .md")
    ap.add_argument("--steps", type=int, default=MCM_STEPS, help="training steps per student")
    ap.add_argument("--prompts", type=int, default=24, help="evaluation prompts (videos per row)")
    ap.add_argument(
        "--only",
        action="append",
        choices=GROUPS,
        help="run only this table (repeatable; default: all)",
    )
    ap.add_argument("--clips", type=int, default=512, help="rendered training clips and images")
    ap.add_argument("--teacher", default="world", help="teacher pipeline directory or 'world'")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--seed", type=int, default=0, help="training and sampling seed")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.prompts < 2 or args.clips < 1:
        raise ValueError("--steps and --clips must be >= 1 and --prompts >= 2 (Frechet distances).")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    table = build_table(args)
    result = {
        "benchmark": "world_table",
        "command": " ".join(["python benchmarks/world_table.py", *(argv or sys.argv[1:])]),
        "settings": {
            "train_steps": args.steps,
            "clips": args.clips,
            "teacher": args.teacher,
            "seed": args.seed,
            "student_sampling": "multistep consistency (LCM), no CFG, 1 NFE per step",
            "teacher_sampling": f"{teacher_label()} (Imagen form), 2 NFE per step",
            "base": "the demo's recipes (mcm/configs/world.yaml, world-lcm.yaml); overrides per row",
            "prompts": table["prompts"],
        },
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "threads": args.threads,
        },
        "rows": table["rows"],
        "configs": table["configs"],  # run -> the full training config
        "total_s": round(time.perf_counter() - t0, 1),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "world_table.json").write_text(json.dumps(result, indent=1))
    md = markdown(table["rows"])
    (out / "world_table.md").write_text(md)
    print(md)
    print(f"wrote {out / 'world_table.json'} and {out / 'world_table.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
