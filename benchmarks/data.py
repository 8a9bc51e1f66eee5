"""Data-loading benchmark: clips/s decoded per worker, and training steps/s with and without
the latent cache. Writes JSON and prints a table. Not a test.

    python benchmarks/data.py --out benchmarks/results/data.json
    python benchmarks/data.py --teacher tiny --steps 5          # no world assets needed

Part 1 (decode): synthetic clips (``--clip-size`` pixels, ``--clip-frames`` frames at 24 fps,
H.264) are written to a temporary folder; the rate of ``VideoDataset`` -> batches is timed
with 0 workers (one process: the per-worker rate) and with ``--workers`` workers.

Part 2 (training): ``configs/world.yaml`` on the world's rendered low-quality clips
(``--source``), timing ``DistillRecipe.train_step`` with the clips decoded and VAE-encoded
every step, then with ``data.video.latent_cache`` written by ``write_latent_cache`` (the
VAE and text encode are skipped). Both runs share the seed, so they see the same clips.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch


def bench_decode(args, tmp: Path) -> list[dict]:
    from mcm.data import VideoDataConfig, build_video_dataset, make_dataloader
    from mcm.media import write_video

    g = torch.Generator().manual_seed(0)
    folder = tmp / "clips"
    folder.mkdir()
    h, w = args.clip_size
    for i in range(args.clips):
        # smooth moving content (random noise would make H.264 files unrealistically large)
        base = torch.rand(3, 1, h // 8, w // 8, generator=g)
        frames = torch.cat(
            [torch.roll(base, shifts=t, dims=-1) for t in range(args.clip_frames)], 1
        )
        video = torch.nn.functional.interpolate(frames, size=(h, w), mode="bilinear")
        write_video(folder / f"{i:04d}.mp4", video * 2 - 1, fps=24)
        (folder / f"{i:04d}.txt").write_text(f"clip {i}")
    rows = []
    for workers in sorted({0, args.workers}):
        cfg = VideoDataConfig(
            source=str(folder),
            num_frames=args.num_frames,
            frame_stride=args.frame_stride,
            resolution=args.resolution,
        )
        loader = make_dataloader(build_video_dataset(cfg), args.batch_size, workers, seed=0)
        it = iter(loader)
        next(it)  # start-up (worker fork, first files) is not counted
        n, t0 = 0, time.perf_counter()
        while n < args.decode_samples:
            n += len(next(it)["key"])
        dt = time.perf_counter() - t0
        rows.append(
            {
                "num_workers": workers,
                "clips_per_s": n / dt,
                "clips_per_s_per_worker": n / dt / max(workers, 1),
                "samples": n,
            }
        )
        del it
    return rows


def bench_training(args, tmp: Path) -> dict:
    from mcm.data.cache import write_latent_cache
    from mcm.training.config import load_train_config
    from mcm.training.recipe import DistillRecipe
    from mcm.world.data import resolve_world_sources

    teacher = args.teacher
    if teacher == "tiny":
        from mcm.models.tiny import save_tiny_pipeline

        teacher = str(save_tiny_pipeline("modelscope", tmp / "tiny-teacher"))
    base = [
        f"model.teacher={teacher}",
        f"data.video.source={args.source}",
        f"data.images.source={args.image_source}",
        "data.video.num_workers=0",
        "data.video.shuffle=false",
        "train.tracker=none",
        "train.checkpoint_every=0",
        "train.export=false",
        f"train.batch_size={args.train_batch_size}",
        f"train.max_steps={args.steps + 1}",
    ]
    results = {}
    for mode in ("decode+encode", "latent_cache"):
        overrides = [*base, f"output_dir={tmp / mode}"]
        cfg = load_train_config(args.config, overrides)
        resolve_world_sources(cfg)  # world:<domain> -> rendered folders (cached on disk)
        if mode == "latent_cache":
            from mcm.models import load_teacher

            bundle = load_teacher(cfg.model.teacher, device="cpu")
            t0 = time.perf_counter()
            write_latent_cache(
                cfg.data.video, bundle.vae.encode, tmp / "cache", bundle.text_encoder,
                batch_size=8, seed=cfg.train.seed,
            )  # fmt: skip
            results["cache_write_s"] = time.perf_counter() - t0
            cfg.data.video.latent_cache = str(tmp / "cache")
        recipe = DistillRecipe(cfg)
        recipe.setup()
        recipe.train_step()  # warm-up
        t0 = time.perf_counter()
        for _ in range(args.steps):
            recipe.train_step()
        dt = time.perf_counter() - t0
        recipe.cleanup()
        results[mode] = {"steps_per_s": args.steps / dt, "s_per_step": dt / args.steps}
    results["speedup"] = (
        results["latent_cache"]["steps_per_s"] / results["decode+encode"]["steps_per_s"]
    )
    results.update(teacher=args.teacher, source=args.source, steps=args.steps)
    return results


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default="benchmarks/results/data.json")
    p.add_argument("--threads", type=int, default=1, help="torch threads in the main process")
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--clip-size", type=int, nargs=2, default=[240, 320], metavar=("H", "W"))
    p.add_argument("--clip-frames", type=int, default=48)
    p.add_argument("--num-frames", type=int, default=16)
    p.add_argument("--frame-stride", type=int, default=2)
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--decode-samples", type=int, default=48)
    p.add_argument("--skip-training", action="store_true")
    p.add_argument("--config", default="configs/world.yaml")
    p.add_argument(
        "--teacher", default="world", help="'world', 'tiny' (a random tiny pipeline) or a path"
    )
    p.add_argument("--source", default="world:lowq_video:64")
    p.add_argument("--image-source", default="world:hq_image:64")
    p.add_argument("--train-batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    report = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": args.threads,
        },
        "decode_setup": {
            "clip_size": args.clip_size,
            "clip_frames": args.clip_frames,
            "num_frames": args.num_frames,
            "frame_stride": args.frame_stride,
            "resolution": args.resolution,
            "batch_size": args.batch_size,
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        report["decode"] = bench_decode(args, Path(tmp))
        if not args.skip_training:
            report["training"] = bench_training(args, Path(tmp))

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'num_workers':>11} {'clips/s':>9} {'clips/s/worker':>15}")
    for r in report["decode"]:
        print(
            f"{r['num_workers']:>11} {r['clips_per_s']:>9.2f} {r['clips_per_s_per_worker']:>15.2f}"
        )
    if "training" in report:
        t = report["training"]
        print(f"training steps/s: decode+encode {t['decode+encode']['steps_per_s']:.3f}, "
              f"latent cache {t['latent_cache']['steps_per_s']:.3f} (x{t['speedup']:.2f}); "
              f"cache written in {t['cache_write_s']:.1f} s")  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
