"""`mcm data check|pack|cache-latents`: inspect and prepare video/image datasets.

    mcm data check SOURCE [--kind video|image] [--config train.yaml] [--set KEY=VALUE ...]
    mcm data pack SOURCE --out DIR [--shard-size N] [--no-verify]
    mcm data cache-latents --source SOURCE --teacher PATH|world --out DIR

The data settings come from a training config's ``data.video`` / ``data.images`` section
(``--config``), else from the defaults of ``VideoDataConfig`` / ``ImageDataConfig``, then
``--set`` overrides (``num_frames=8`` or ``data.video.num_frames=8``) and the flags.
``SOURCE`` may be ``world:<domain>`` (the built-in world's rendered data).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from mcm.commands.arguments import count, device, non_negative, number
from mcm.errors import InputError

HELP = "check, pack and cache video/image datasets"


def _data_options(p: argparse.ArgumentParser, with_kind: bool = True) -> None:
    if with_kind:
        p.add_argument(
            "--kind", choices=("video", "image"), default="video", help="what the source holds"
        )
    p.add_argument(
        "--config", help="a training YAML whose data.video / data.images settings to use"
    )
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a data setting, e.g. --set num_frames=8 (repeatable)",
    )  # fmt: skip
    p.add_argument("--num-frames", type=count, help="frames per clip (num_frames)")
    p.add_argument("--frame-stride", type=count, help="take every n-th frame (frame_stride)")
    p.add_argument(
        "--fps", type=number(above=0), help="sample frames at this rate instead of a stride"
    )
    p.add_argument("--resolution", type=count, nargs="+", help="output size: S or H W")
    p.add_argument(
        "--num-workers", type=non_negative, default=None, help="decoding worker processes"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser(
        "check", help="decode every sample as training would; report what is skipped"
    )
    p.add_argument(
        "source", help="folder, .csv, .jsonl, shards (dir, .tar, {a..b} pattern) or world:<domain>"
    )
    _data_options(p)
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON ('-' for stdout)")
    p.set_defaults(data_handler=_run_check)

    p = sub.add_parser("pack", help="write a folder/CSV/JSONL source as webdataset shards")
    p.add_argument("source")
    p.add_argument("--out", required=True, help="folder for the shards")
    p.add_argument("--prefix", default="shard", help="shard file name prefix")
    p.add_argument("--shard-size", type=count, default=1000, help="samples per shard")
    p.add_argument(
        "--max-shard-mb",
        type=number(above=0),
        default=1024,
        help="start a new shard before this size",
    )
    p.add_argument(
        "--no-verify", action="store_true", help="pack without decoding every sample first"
    )
    _data_options(p)
    p.set_defaults(data_handler=_run_pack)

    p = sub.add_parser(
        "cache-latents", help="precompute VAE latents and text embeddings of a video source"
    )
    p.add_argument("--source", help="the clips (default: the config's data.video.source)")
    p.add_argument("--teacher", required=True, help="teacher pipeline directory or 'world'")
    p.add_argument(
        "--out", required=True, help="the cache folder (then set data.video.latent_cache to it)"
    )
    p.add_argument("--batch-size", type=count, default=8)
    p.add_argument(
        "--seed",
        type=non_negative,
        default=0,
        help="data seed (random views are drawn once per clip)",
    )
    p.add_argument(
        "--dtype", choices=("fp32", "fp16", "bf16"), default="fp32", help="stored precision"
    )
    p.add_argument(
        "--no-text", action="store_true", help="store latents only (training encodes captions)"
    )
    p.add_argument(
        "--max-sequence-length",
        type=count,
        default=512,
        help="Wan: prompt tokens (model.max_sequence_length of the training config)",
    )
    p.add_argument(
        "--device",
        type=device,
        default=None,
        help="device for the teacher (default: cuda if available)",
    )
    _data_options(p, with_kind=False)
    p.set_defaults(data_handler=_run_cache, kind="video")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return args.data_handler(args)


def build_config(args: argparse.Namespace, source: str | None):
    """The data config the flags describe (see the module docstring for the precedence).
    Every problem is a ConfigError naming the key (``data.video.num_frames: ...``)."""
    from mcm.data import ImageDataConfig, VideoDataConfig, config_from_dict
    from mcm.schema import parse_value, read_yaml

    section = "images" if args.kind == "image" else "video"
    cls = ImageDataConfig if args.kind == "image" else VideoDataConfig
    values: dict = {}
    if args.config:
        doc = read_yaml(args.config) or {}
        data = doc.get("data") if isinstance(doc, dict) else None
        values = dict((data.get(section) if isinstance(data, dict) else None) or {})
    for item in args.overrides:
        key, sep, raw = item.partition("=")
        key = key.strip().removeprefix(f"data.{section}.")
        if not sep or not key:
            raise InputError(f"--set {item!r}: write KEY=VALUE, e.g. --set num_frames=8.")
        values[key] = parse_value(raw, f"data.{section}.{key}")
    flags = {
        "num_frames": args.num_frames,
        "frame_stride": args.frame_stride,
        "fps": args.fps,
        "num_workers": args.num_workers,
        "resolution": (args.resolution[0] if len(args.resolution) == 1 else args.resolution)
        if args.resolution
        else None,
    }
    for key, value in flags.items():
        if value is not None:
            if args.kind == "image" and key in ("num_frames", "frame_stride", "fps"):
                raise InputError(f"--{key.replace('_', '-')} applies to videos, not --kind image.")
            values[key] = value
    if source:
        values["source"] = source
    cfg = config_from_dict(cls, values, prefix=f"data.{section}")
    if cfg.source.startswith("world:"):
        from mcm.world.data import world_source

        cfg.source = world_source(cfg.source)
    return cfg.validate()


def _run_check(args: argparse.Namespace) -> int:
    from mcm.data.check import check_source

    cfg = build_config(args, args.source)
    report = check_source(cfg, args.kind, num_workers=cfg.num_workers)
    print(report.format_text())
    if args.json:
        text = json.dumps(report.to_dict(), indent=2)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
    return 0 if report.ok else 1


def _run_pack(args: argparse.Namespace) -> int:
    from mcm.data.check import pack_source

    cfg = build_config(args, args.source)
    writer, report = pack_source(
        cfg,
        args.out,
        args.kind,
        shard_size=args.shard_size,
        max_shard_bytes=int(args.max_shard_mb * 2**20),
        verify=not args.no_verify,
        num_workers=cfg.num_workers,
        prefix=args.prefix,
    )
    if report is not None:
        print(report.format_text())
    print(f"wrote {len(writer.paths)} shard(s): source: {writer.pattern()}")
    return 0 if writer.paths else 1


def _run_cache(args: argparse.Namespace) -> int:
    from mcm.data.cache import write_latent_cache

    cfg = build_config(args, args.source)
    try:
        from mcm.models import load_teacher
    except ImportError as e:
        print(f"mcm data cache-latents: mcm.models is not available ({e}).", file=sys.stderr)
        return 2
    bundle = load_teacher(
        args.teacher, device=args.device, max_sequence_length=args.max_sequence_length
    )
    device = bundle.vae.vae.device

    def encode_video(video):
        return bundle.vae.encode(video.to(device))  # posterior mean: deterministic

    encode_text = None if args.no_text else bundle.text_encoder
    log = write_latent_cache(
        cfg,
        encode_video,
        args.out,
        encode_text=encode_text,
        batch_size=args.batch_size,
        num_workers=cfg.num_workers,
        seed=args.seed,
        dtype=args.dtype,
        teacher=args.teacher,
    )
    print(log.summary())
    print(f"latent cache written to {args.out}: set data.video.latent_cache: {args.out}")
    return 0
