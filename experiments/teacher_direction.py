"""Does a world teacher use the direction word? (docs/WORLD.md, "Why the schedule
is zero-terminal-SNR")

    python experiments/teacher_direction.py [--teacher world] [--out runs/teacher_direction.json]

Two measurements on low-quality clips the teacher was trained on:

* the x0 error of the UNet's prediction, mean squared in latent space, with each clip's own
  prompt and with the opposite direction ("... moving left" <-> "... moving right"), at
  several noise levels. A teacher that follows the direction word predicts worse with the
  wrong one (gap > 0), most of all at high noise, where the direction is decided;
* how far the text encoder puts prompts apart that differ only in direction, colour or
  shape: the mean over token positions of ||e(p) - e(q)|| against the mean ||e(p)||;
* what the direction is worth at the highest noise level, where the best x0 prediction is
  the mean clip given the prompt: the x0 error of group means (from one half of
  ``--mean-clips`` clips, scored on the other half) that know nothing, colour + shape, the
  direction, or the whole prompt, next to the teacher's own x0 error at t = 980.
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
def direction_gap(bundle, n: int = 64, timesteps=(300, 600, 850, 980, 999), seed: int = 0) -> dict:
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


@torch.no_grad()
def conditional_means(bundle, n: int = 4096, seed: int = 1) -> dict:
    """x0 MSE of group-mean predictors on held-out latents, and the teacher's at t = 980."""
    from mcm.diffusion import add_noise
    from mcm.world.train_data import lowq_video_batch, world_prompts

    g = torch.Generator().manual_seed(seed)
    z0, prompt = [], []
    for start in range(0, n, 256):
        videos, scenes = lowq_video_batch(min(256, n - start), g)
        z0.append(bundle.vae.encode(videos))
        prompt.append(scenes.prompt_index())
    z0, prompt = torch.cat(z0), torch.cat(prompt)  # prompt index = (colour, shape, direction)
    fit, test = slice(0, n // 2), slice(n // 2, n)
    groups = {
        "none": torch.zeros_like(prompt),
        "colour_shape": prompt // 4,
        "direction": prompt % 4,
        "prompt": prompt,
    }
    out = {}
    for name, key in groups.items():
        means = {k: z0[fit][key[fit] == k].mean(0) for k in key[fit].unique().tolist()}
        # a group the fitting half never drew (few clips) is left out of the score
        seen = [i for i, k in enumerate(key[test].tolist()) if k in means]
        guess = torch.stack([means[k] for k in key[test][seen].tolist()])
        out[f"x0_mse_{name}_mean"] = round(F.mse_loss(guess, z0[test][seen]).item(), 4)
    out["clips_per_prompt_mean"] = round(n / 2 / len(world_prompts()), 1)
    t = torch.full((n - n // 2,), 980)
    x_t = add_noise(bundle.denoiser.schedule, z0[test], torch.randn(z0[test].shape, generator=g), t)
    emb = bundle.text_encoder([world_prompts()[i] for i in prompt[test]])
    x0 = torch.cat(
        [
            bundle.denoiser.predict_x0_eps(x, tt, e)[0]
            for x, tt, e in zip(x_t.split(64), t.split(64), emb.split(64))
        ]
    )
    out["x0_mse_teacher_t980"] = round(F.mse_loss(x0, z0[test]).item(), 4)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher", default="world", help="'world' or a saved world teacher folder")
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--mean-clips", type=int, default=4096, help="clips for the group means")
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
        "highest_noise": conditional_means(bundle, args.mean_clips),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
