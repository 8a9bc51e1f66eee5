"""How much of a student's score is the sampling seed: one trained run scored at ``--steps``
steps with several sampling seeds (docs/RESULTS.md, "One seed is not enough").

    python experiments/sampling_seeds.py runs/demo-out/mcm --seeds 0 1 2 3

Loads the run's merged export (as ``world_frames.py`` finds it), samples the demo's
evaluation prompts with each seed and prints one JSON line per seed with the world metrics;
compare the spread with that over training seeds (``world_variant.py --seed``).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a training run folder (or its export) with export/merged")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)

    from _world_table import load
    from mcm.demo import evaluation_prompts
    from mcm.world.probes import load_probes
    from world_frames import merged_dir

    world_table = load()
    student = world_table.load_student(Path(merged_dir(args.run)))
    prompts, probes = evaluation_prompts(args.prompts), load_probes()
    for seed in args.seeds:
        metrics = world_table.score_student(student, prompts, args.steps, seed, probes)
        print(
            json.dumps({"run": args.run, "seed": seed, "steps": args.steps, **metrics}), flush=True
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
