"""`mcm export`: a trained student LoRA -> diffusers LoRA + merged pipeline + sampling card
+ model cards (README.md), a folder to upload to a model hub as it is.

    mcm export --teacher PATH --lora FILE_OR_DIR --out DIR [--timestep-scaling 4 ...]
               [--config RUN/config.yaml] [--metrics metrics.json]

A thin wrapper over :func:`mcm.models.export_lora`; see that module for the output layout.
A training checkpoint folder given as ``--lora`` carries its run's config.yaml: the model
card records its method and training data unless ``--config`` names another.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mcm.commands.arguments import count, number
from mcm.errors import InputError

HELP = "export a trained student as a diffusers LoRA and a merged pipeline"


def _aux_item(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--aux wants NAME=FILE.safetensors; got {text!r}.")
    if not name.replace("_", "").replace("-", "").isalnum():
        raise argparse.ArgumentTypeError(
            f"--aux {text!r}: NAME must be letters, digits, _ or - (it names aux/NAME.safetensors)."
        )
    return name, Path(path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", required=True, help="teacher pipeline dir, hub id, or 'world'")
    parser.add_argument(
        "--lora",
        required=True,
        help="LoRA .safetensors (written by mcm.models.save_lora or diffusers) or a folder "
        "holding pytorch_lora_weights.safetensors",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--motion-adapter", default=None, help="MotionAdapter for an SD1.5 teacher")
    parser.add_argument(
        "--lora-alpha",
        type=number(above=0),
        default=None,
        help="LoRA alpha (default: from the file, else rank)",
    )
    parser.add_argument(
        "--timestep-scaling",
        type=number(above=0),
        default=4.0,
        help="LCM timestep scaling s (reference MCM: 4)",
    )
    parser.add_argument(
        "--original-inference-steps", type=count, default=50, help="the skipping-step grid's N"
    )
    parser.add_argument(
        "--steps", type=count, default=4, help="recommended number of sampling steps"
    )
    parser.add_argument(
        "--guidance-scale",
        type=number(minimum=0),
        default=1.0,
        help="pipeline guidance (1: none, CFG is distilled in)",
    )
    parser.add_argument("--num-frames", type=count, default=16, help="recommended frames per video")
    parser.add_argument(
        "--fps", type=count, default=8, help="recommended frames per second when saving videos"
    )
    parser.add_argument(
        "--aux",
        type=_aux_item,
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="an auxiliary module's safetensors weights to ship in aux/ (e.g. motion_head=head.safetensors); repeatable",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="the training run's config.yaml, for the model card's method and training data "
        "(default: the config.yaml of a checkpoint folder given as --lora)",
    )
    parser.add_argument(
        "--metrics",
        default=None,
        help="a metrics.json written by `mcm evaluate` or `mcm demo`, for the model card",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="allow writing into a non-empty --out"
    )


def read_mapping(path: Path, flag: str, fmt: str, expected: str) -> dict:
    """The mapping in a YAML (``fmt="yaml"``) or JSON file given as ``flag``; a clear error
    names the flag and what was ``expected`` when the file is missing, unreadable or no
    mapping."""
    import yaml

    if not path.is_file():
        raise FileNotFoundError(f"{flag}: no such file {path}.")
    parse, errors = (yaml.safe_load, yaml.YAMLError) if fmt == "yaml" else (json.loads, ValueError)
    try:
        value = parse(path.read_text())
    except errors as e:
        raise InputError(f"{flag} {path} is not valid {fmt.upper()} ({e}).") from None
    if not isinstance(value, dict):
        raise InputError(f"{flag} {path}: expected {expected}.")
    return value


def run(args: argparse.Namespace) -> int:
    from safetensors.torch import load_file

    from mcm.models import export_lora, read_lora

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {args.out!r} is a file; give a folder.")
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise InputError(f"{out} is not empty; choose another --out or pass --overwrite.")
    if args.steps > args.original_inference_steps:
        raise InputError(
            f"--steps {args.steps} must be <= --original-inference-steps "
            f"{args.original_inference_steps} (the student samples on that grid)."
        )
    for name, path in args.aux:
        if not path.is_file():
            raise FileNotFoundError(f"--aux {name}: no such file {path}.")
    lora, meta = read_lora(args.lora)
    alpha = args.lora_alpha if args.lora_alpha is not None else float(meta["lora_alpha"])
    if args.lora_alpha is None and meta.get("lora_alpha_assumed"):
        print(
            f"note: {args.lora} records no LoRA alpha; assuming alpha = rank = {alpha:g} "
            "(pass --lora-alpha if training used another value).",
            file=sys.stderr,
        )
    config_path = Path(args.config) if args.config else None
    checkpoint_config = Path(args.lora) / "config.yaml"
    if config_path is None and checkpoint_config.is_file():
        config_path = checkpoint_config
    training_config = (
        read_mapping(config_path, "--config", "yaml", "a training config (a YAML mapping)")
        if config_path
        else None
    )
    metrics = (
        read_mapping(Path(args.metrics), "--metrics", "json", "the metrics.json of `mcm evaluate`")
        if args.metrics
        else None
    )
    aux = {}
    for name, path in args.aux:
        aux[name] = load_file(str(path))
    sampling = {
        "timestep_scaling": args.timestep_scaling,
        "original_inference_steps": args.original_inference_steps,
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance_scale,
        "num_frames": args.num_frames,
        "fps": args.fps,
    }
    export_lora(
        args.teacher,
        lora,
        out,
        alpha=alpha,
        sampling=sampling,
        extra_modules=aux or None,
        motion_adapter=args.motion_adapter,
        lora_meta=meta,
        training_config=training_config,
        metrics=metrics,
    )
    print(
        f"exported to {out}: lora/, merged/, mcm_student.json, README.md"
        + (", aux/" if aux else "")
    )
    if json.loads((out / "mcm_student.json").read_text())["license"]["license"] is None:
        print(
            f"note: the teacher's licence is unknown; set `license` in {out / 'README.md'} "
            "and merged/README.md before uploading.",
            file=sys.stderr,
        )
    return 0
