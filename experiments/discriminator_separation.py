"""How fast can the world's latent discriminator learn appearance? Its heads trained alone
(no student), real = clean high-quality frames, fake = low-quality video frames
(docs/RESULTS.md, "How fast the discriminator learns the look").

    python experiments/discriminator_separation.py --out experiments/results/discriminator_separation.json

For each setting (discriminator lr x the latent backbone's largest noise level t_max), the
heads of a fresh unconditional ``FrameDiscriminator`` on the frozen world teacher's UNet
encoder take ``--steps`` hinge-loss steps on batches of 16 + 16 frames; every 25 steps the
mean logit (higher = "real", no augmentation) of 64 held-out clean frames, the same frames
with only the watermark, and low-quality frames is recorded. A discriminator that sees the
watermark puts "watermark only" near "low-quality"; one that sees only blur and contrast
puts it near "clean".

With ``--ascent``, the trained heads' gradient is then followed from 32 held-out
watermark-only latents (60 Adam steps up the mean logit, at each learning rate), and the
decoded frames' watermark score recorded: does the gradient that raises the logit remove
the watermark, on the latents themselves and through a decode-encode round trip
(``discriminator.latent_round_trip``)?
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path

import torch


def frames(kind: str, n: int, g: torch.Generator, vae) -> torch.Tensor:
    """n world frames of one look, encoded: latents [n, C, h, w]."""
    from mcm.world.domains import add_watermark
    from mcm.world.train_data import degrade_batch, render_scene_batch, sample_scene_batch

    scenes = sample_scene_batch(n, g)
    clean = render_scene_batch(scenes, torch.randint(8, (n, 1), generator=g))  # [n, 3, 1, H, W]
    if kind == "low-quality":
        clean = degrade_batch(clean, g)
    elif kind == "watermark only":
        clean = add_watermark(clean)
    return vae.encode(clean)[:, :, 0]


def separation(bundle, lr: float, t_max: int, steps: int, seed: int = 0) -> list[dict]:
    """Train fresh heads; the held-out mean logits every 25 steps (and at the last)."""
    from mcm.adversarial import FrameDiscriminator, hinge_d_loss
    from mcm.training.distiller import teacher_latent_backbone

    torch.manual_seed(seed)
    text = bundle.text_encoder
    size = frames("clean", 1, torch.Generator().manual_seed(seed), bundle.vae).shape[-1]
    backbone = teacher_latent_backbone(bundle.denoiser, (0, t_max), text.empty(1), size)
    D = FrameDiscriminator(
        backbone, text.embedding_dim, augment_policy="translation", conditional=False
    )
    opt = torch.optim.AdamW(D.head_parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed + 1)
    pooled = torch.zeros(64, text.embedding_dim)  # unused by unconditional heads
    held_out = {k: frames(k, 64, g, bundle.vae) for k in ("clean", "watermark only", "low-quality")}
    curve, t0 = [], time.perf_counter()
    for step in range(1, steps + 1):
        real = frames("clean", 16, g, bundle.vae)
        fake = frames("low-quality", 16, g, bundle.vae)
        loss = hinge_d_loss(
            D.logits(D.features(real, g), pooled[:16]), D.logits(D.features(fake, g), pooled[:16])
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 25 == 0 or step == steps:
            D.eval()
            with torch.no_grad():
                logits = {
                    k: round(D(v, pooled, g, augment=False).mean().item(), 3)
                    for k, v in held_out.items()
                }
            D.train()
            curve.append(
                {
                    "step": step,
                    "d_loss": round(loss.item(), 3),
                    "seconds": round(time.perf_counter() - t0, 1),
                    **logits,
                }
            )
            print(f"[separation] lr {lr:g} t_max {t_max} {curve[-1]}", flush=True)
    return curve, D


def ascent(
    D, vae, text_dim: int, g: torch.Generator, lrs=(0.01, 0.03, 0.1), steps: int = 60
) -> list[dict]:
    """Follow the heads' gradient from held-out watermark-only latents; per learning rate
    and round trip: the mean logit reached, the decoded watermark, |z - z0| / |z0|."""
    from mcm.world.metrics import watermark_strength

    D.eval().requires_grad_(False)
    z0 = frames("watermark only", 32, g, vae)
    pooled = torch.zeros(32, text_dim)  # unused by unconditional heads
    with torch.no_grad():
        start = watermark_strength(vae.decode(z0[:, :, None])).mean().item()
    rows = []
    for round_trip, lr in itertools.product((False, True), lrs):
        z = z0.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr)
        for _ in range(steps):
            logit = D(vae.round_trip(z) if round_trip else z, pooled, g, augment=False).mean()
            opt.zero_grad(set_to_none=True)
            (-logit).backward()
            opt.step()
        with torch.no_grad():
            mark = watermark_strength(vae.decode(z[:, :, None])).mean().item()
        rows.append({"round_trip": round_trip, "lr": lr, "logit": round(logit.item(), 3),
                     "watermark": round(mark, 3), "watermark_before": round(start, 3),
                     "relative_change": round(((z - z0).norm() / z0.norm()).item(), 3)})  # fmt: skip
        print(f"[ascent] {rows[-1]}", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/discriminator_separation.json")
    ap.add_argument("--lr", type=float, action="append", help="repeatable; default 3e-4, 2e-3")
    ap.add_argument("--t-max", type=int, action="append", help="repeatable; default 500, 100")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--teacher", default="world", help="world, world-wan or a pipeline folder")
    ap.add_argument("--ascent", action="store_true", help="then follow the heads' gradient")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)

    from mcm.models import load_teacher

    bundle = load_teacher(args.teacher, device="cpu", max_sequence_length=16)
    runs = []
    for lr, t_max in itertools.product(args.lr or [3e-4, 2e-3], args.t_max or [500, 100]):
        curve, D = separation(bundle, lr, t_max, args.steps)
        runs.append({"lr": lr, "t_max": t_max, "curve": curve})
        if args.ascent:
            runs[-1]["ascent"] = ascent(
                D, bundle.vae, bundle.text_encoder.embedding_dim, torch.Generator().manual_seed(2)
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"steps": args.steps, "runs": runs}, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
