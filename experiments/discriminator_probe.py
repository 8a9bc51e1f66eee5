"""What does a trained discriminator look at? Mean logits of a world run's discriminator
on controlled inputs (docs/RESULTS.md, "What the discriminator looks at").

    python experiments/discriminator_probe.py runs/world-variants/adv3   # a run folder

Loads the run's config and its last checkpoint, then scores (mean head logit over 4
draws of the backbone's noise and augmentation, higher = "real"):

* high-quality images with their captions, the same images with only the watermark, and
  with the whole low-quality look (blur, contrast, watermark, noise);
* the student's one-step samples (frames 0 and 4) with their video prompts;
* the swaps: the high-quality images with video-style captions ("... moving left"), the
  student's frames with image-style captions ("a red circle").

A discriminator that judges appearance ranks clean above watermarked above low-quality;
one that reads the caption's form instead flips sign with the captions.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a training output folder (config.yaml + checkpoint-*)")
    ap.add_argument("--images", type=int, default=32)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)

    from mcm.demo import evaluation_prompts
    from mcm.training.checkpoint import resolve_checkpoint
    from mcm.training.config import TrainConfig
    from mcm.training.config_io import load_config
    from mcm.training.recipe import DistillRecipe
    from mcm.world.data import resolve_world_sources
    from mcm.world.domains import add_watermark, degrade, render_sample

    run = Path(args.run)
    cfg = load_config(TrainConfig, run / "config.yaml")
    cfg.output_dir = str(run / "discriminator-probe")
    resolve_world_sources(cfg)
    recipe = DistillRecipe(cfg, resume=str(resolve_checkpoint(run, "latest")))
    recipe.setup()
    D, vae, text = recipe.discriminator, recipe.bundle.vae, recipe.bundle.text_encoder
    D.eval()  # in train mode spectral norm would run a power iteration on every call

    g = torch.Generator().manual_seed(0)
    samples = [render_sample("hq_image", g) for _ in range(args.images)]
    images = torch.stack([s[0] for s in samples])  # [N, 3, H, W]
    captions = [s[1] for s in samples]  # "a red circle"
    looks = {
        "clean": images,
        "watermark only": add_watermark(images),
        "low-quality look": torch.stack(
            [
                degrade(x[:, None], torch.Generator().manual_seed(i))[:, 0]
                for i, x in enumerate(images)
            ]
        ),
    }
    prompts = evaluation_prompts(args.images // 2)  # "a red circle moving left"

    @torch.no_grad()
    def score(latents, caps) -> float:
        pooled = text.pooled(caps)
        feats = (D.features(latents, torch.Generator().manual_seed(s)) for s in range(4))
        return sum(D.logits(f, pooled).mean().item() for f in feats) / 4

    def encode(frames):  # [N, 3, H, W] -> [N, C, h, w]
        return vae.encode(frames[:, :, None])[:, :, 0]

    with torch.no_grad():
        size = recipe.bundle.denoiser.unet.config.sample_size
        shape = (len(prompts), vae.latent_channels, cfg.data.video.num_frames, size, size)
        noise = torch.randn(shape, generator=g)
        z = recipe.distiller.student_sample(noise, text(prompts), None)  # [B, C, F, h, w]
        student = z[:, :, [0, z.shape[2] // 2]].transpose(1, 2).flatten(0, 1)
    per_frame = [p for p in prompts for _ in range(2)]
    result = {
        f"hq images, {k}, image captions": score(encode(v), captions) for k, v in looks.items()
    }
    result["student frames, video prompts"] = score(student, per_frame)
    result["hq images, clean, video-style captions"] = score(
        encode(images), [c + " moving left" for c in captions]
    )
    result["student frames, image-style captions"] = score(
        student, [" ".join(p.split()[:3]) for p in per_frame]
    )
    for k, v in result.items():
        print(f"{k:45s} {v:+.3f}")
    print(json.dumps({"run": str(run), "mean_logits": result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
