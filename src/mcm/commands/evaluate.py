"""`mcm evaluate`: metrics of a folder of videos, each stored with its protocol.

    mcm evaluate --videos out/student --prompts prompts.txt --metrics world --out metrics.json
    mcm evaluate --videos out/student --reference data/real --metrics fvd \\
        --i3d i3d_torchscript.pt --out metrics.json
    mcm evaluate --videos out/student --prompts prompts.txt --metrics clipsim,frame_fid \\
        --clip openai/clip-vit-base-patch32 --reference-images data/hq --fid-features DIR \\
        --out metrics.json

Every value in metrics.json sits next to its feature network, weights (path + sha256),
number of videos and frames, resolution and resize policy (see mcm.evaluate).
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import fields
from pathlib import Path

from mcm.commands.arguments import count, device, number
from mcm.errors import InputError

HELP = "compute world metrics / FVD / CLIPSIM / frame FID for a folder of videos"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--videos",
        required=True,
        help="folder of generated .mp4/.gif videos (read in sorted order)",
    )
    p.add_argument(
        "--prompts",
        help="prompt file: one per line in the videos' sorted order, or JSON {file: prompt}",
    )
    p.add_argument(
        "--metrics",
        default="world",
        help="comma-separated: world, fvd, clipsim, frame_fid (default world)",
    )
    p.add_argument("--out", required=True, help="output metrics.json")
    p.add_argument("--device", type=device, default="cpu", help="cpu or cuda")
    p.add_argument(
        "--batch-size", type=count, default=8, help="videos per I3D pass (frames per pass: 8x this)"
    )
    g = p.add_argument_group("FVD")
    g.add_argument("--reference", help="folder of reference videos")
    g.add_argument(
        "--i3d",
        help="I3D weights: TF-Hub TorchScript port (i3d_torchscript.pt) or VideoGPT i3d_pretrained_400.pt",
    )
    g.add_argument("--i3d-format", default="auto", choices=["auto", "torchscript", "state_dict"])
    g.add_argument(
        "--i3d-features",
        default="logits",
        choices=["logits", "pool"],
        help="state-dict layout only: 400 logits or 1024-d pool",
    )
    g.add_argument(
        "--i3d-call",
        help='TorchScript call keywords as JSON (default {"rescale": false, "resize": false, "return_features": true})',
    )
    g.add_argument(
        "--fvd-resolution", type=count, default=224, help="I3D input size (224 is the standard)"
    )
    g.add_argument(
        "--fvd-input-scale",
        type=number(above=0),
        default=1.0,
        help="pixels in [-1,1] times this (0.5: VideoGPT's [-0.5,0.5])",
    )
    g.add_argument(
        "--fvd-min-frames",
        type=count,
        default=9,
        help="clips shorter than this are lengthened (I3D minimum 9)",
    )
    g.add_argument(
        "--fvd-temporal-policy",
        default="repeat",
        choices=["repeat", "loop"],
        help="how short clips are lengthened",
    )
    g = p.add_argument_group("CLIPSIM and frame FID")
    g.add_argument("--clip", help="CLIPModel directory or cached hub id for CLIPSIM")
    g.add_argument("--reference-images", help="folder of reference images for frame FID")
    g.add_argument(
        "--fid-features",
        help="CLIPModel / CLIPVisionModel / Dinov2Model directory or cached hub id",
    )
    g.add_argument(
        "--fid-resolution", type=count, default=224, help="DINOv2 input size (CLIP uses its own)"
    )
    g = p.add_argument_group("world")
    g.add_argument("--world-probes", help="world probe directory (default: the shipped probes)")


def settings_from_args(args: argparse.Namespace):
    from mcm.evaluate import EvaluationSettings

    call = None
    if args.i3d_call:
        try:
            call = json.loads(args.i3d_call)
        except json.JSONDecodeError as e:
            raise InputError(
                f"--i3d-call must be a JSON object, e.g. '{{\"rescale\": false}}' ({e})."
            ) from e
        if not isinstance(call, dict):
            raise InputError("--i3d-call must be a JSON object of keyword arguments.")
    # Every field of the settings is the flag of the same name; two are parsed here.
    values = {f.name: getattr(args, f.name) for f in fields(EvaluationSettings)}
    values["metrics"] = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    values["i3d_call"] = call
    return EvaluationSettings(**values)


def run(args: argparse.Namespace) -> int:
    from mcm.evaluate import evaluate_folder

    out = Path(args.out)
    settings = settings_from_args(args)
    settings.validate()
    if not Path(args.videos).is_dir():
        raise FileNotFoundError(
            f"--videos {args.videos!r} does not exist: give a folder of videos."
        )
    existing = next(p for p in (out.parent, *out.parent.parents) if p.exists())
    if out.is_dir() or not existing.is_dir() or not os.access(existing, os.W_OK):
        raise PermissionError(
            f"--out {args.out!r}: cannot write a file there; choose another path."
        )
    result = evaluate_folder(args.videos, settings)
    out.parent.mkdir(parents=True, exist_ok=True)  # only now: nothing is written on a bad input
    out.write_text(json.dumps(result, indent=2) + "\n")
    for name, record in result["metrics"].items():
        value = "n/a" if record["value"] is None else f"{record['value']:.4f}"
        print(f"{name:28s} {value:>12s}   ({record['feature_network']})")
    print(out)
    return 0
