"""What a preview decoder costs in quality and saves in time, on the built-in world.

    mcm decoder --config configs/world.yaml --out runs/preview-world --width 32 --blocks 2
    python benchmarks/preview_decoder.py --decoder runs/preview-world \\
        --student demo-out/mcm/export --out benchmarks/results/preview_decoder_world.json

The same latents - the world teacher's (guided DDIM-50, the world's guidance) and, with
``--student``, an exported student's at ``--steps`` - are decoded by the teacher's VAE and by
the preview decoder, and both sets of videos are scored with the world metrics (frames
0-7, the shipped probes). Also: the PSNR of the preview against the VAE's decode of the
same latents, and the seconds per video of each decode at batch 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

KEYS = ("prompt_accuracy", "motion_accuracy", "watermark_score", "frame_fd", "video_fd")


def decode_seconds(decoder, latents: torch.Tensor, repeats: int = 5) -> float:
    """Median seconds to decode one video [1, C, F, h, w]."""
    one = latents[:1]
    decoder.decode(one)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        decoder.decode(one)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


@torch.no_grad()
def compare(name: str, latents: torch.Tensor, vae, preview, prompts, probes) -> dict:
    from mcm.world.metrics import world_metrics

    row = {"latents": name}
    videos = {}
    for label, decoder in (("vae", vae), ("preview", preview)):
        video = decoder.decode(latents).clamp(-1, 1)[:, :, :8]
        videos[label] = video
        m = world_metrics(video, prompts, probes)
        row[label] = {k: round(float(m[k]), 4) for k in KEYS if k in m}
        row[label]["decode_s_per_video"] = round(decode_seconds(decoder, latents), 5)
    mse = torch.mean((videos["preview"] - videos["vae"]) ** 2).item()
    row["psnr_preview_vs_vae_db"] = round(10 * torch.log10(torch.tensor(4.0 / mse)).item(), 2)
    row["decode_speedup"] = round(
        row["vae"]["decode_s_per_video"] / row["preview"]["decode_s_per_video"], 2
    )
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--decoder", required=True, help="a world preview decoder (mcm decoder)")
    ap.add_argument("--student", default=None, help="an exported world student (optional)")
    ap.add_argument("--steps", type=int, default=4, help="the student's steps")
    ap.add_argument("--videos", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/preview_decoder_world.json")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)

    from mcm.app import load_student
    from mcm.models import PreviewDecoder, load_teacher
    from mcm.models.sampling import sample_student, sample_teacher
    from mcm.world.probes import load_probes
    from mcm.world.train_config import TEACHER_GUIDANCE
    from mcm.world.train_data import world_prompts

    t0 = time.perf_counter()
    teacher = load_teacher("world", device="cpu", dtype_policy="fp32")
    preview = PreviewDecoder.from_pretrained(args.decoder)
    preview.check_vae(teacher.vae)
    every = world_prompts()
    prompts = [every[i % len(every)] for i in range(args.videos)]
    probes = load_probes()
    sources = [
        (
            "teacher DDIM-50",
            sample_teacher(
                teacher,
                prompts,
                50,
                TEACHER_GUIDANCE,
                args.seed,
                num_frames=8,
                output_type="latent",
            ),
        )
    ]
    if args.student:
        student = load_student(Path(args.student))
        latents = sample_student(
            student.bundle,
            prompts,
            args.steps,
            args.seed,
            output_type="latent",
            **{"num_frames": 8, **student.sampling},
        )
        sources.append((f"student {args.steps} steps", latents))
    rows = [compare(n, z, teacher.vae, preview, prompts, probes) for n, z in sources]
    params = {
        "vae_decoder": sum(p.numel() for p in teacher.vae.vae.decoder.parameters()),
        "preview_decoder": sum(p.numel() for p in preview.model.decoder.parameters()),
    }
    result = {
        "benchmark": "preview_decoder",
        "command": "python " + " ".join(sys.argv),
        "decoder": args.decoder,
        "decoder_config": dict(preview.model.config),
        "parameters": params,
        "videos": args.videos,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "threads": args.threads,
        },
        "results": rows,
        "total_s": round(time.perf_counter() - t0, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str))
    print("| latents | decoder | " + " | ".join(KEYS) + " | s / video decode |")
    print("|---|---|" + "---|" * (len(KEYS) + 1))
    for r in rows:
        for label in ("vae", "preview"):
            m = r[label]
            cells = " | ".join(f"{m[k]:.3f}" if k in m else "-" for k in KEYS)
            print(f"| {r['latents']} | {label} | {cells} | {m['decode_s_per_video']:.4f} |")
        print(f"| {r['latents']} | PSNR preview vs VAE: {r['psnr_preview_vs_vae_db']} dB |")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
