"""`mcm world ...`: render the built-in world's domains, build its teacher and probes.

mcm world render --out DIR [--n-videos N --n-images M --seed S]
mcm world build  --out DIR [--family unet|wan --vae-steps ... --unet-steps ... --device cuda --resume]
mcm world build-probes --out DIR [--steps ... --device ... --seed ...]
mcm world teacher-metrics [--teacher DIR] [--videos N] [--write]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import fields

from mcm.commands.arguments import count, device, integer, non_negative, number

HELP = "render the built-in world's data domains, build its teacher and probes"
WORLD_DOMAINS = ("lowq_video", "hq_image", "style_image", "clean_video")  # mcm.world.domains
positive = number(above=0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="world_command", metavar="SUBCOMMAND", required=True)
    fmt = {"formatter_class": argparse.ArgumentDefaultsHelpFormatter}

    p = sub.add_parser(
        "render", **fmt, help="write the world's domains (mp4/png + .txt captions + .json truth)"
    )
    p.add_argument("--out", required=True, help="output folder (one subfolder per domain)")
    p.add_argument("--n-videos", type=non_negative, default=256, help="clips per video domain")
    p.add_argument("--n-images", type=non_negative, default=256, help="images per image domain")
    p.add_argument("--seed", type=non_negative, default=0)
    p.add_argument(
        "--size",
        type=integer(minimum=8),
        default=32,
        help="frame height = width in pixels (default 32)",
    )
    p.add_argument("--frames", type=count, default=8, help="frames per clip (default 8)")
    p.add_argument(
        "--domains",
        nargs="+",
        default=None,
        choices=WORLD_DOMAINS,
        help="subset of lowq_video hq_image style_image clean_video (default all)",
    )
    p.set_defaults(world_handler=_render)

    from mcm.world.train_config import BuildConfig

    d = BuildConfig()
    p = sub.add_parser(
        "build", **fmt, help="train the world teacher (VAE, then UNet3D + text encoder)"
    )
    p.add_argument(
        "--out",
        default="world_teacher",
        help="pipeline folder to write; checkpoints go to <out>.checkpoints (default world_teacher)",
    )
    p.add_argument(
        "--family",
        choices=["unet", "wan"],
        default="unet",
        help="unet: the shipped TextToVideoSDPipeline teacher; wan: a flow-matching WanPipeline "
        "on 9-frame clips (its transformer stage takes the --unet-* settings)",
    )
    p.add_argument("--vae-steps", type=non_negative, default=d.vae_steps)
    p.add_argument("--unet-steps", type=non_negative, default=d.unet_steps)
    p.add_argument("--batch-size", type=count, default=d.batch_size, help="clips per UNet step")
    p.add_argument(
        "--vae-batch-size", type=count, default=d.vae_batch_size, help="frames per VAE step"
    )
    p.add_argument("--lr", type=positive, default=d.lr, help="UNet + text encoder learning rate")
    p.add_argument("--vae-lr", type=positive, default=d.vae_lr)
    p.add_argument(
        "--pool-size",
        type=count,
        default=d.pool_size,
        help="low-quality clips rendered + encoded once for the UNet stage",
    )
    p.add_argument("--checkpoint-every", type=count, default=d.checkpoint_every)
    p.add_argument("--device", type=device, default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--precision", default=d.precision, choices=["auto", "fp32", "bf16"])
    p.add_argument(
        "--attention",
        default=d.attention,
        choices=["auto", "sdpa", "math"],
        help="UNet attention kernels (auto: time both on CUDA and keep the faster)",
    )
    p.add_argument("--seed", type=non_negative, default=0)
    p.add_argument("--resume", action="store_true", help="continue from <out>.checkpoints")
    p.add_argument(
        "--vae-max-seconds",
        type=number(minimum=0),
        default=None,
        help="stop the VAE stage after this wall time",
    )
    p.add_argument(
        "--unet-max-seconds",
        type=number(minimum=0),
        default=None,
        help="stop the UNet stage after this wall time",
    )
    p.add_argument(
        "--eval-videos",
        type=non_negative,
        default=0,
        help="if > 0 and the probes exist: record world metrics of this many samples in the manifest",
    )
    p.add_argument(
        "--threads", type=count, default=None, help="torch CPU threads (default: torch's)"
    )
    p.add_argument("--note", default=None, help="free text stored in manifest.json")
    p.add_argument(
        "--init-from",
        default=None,
        help="continue from a saved world teacher ('world' = the shipped one): keep its VAE, "
        "train its UNet + text encoder further. --family wan: start the VAE stage from the "
        "AutoencoderKLWan saved in this folder (or its vae/), for --vae-steps more steps, "
        "and, from a WanPipeline folder ('world-wan' = the shipped one), the transformer stage "
        "from its transformer + UMT5",
    )
    p.add_argument(
        "--prediction-type",
        default=d.prediction_type,
        choices=["epsilon", "v_prediction"],
        help="what the UNet predicts (v: high-noise predictions are learnt directly)",
    )
    p.add_argument(
        "--direction-margin",
        type=number(minimum=0),
        default=d.direction_margin,
        help="> 0: keep direction-only prompt pairs this far apart in the text encoder's output",
    )
    p.add_argument(
        "--zero-snr",
        action=argparse.BooleanOptionalAction,
        default=d.zero_snr,
        help="rescale the schedule to zero SNR at the last step (needs v_prediction; sampled "
        "with trailing timesteps); --no-zero-snr keeps ModelScope's",
    )
    p.add_argument(
        "--top-noise-fraction",
        type=number(minimum=0, maximum=1),
        default=d.top_noise_fraction,
        help="fraction of each batch noised at the last timestep, where only the text informs",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(world_handler=_build)

    p = sub.add_parser(
        "build-probes", **fmt, help="train the evaluation-only probes behind the world metrics"
    )
    p.add_argument("--out", required=True, help="probe folder to write")
    p.add_argument("--steps", type=count, default=600)
    p.add_argument("--batch-size", type=integer(minimum=2), default=16, help="clips per step")
    p.add_argument("--lr", type=positive, default=3e-3, help="peak AdamW learning rate")
    p.add_argument(
        "--workers", type=non_negative, default=0, help="processes rendering the batches"
    )
    p.add_argument("--device", type=device, default="cpu")
    p.add_argument("--seed", type=non_negative, default=0)
    p.set_defaults(world_handler=_build_probes)

    p = sub.add_parser(
        "teacher-metrics",
        **fmt,
        help="world metrics of a world teacher's samples (needs the probes)",
    )
    p.add_argument(
        "--teacher", default="world", help="teacher folder, or 'world' for the shipped one"
    )
    p.add_argument(
        "--videos",
        type=count,
        default=120,
        help="videos per step count (cycles the 120 prompts)",
    )
    p.add_argument("--steps", type=count, nargs="+", default=[50, 4], help="DDIM step counts")
    p.add_argument(
        "--guidance",
        type=number(minimum=0),
        default=None,
        help="CFG scale (default: the teacher's)",
    )
    p.add_argument("--device", type=device, default="cpu")
    p.add_argument("--seed", type=non_negative, default=0)
    p.add_argument("--probes", default=None, help="probe folder (default: the shipped probes)")
    p.add_argument(
        "--write", action="store_true", help="store the result in the teacher's manifest.json"
    )
    p.set_defaults(world_handler=_teacher_metrics)


def run(args: argparse.Namespace) -> int:
    return args.world_handler(args)


def _render(args: argparse.Namespace) -> int:
    from mcm.world.domains import DOMAINS
    from mcm.world.render import render_world

    info = render_world(
        args.out,
        args.n_videos,
        args.n_images,
        args.seed,
        args.size,
        args.frames,
        domains=args.domains or DOMAINS,
        progress=True,
    )
    print(json.dumps(info["domains"]))
    return 0


def _build(args: argparse.Namespace) -> int:
    import torch

    from mcm.paths import resolve_teacher
    from mcm.world.teacher import build_world_teacher, read_manifest
    from mcm.world.train_config import BuildConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    # Every BuildConfig field has a same-name flag (its default is the field's).
    settings = {f.name: getattr(args, f.name) for f in fields(BuildConfig) if hasattr(args, f.name)}
    BuildConfig(**settings)  # an impossible combination is refused before anything is written
    command = shlex.join(["mcm", *sys.argv[1:]]) if sys.argv[1:] else None
    if args.family == "wan":
        from mcm.world.wan_teacher_training import build_world_wan_teacher

        cfg = BuildConfig(**{**settings, "progress": not args.no_progress})
        out = build_world_wan_teacher(
            args.out,
            cfg,
            resume=args.resume,
            command=command,
            evaluate_videos=args.eval_videos,
            init_from=None if args.init_from is None else resolve_teacher(args.init_from),
        )
        print(f"flow-matching world teacher written to {out}")
        return 0
    init_from = None if args.init_from is None else resolve_teacher(args.init_from)
    if init_from is not None:
        read_manifest(init_from)  # FileNotFoundError naming the folder: not a world teacher
    out = build_world_teacher(
        args.out,
        resume=args.resume,
        evaluate_videos=args.eval_videos,
        command=command,
        note=args.note,
        init_from=init_from,
        **{**settings, "progress": not args.no_progress},
    )
    print(f"world teacher written to {out} (copy it to src/mcm/world/assets/teacher to ship it)")
    return 0


def _build_probes(args: argparse.Namespace) -> int:
    try:
        from mcm.world.probe_training import build_probes
    except ImportError as e:
        print(f"mcm world build-probes: the probes module is not available ({e}).", file=sys.stderr)
        return 2
    build_probes(
        args.out,
        steps=args.steps,
        device=args.device,
        seed=args.seed,
        batch_size=args.batch_size,
        lr=args.lr,
        num_workers=args.workers,
    )
    print(f"world probes written to {args.out}")
    return 0


def _teacher_metrics(args: argparse.Namespace) -> int:
    from mcm.paths import resolve_teacher
    from mcm.world.teacher import TEACHER_GUIDANCE, read_manifest, teacher_metrics, write_manifest

    teacher = resolve_teacher(args.teacher)
    guidance = TEACHER_GUIDANCE if args.guidance is None else args.guidance
    metrics = teacher_metrics(
        teacher, args.videos, args.device, args.seed, tuple(args.steps), guidance, args.probes
    )
    print(json.dumps(metrics, indent=1))
    if "skipped" in metrics:
        return 1
    if args.write:
        manifest = read_manifest(teacher)
        manifest["metrics"] = metrics
        write_manifest(teacher, manifest)
    return 0
