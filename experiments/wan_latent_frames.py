"""Which latent frames of a Wan-VAE video may the frame discriminator compare with images?

Wan's VAE is causal and compresses time 4x: a clip of 4k + 1 frames becomes 1 + k latent
frames, the first encoding video frame 0 alone, each later one four frames. An image
encodes to one latent frame. A discriminator shown images against later latent frames
could tell them apart by latent type instead of appearance. This measures, on world clips
of 9 frames (3 latent frames) and an AutoencoderKLWan with random weights (the world-sized
one of ../shared/reference/flow-teachers.md, or the full-size Wan2.1 one with --full):

1. how far latent frame 0 of a clip is from the image encoding of its frame 0;
2. how well a linear probe (logistic regression on the flattened latent, held-out half)
   tells image latents from latent frame k, for the image of the frame that latent frame
   ends on (frames 0, 4, 8): 0.5 = by chance, 1.0 = always.

    python experiments/wan_latent_frames.py --clips 256 --out experiments/results/wan_latent_frames.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan

from mcm.models.vae import WanVideoVAE
from mcm.world.train_data import lowq_video_batch

WORLD_VAE = dict(
    base_dim=16,
    z_dim=4,
    dim_mult=[1, 2, 2],
    num_res_blocks=1,
    temperal_downsample=[True, True],
    scale_factor_spatial=4,
    latents_mean=[0.0] * 4,
    latents_std=[1.0] * 4,
)


def linear_probe_accuracy(a: torch.Tensor, b: torch.Tensor, steps: int = 500) -> float:
    """Held-out accuracy of logistic regression separating rows of a [N, D] from b [N, D]
    (trained on the first half of each, tested on the second; features standardised)."""
    n = a.shape[0] // 2
    x = torch.cat([a, b]).float()
    y = torch.cat([torch.zeros(len(a)), torch.ones(len(b))])
    train = torch.cat([torch.arange(n), len(a) + torch.arange(n)])
    test = torch.cat([torch.arange(n, len(a)), len(a) + torch.arange(n, len(b))])
    mean, std = x[train].mean(0), x[train].std(0) + 1e-6
    x = (x - mean) / std
    w = torch.zeros(x.shape[1], requires_grad=True)
    bias = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([w, bias], lr=1e-2)
    with torch.enable_grad():
        for _ in range(steps):
            _probe_step(x[train], y[train], w, bias, opt)
    with torch.no_grad():
        return float(((x[test] @ w + bias > 0).float() == y[test]).float().mean())


def _probe_step(x, y, w, bias, opt) -> None:
    loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + bias, y)
    opt.zero_grad()
    loss.backward()
    opt.step()


@torch.no_grad()
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=256)
    p.add_argument("--full", action="store_true", help="the full-size Wan2.1 VAE (slow on CPU)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    torch.manual_seed(0)
    vae = WanVideoVAE(AutoencoderKLWan() if args.full else AutoencoderKLWan(**WORLD_VAE), 16)
    size = 64 if args.full else 32
    video, _ = lowq_video_batch(args.clips, torch.Generator().manual_seed(0), size, 9)
    z = vae.encode(video)  # [N, C, 3, h, w]
    images = {k: vae.encode(video[:, :, [4 * k]])[:, :, 0] for k in range(z.shape[2])}
    result = {
        "vae": "Wan2.1 AutoencoderKLWan" if args.full else "world-sized AutoencoderKLWan",
        "weights": "random (seed 0)",
        "clips": args.clips,
        "clip": f"9 frames of {size}x{size}",
        "latent_frames": z.shape[2],
        "frame0_vs_image_max_abs_diff": float((z[:, :, 0] - images[0]).abs().max()),
        "latent_std": float(z.std()),
        "probe_accuracy_image_vs_latent_frame": {
            str(k): linear_probe_accuracy(images[k].flatten(1), z[:, :, k].flatten(1))
            for k in range(z.shape[2])
        },
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
