"""`mcm train --config FILE [--set key=value ...] [--output-dir DIR] [--resume latest|PATH]`."""

from __future__ import annotations

import argparse
import json
import logging

HELP = "distil a student from a teacher with a YAML config (accelerate-aware)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="YAML training config (see configs/)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.lr=1e-5 (repeatable)",
    )
    p.add_argument(
        "--output-dir", help="where checkpoints, logs and the export go (overrides output_dir)"
    )
    p.add_argument(
        "--resume", metavar="latest|PATH", help="continue from a checkpoint of this output dir"
    )


def run(args: argparse.Namespace) -> int:
    from mcm.training.config import check_train_inputs, load_train_config
    from mcm.training.recipe import run_training
    from mcm.world.data import resolve_world_sources

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    overrides = list(args.overrides)
    if args.output_dir is not None:  # quoted: the folder name is a string whatever it reads like
        overrides.append(f"output_dir={json.dumps(args.output_dir)}")
    cfg = load_train_config(args.config, overrides)
    resolve_world_sources(cfg)
    check_train_inputs(cfg, args.resume)  # missing paths, a mismatched checkpoint: before writing
    return run_training(cfg, resume=args.resume).exit_status
