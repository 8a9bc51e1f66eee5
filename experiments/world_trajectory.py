"""The demo's student scored while it trains: the 4-step world metrics every ``--every``
steps (docs/RESULTS.md, "What happens during the training").

    python experiments/world_trajectory.py --name preset --seed 0
    python experiments/world_trajectory.py --name doff --set discriminator.enabled=false \
        --set method.mixed_trajectories=false

Trains ``mcm.demo``'s MCM preset plus the ``--set`` overrides for ``--steps`` steps into
OUT/<name> (no export). Before the first step and after every ``--every`` steps it samples
the demo's evaluation prompts at ``--sample-steps`` steps from the live student (its LoRA
attached, eval mode, the training seed as the sampling seed) and scores them. Prints one
JSON line per point, writes OUT/<name>/trajectory.json and a markdown table beside it.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from mcm.demo import MCM_STEPS

KEYS = ("prompt_accuracy", "watermark_score", "sharpness", "frame_fd")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True, help="run folder under --out")
    ap.add_argument("--set", action="append", default=[], help="section.key=value (repeatable)")
    ap.add_argument("--out", default="runs/world-trajectory")
    ap.add_argument("--steps", type=int, default=MCM_STEPS)
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--sample-steps", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--clips", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0, help="training and sampling seed")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)

    from _world_table import load
    from mcm.demo import demo_config, evaluation_prompts
    from mcm.training.config_io import apply_overrides
    from mcm.training.recipe import DistillRecipe
    from mcm.world.data import resolve_world_sources
    from mcm.world.probes import load_probes

    world_table = load()
    run = Path(args.out) / args.name
    overrides = apply_overrides({}, [*args.set, f"train.seed={args.seed}"])
    cfg = demo_config(
        "mcm", run, args.steps, clips=args.clips, overrides={**overrides, "output_dir": str(run)}
    )
    cfg.train.export = False
    resolve_world_sources(cfg)
    recipe = DistillRecipe(cfg)
    recipe.setup()
    prompts, probes = evaluation_prompts(args.prompts), load_probes()
    rows = []

    card = {
        "timestep_scaling": cfg.method.timestep_scaling,
        "original_inference_steps": cfg.method.num_ode_steps,
        "num_frames": cfg.data.video.num_frames,
    }

    def score(step: int) -> None:
        unet = recipe.bundle.denoiser.unet
        training = unet.training
        unet.eval()
        with torch.no_grad():
            metrics = world_table.score_student(
                (recipe.bundle, card), prompts, args.sample_steps, args.seed, probes
            )
        unet.train(training)
        rows.append({"step": step, **{k: round(float(metrics[k]), 4) for k in KEYS}})
        print(json.dumps(rows[-1]), flush=True)

    score(0)
    # on_step also counts the discriminator's warm-up steps (recipe.step stays 0 in it)
    recipe.train(lambda step: score(step) if recipe.step and step % args.every == 0 else None)
    recipe.cleanup()
    result = {"overrides": overrides, "sample_steps": args.sample_steps, "rows": rows}
    (run / "trajectory.json").write_text(json.dumps(result, indent=1))
    head = "| step | " + " | ".join(KEYS) + " |\n|" + "---|" * (len(KEYS) + 1) + "\n"
    body = "".join(
        f"| {r['step']} | " + " | ".join(f"{r[k]:.2f}" for k in KEYS) + " |\n" for r in rows
    )
    (run / "trajectory.md").write_text(head + body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
