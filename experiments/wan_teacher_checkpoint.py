"""How far has a flow world build's transformer got? Score one of its checkpoints.

The build (`mcm world build --family wan`) writes its pipeline only at the end of a part;
this assembles a stock WanPipeline from a transformer checkpoint while the build goes on:
the VAE of the build's own VAE checkpoint, the latent statistics of its pool, and the
checkpoint's EMA weights (what the build saves), with the transformer in fp16 as the build
stores it; then scores it with `teacher_metrics` (Euler steps, frames 0-7 of 9):

    python experiments/wan_teacher_checkpoint.py \\
        --checkpoint runs/wan/teacher.checkpoints/transformer/checkpoint-2500 \\
        --videos 24 --steps 50 4 --out ckpt2500.json

The build keeps only its latest checkpoint: copy one aside (with the `pool.safetensors` and
`wan_vae/` beside its parent) to score it after the build has moved on.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from mcm.training import checkpoint as ckpt
from mcm.world.teacher import teacher_metrics
from mcm.world.wan_pipeline import world_wan_components, world_wan_pipeline
from mcm.world.wan_teacher_training import set_latent_stats


def pipeline_from_checkpoint(checkpoint: Path, out: Path) -> Path:
    """Save to ``out`` the WanPipeline of a transformer checkpoint of a build (its
    ``<build>.checkpoints/transformer/checkpoint-N``)."""
    root = checkpoint.parent.parent
    components = world_wan_components()
    vae_ckpt = ckpt.list_checkpoints(root / "wan_vae")[-1]
    components["vae"].load_state_dict(ckpt.load_weights(vae_ckpt / "vae.safetensors"))
    set_latent_stats(components["vae"], ckpt.load_weights(root / "pool.safetensors")["latents"])
    ema = ckpt.load_weights(checkpoint / "ema.safetensors")
    params = [p for name in ("transformer", "text_encoder") for p in components[name].parameters()]
    if len(params) != len(ema) - 1:  # the shadows and their update count
        raise ValueError(f"{checkpoint}: {len(ema) - 1} EMA tensors for {len(params)} weights.")
    with torch.no_grad():
        for i, p in enumerate(params):
            p.copy_(ema[f"shadow.{i}"])
    for p in components["transformer"].parameters():
        p.data = p.data.half()
    world_wan_pipeline(components).save_pretrained(out, safe_serialization=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--videos", type=int, default=24)
    p.add_argument("--steps", type=int, nargs="+", default=[50, 4])
    p.add_argument("--guidance", type=float, default=None, help="default: the teacher's")
    p.add_argument("--pipeline", type=Path, default=None, help="keep the pipeline here")
    p.add_argument("--out", type=Path, default=None, help="write the metrics as JSON")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = pipeline_from_checkpoint(args.checkpoint, args.pipeline or Path(tmp))
        kwargs = {} if args.guidance is None else {"guidance_scale": args.guidance}
        metrics = teacher_metrics(folder, args.videos, steps=tuple(args.steps), **kwargs)
    report = {"checkpoint": str(args.checkpoint), **metrics}
    text = json.dumps(report, indent=1)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
