"""`mcm decoder --config FILE --out DIR`: distil a preview decoder from the config's teacher VAE."""

from __future__ import annotations

import argparse
import json
import logging

from mcm.commands.arguments import count, non_negative, number

positive = number(above=0)

HELP = "distil a tiny preview decoder from a teacher's VAE (fast previews; exports keep the VAE)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        required=True,
        help="a training YAML (e.g. configs/world.yaml): its model.teacher and data.video / "
        "data.images give the VAE and the frames",
    )
    p.add_argument("--out", required=True, help="folder for the decoder (an AutoencoderTiny)")
    p.add_argument("--steps", type=count, default=2000)
    p.add_argument("--batch-size", type=count, default=64, help="frames per step")
    p.add_argument("--lr", type=positive, default=1e-3)
    p.add_argument("--width", type=count, default=64, help="channels per decoder stage")
    p.add_argument("--blocks", type=count, default=3, help="residual blocks per stage")
    p.add_argument("--seed", type=non_negative, default=0)
    p.add_argument(
        "--max-seconds", type=number(minimum=0), default=None, help="stop after this long"
    )
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from mcm.training.config import load_train_config
    from mcm.training.preview_decoder import PreviewDecoderConfig, PreviewDecoderRecipe
    from mcm.world.data import resolve_world_sources

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    train_cfg = load_train_config(args.config)
    resolve_world_sources(train_cfg)
    cfg = PreviewDecoderConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        width=args.width,
        blocks=args.blocks,
        seed=args.seed,
        max_seconds=args.max_seconds,
        progress=not args.no_progress,
    )
    recipe = PreviewDecoderRecipe(train_cfg, cfg, args.out, resume=args.resume)
    stats = recipe.run()
    print(json.dumps({"out": args.out, **stats}))
    return recipe.exit_status
