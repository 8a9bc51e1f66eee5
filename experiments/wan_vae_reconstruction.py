"""Does the flow-matching world teacher's VAE keep what the world metrics score?

The transformer can only learn the objects' colours and shapes if the VAE's
reconstructions keep them. This encodes held-out low-quality 9-frame clips (posterior
mode), decodes them, and reports the PSNR of each frame and the world metrics of the
reconstructions' frames 0-7 (those the probes know) next to the clips' own:

    python experiments/wan_vae_reconstruction.py \\
        --vae runs/wan-world/teacher.checkpoints/wan_vae/checkpoint-STEP/vae.safetensors \\
        --picture recon.png --out recon.json

``--vae``: a build checkpoint's ``vae.safetensors`` (the default world sizes; STEP: the
step of the build's latest checkpoint) or a pipeline folder (its ``vae/``).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from mcm.world.metrics import world_metrics
from mcm.world.probes import load_probes
from mcm.world.train_data import lowq_video_batch, world_prompts
from mcm.world.wan_pipeline import WAN_FRAMES, WorldWanConfig, world_wan_vae

SCORED = ("prompt_accuracy", "colour_accuracy", "shape_accuracy", "watermark_score", "frame_fd")


def load_vae(path: Path):
    if path.is_dir():  # a pipeline folder or a VAE folder
        from diffusers import AutoencoderKLWan

        return AutoencoderKLWan.from_pretrained(path / "vae" if (path / "vae").is_dir() else path)
    from safetensors.torch import load_file

    vae = world_wan_vae(WorldWanConfig())
    vae.load_state_dict(load_file(path))
    return vae


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    return 10 * math.log10(4 / F.mse_loss(a, b).item())


@torch.no_grad()
def reconstruction_report(vae, clips: int = 48, seed: int = 123) -> tuple[dict, torch.Tensor]:
    """(report, [clips, 3, 9, H, W] clips and reconstructions side by side along H)."""
    vae = vae.eval()
    videos, scenes = lowq_video_batch(
        clips, torch.Generator().manual_seed(seed), num_frames=WAN_FRAMES
    )
    recon = vae.decode(vae.encode(videos).latent_dist.mode()).sample.clamp(-1, 1)
    prompts = [world_prompts()[i] for i in scenes.prompt_index().tolist()]
    probes = load_probes()

    def scores(v):
        m = world_metrics(v[:, :, :8], prompts, probes)
        return {k: round(m[k], 3) for k in SCORED}

    report = {
        "clips": clips,
        "seed": seed,
        "psnr_db": round(psnr(recon, videos), 2),
        "psnr_db_per_frame": [
            round(psnr(recon[:, :, f], videos[:, :, f]), 2) for f in range(WAN_FRAMES)
        ],
        "reconstructions": scores(recon),
        "clips_themselves": scores(videos),
    }
    return report, torch.cat([videos, recon], dim=3)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vae", type=Path, required=True)
    ap.add_argument("--clips", type=int, default=48)
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument(
        "--picture", type=Path, help="PNG: frame 0 of 8 clips above their reconstructions"
    )
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    report, pairs = reconstruction_report(load_vae(args.vae), args.clips, args.seed)
    report["vae"] = str(args.vae)
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    if args.picture:
        from mcm.media import write_image

        row = torch.cat(list(pairs[:8, :, 0]), dim=-1)
        write_image(args.picture, F.interpolate(row[None], scale_factor=4, mode="nearest")[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
