"""One MCM (or LCM) student of the demo's recipe with some settings changed, scored on the
world: how the demo's settings were tuned (docs/RESULTS.md, "The recipe and why").

    python experiments/world_variant.py --name adv3 --set method.lambda_adv=3 --set discriminator.lr=3e-4

Trains ``mcm.demo``'s MCM preset (or ``--kind lcm``) plus the ``--set`` overrides for
``--steps`` steps into OUT/<name>, exports it, samples the demo's evaluation prompts at
1/2/4/8 steps from the exported stock pipeline and prints the world metrics; a finished
run is reused (same cache rules as ``benchmarks/world_table.py``, whose machinery this is).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from mcm.demo import MCM_STEPS
from mcm.training.config_io import apply_overrides


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True, help="run folder under --out")
    ap.add_argument("--set", action="append", default=[], help="section.key=value (repeatable)")
    ap.add_argument("--kind", choices=["mcm", "lcm"], default="mcm")
    ap.add_argument("--out", default="runs/world-variants")
    ap.add_argument("--steps", type=int, default=MCM_STEPS)
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--clips", type=int, default=512)
    ap.add_argument("--teacher", default="world")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)

    from _world_table import load
    from mcm.demo import evaluation_prompts
    from mcm.world.probes import load_probes

    world_table = load()

    variant = world_table.Variant(args.name, args.kind, apply_overrides({}, args.set))
    done = world_table.student_rows(
        variant,
        Path(args.out) / args.name,
        args,
        evaluation_prompts(args.prompts),
        load_probes(),
    )
    print(json.dumps({"overrides": done["overrides"], "train_seconds": done["train_seconds"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
