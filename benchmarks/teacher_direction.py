"""Does a world teacher use the direction word? (docs/WORLD.md, "Why motion is at chance")

    python benchmarks/teacher_direction.py [--teacher world] [--out runs/teacher_direction.json]

Two measurements on low-quality clips the teacher was trained on:

* the x0 error of the UNet's prediction, mean squared in latent space, with each clip's own
  prompt and with the opposite direction ("... moving left" <-> "... moving right"), at
  several noise levels. A teacher that follows the direction word predicts worse with the
  wrong one (gap > 0), most of all at high noise, where the direction is decided;
* how far the text encoder puts prompts apart that differ only in direction, colour or
  shape: the mean over token positions of ||e(p) - e(q)|| against the mean ||e(p)||.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def opposite_direction(prompt: str) -> str:
    head, direction = prompt.rsplit(" ", 1)
    return f"{head} {OPPOSITE[direction]}"


@torch.no_grad()
def direction_gap(bundle, n: int = 64, timesteps=(300, 600, 850), seed: int = 0) -> dict:
    """{t: {"x0_mse": with the right prompt, "gap": wrong - right}} over n clips."""
    from mcm.diffusion import add_noise
    from mcm.world.train_data import lowq_video_batch, world_prompts

    g = torch.Generator().manual_seed(seed)
    videos, scenes = lowq_video_batch(n, g)
    z0 = bundle.vae.encode(videos)
    prompts = [world_prompts()[i] for i in scenes.prompt_index()]
    wrong = [opposite_direction(p) for p in prompts]
    emb = {"right": bundle.text_encoder(prompts), "wrong": bundle.text_encoder(wrong)}
    den = bundle.denoiser
    out = {}
    for t in timesteps:
        tt = torch.full((n,), t)
        x_t = add_noise(den.schedule, z0, torch.randn(z0.shape, generator=g), tt)
        err = {k: F.mse_loss(den.predict_x0_eps(x_t, tt, e)[0], z0).item() for k, e in emb.items()}
        out[t] = {"x0_mse": round(err["right"], 5), "gap": round(err["wrong"] - err["right"], 5)}
    return out


@torch.no_grad()
def text_distances(bundle) -> dict:
    """Mean token-wise distance of prompts that differ in one word, and the mean norm."""
    base = "a red circle moving left"
    changed = {
        "direction": "a red circle moving right",
        "colour": "a blue circle moving left",
        "shape": "a red square moving left",
    }
    e = bundle.text_encoder([base, *changed.values()])  # [4, L, D]
    out = {k: round((e[i + 1] - e[0]).norm(dim=-1).mean().item(), 3) for i, k in enumerate(changed)}
    out["embedding_norm"] = round(e[0].norm(dim=-1).mean().item(), 3)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher", default="world", help="'world' or a saved world teacher folder")
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--out", default="runs/teacher_direction.json")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)

    from mcm.models import load_teacher

    bundle = load_teacher(args.teacher, device="cpu")
    result = {
        "teacher": args.teacher,
        "clips": args.clips,
        "x0_error_by_t": direction_gap(bundle, args.clips),
        "text_distance": text_distances(bundle),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
