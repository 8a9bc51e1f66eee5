"""The one-step phase alone, on a student that `experiments/world_variant.py` has trained:
how its settings were chosen (docs/RESULTS.md, "One step").

    python experiments/one_step_phase.py --run runs/onestep/base --name t2lr2 \\
        --set one_step.steps=150 --set one_step.target_steps=2 --set one_step.lr=2e-3

Runs ``mcm.training.one_step.OneStepRecipe`` on RUN's multi-step export with the demo's MCM
config plus the ``--set`` overrides, moves its output to RUN/one_step-NAME and scores the
one-step export at 1 step on the demo's evaluation prompts for three sampling seeds (one
seed's 24 prompts move prompt accuracy by 0.04 per video); prints and writes
RUN/one_step-NAME/scores.json. RUN's own one_step folder, if any, is left as it was.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import torch

SCORED = ("prompt_accuracy", "motion_accuracy", "watermark_score", "sharpness", "frame_fd")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a world_variant.py run folder")
    ap.add_argument("--name", required=True)
    ap.add_argument("--set", action="append", default=[], help="section.key=value (repeatable)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--clips", type=int, default=512, help="world clips (as world_variant.py)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)

    from _world_table import load
    from mcm.demo import demo_config, evaluation_prompts
    from mcm.training.config_io import apply_overrides
    from mcm.training.one_step import OneStepRecipe, one_step_dir
    from mcm.world.data import resolve_world_sources
    from mcm.world.probes import load_probes

    overrides = apply_overrides({}, args.set)
    overrides["output_dir"] = str(args.run)
    cfg = demo_config("mcm", args.run.parent, clips=args.clips, overrides=overrides)
    resolve_world_sources(cfg)
    phase, out = one_step_dir(cfg), args.run / f"one_step-{args.name}"
    kept = phase.with_name(phase.name + ".kept")  # the run's own phase, put back after
    if phase.exists():
        phase.rename(kept)
    try:
        t0 = time.perf_counter()
        OneStepRecipe(cfg).run()
        seconds = time.perf_counter() - t0
        shutil.rmtree(out, ignore_errors=True)
        phase.rename(out)
    finally:
        if kept.exists():
            shutil.rmtree(phase, ignore_errors=True)
            kept.rename(phase)

    world_table = load()
    student, probes = world_table.load_student(out / "export" / "merged"), load_probes()
    by_seed = {}
    for seed in args.seeds:
        m = world_table.score_student(student, evaluation_prompts(24), 1, seed, probes)
        by_seed[seed] = {k: round(m[k], 3) for k in SCORED}
    mean = {k: round(sum(s[k] for s in by_seed.values()) / len(by_seed), 3) for k in SCORED}
    report = {"set": args.set, "train_seconds": round(seconds, 1), "mean": mean, "by_seed": by_seed}
    print(json.dumps(report))
    (out / "scores.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
