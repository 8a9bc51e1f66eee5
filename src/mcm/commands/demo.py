"""`mcm demo [--out DIR]`: distil, sample and evaluate on the built-in world."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mcm.commands.arguments import count, non_negative

HELP = "distil, sample and evaluate on the built-in world (offline, CPU, minutes)"


def _images(text: str) -> str:
    """world:hq_image[:N], world:style_image[:N] or an existing folder."""
    if text.startswith("world:"):
        from mcm.errors import InputError
        from mcm.world.data import parse_world_source

        try:
            domain, _ = parse_world_source(text)
        except InputError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        if not domain.endswith("_image"):
            raise argparse.ArgumentTypeError(
                f"{text!r} is a video domain; use world:hq_image[:N] or world:style_image[:N]."
            )
    elif not Path(text).is_dir():
        raise argparse.ArgumentTypeError(
            f"no folder {text!r}; give world:hq_image[:N], world:style_image[:N] or a folder of "
            "captioned images."
        )
    return text


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo-out", help="folder for report.html, metrics.json, videos")
    p.add_argument(
        "--mcm-steps",
        type=count,
        default=None,
        help="distillation steps of the MCM student (default: its recipe's)",
    )
    p.add_argument(
        "--lcm-steps",
        type=count,
        default=None,
        help="distillation steps of the LCM baseline (default: its recipe's)",
    )
    p.add_argument("--prompts", type=count, default=24, help="evaluation prompts")
    p.add_argument(
        "--clips",
        type=count,
        default=None,
        help="world clips rendered for the students' training (default: the recipe's, 512)",
    )
    p.add_argument("--seed", type=non_negative, default=0)
    p.add_argument(
        "--threads",
        type=count,
        default=None,
        help="torch CPU threads per training process (default: the CPUs this process may use "
        "- affinity and cgroup quota - shared between the two training processes)",
    )
    p.add_argument(
        "--sequential",
        action="store_true",
        help="train the LCM baseline after the MCM student in this process (default with 2+ "
        "CPUs: in a second process at the same time)",
    )
    p.add_argument(
        "--family",
        choices=["unet", "wan"],
        default="unet",
        help="unet: the shipped world teacher (a TextToVideoSDPipeline); wan: a flow-matching "
        "world teacher (a WanPipeline on 9-frame clips; see --teacher)",
    )
    p.add_argument(
        "--teacher",
        default=None,
        help="the teacher's folder (default: the family's shipped world teacher; with --family "
        "wan, one built by `mcm world build --family wan`)",
    )
    p.add_argument(
        "--images",
        type=_images,
        default=None,
        help="the discriminator's real images: world:hq_image[:N], world:style_image[:N] or a "
        "folder (default: the recipe's, world:hq_image:512)",
    )


def run(args: argparse.Namespace) -> int:
    from mcm.demo import run_demo
    from mcm.training.signals import Interrupted

    console = logging.StreamHandler()
    console.setLevel(logging.WARNING)  # INFO goes to each student's train.log only
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        handlers=[console],
    )
    try:
        run_demo(
            args.out,
            args.mcm_steps,
            args.lcm_steps,
            args.prompts,
            args.seed,
            args.images,
            args.clips,
            parallel=False if args.sequential else None,
            threads=args.threads,
            family=args.family,
            teacher=args.teacher,
        )
    except Interrupted as e:
        print(f"mcm demo: {e}; each student saved a checkpoint in {args.out}/<kind>.")
        return e.exit_status
    return 0
