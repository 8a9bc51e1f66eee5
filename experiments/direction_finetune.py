"""Can the world teacher learn the direction word by fine-tuning? (docs/WORLD.md, "Why the
schedule is zero-terminal-SNR")

    python experiments/direction_finetune.py --name x0 --weighting x0-clipped --t-min 400 \\
        --separation 5 --steps 600 [--layout animatediff] [--out runs/direction_finetune]

Fine-tunes a world teacher's UNet + text encoder (``--teacher``; the runs in
``experiments/results/direction_finetune/`` started from the previously shipped
epsilon-prediction teacher on ModelScope's schedule) on fresh low-quality clips and records, every ``--eval-every`` steps, ``teacher_direction.py``'s measurement on held-out
clips: the x0 error with each clip's own prompt and how much worse it is with the opposite
direction ("gap"; 0 = the direction word is ignored), at t = 600, 850, 980 and 999.

What it can change, each aimed at one reading of why the teacher ignores the direction:

* ``--weighting``: the loss over noise levels. ``eps`` is the build's plain MSE of the
  prediction (for eps: x0 errors weighted by the SNR, which starves the high noise levels
  where the direction is decided); ``x0-clipped`` multiplies it by min(1 / alpha_bar, 20),
  about an x0 loss up to t ~ 750; ``x0`` (with eps) is the plain x0 loss. ``--t-min`` drops the low noise levels altogether.
* ``--separation M``: a hinge that keeps prompts differing only in the direction word at
  least M apart (mean token distance) in the text encoder's output, which training collapsed
  (``mcm.world.teacher_training.direction_hinge``, also ``mcm world build --direction-margin``).
* ``--prediction v_prediction``: the UNet learns v = alpha eps - sigma x0 instead of eps (the
  saved scheduler says so; stock diffusers samples it). At high noise v ~ -x0, so the
  network outputs the mean clip it should predict there directly, where an eps network must
  get eps right to ~1 % for its x0 (eps / alpha, alpha = 0.08 at t = 980) to be any good.
* ``--zero-snr`` (with v-prediction): the schedule rescaled to zero SNR at t = 999 (Lin
  et al. 2024; diffusers' ``rescale_betas_zero_snr``, sampled with "trailing" timesteps).
  ModelScope's schedule keeps alpha = 0.068 at t = 999, enough of the clip in x_T for the
  network to read the direction from it: trained so, it reads a direction out of the
  sampler's pure noise as well (the shipped teacher's direction follows the seed). At zero
  SNR the text is all there is to go on at the top of the schedule.
* ``--top-fraction F`` (with ``--zero-snr``): that fraction of each batch at t = 999, where
  x_t is pure noise and the loss is the x0 error of predicting the prompt's mean clip.
* ``--layout animatediff``: a ``UNetMotionModel`` (AnimateDiff) built from the teacher's
  weights, whose motion modules add sinusoidal frame positions that UNet3D lacks
  (:func:`motion_layout_unet`).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

WEIGHTINGS = ("eps", "x0-clipped", "x0")
EVAL_TIMESTEPS = (600, 850, 980, 999)


def loss_weight(weighting: str, alpha_bar: torch.Tensor) -> torch.Tensor:
    """Per-sample weight [B] of the prediction's MSE (eps, or v), normalised to mean 1."""
    if weighting == "eps":
        return torch.ones_like(alpha_bar)
    if weighting == "x0-clipped":
        w = (1 / alpha_bar).clamp(max=20.0)
    elif weighting == "x0":
        w = (1 - alpha_bar) / alpha_bar
    else:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}; got {weighting!r}.")
    return w / w.mean()


def motion_layout_unet(unet3d):
    """A diffusers ``UNetMotionModel`` with ``unet3d``'s spatial layers and temporal attention.

    Spatial resnets, attentions, time embedding and in/out convolutions are copied (the
    attentions' 1x1 projections reshaped from linear to conv). UNet3D's temporal attention
    layers become the motion modules in the same places; motion modules UNet3D has no
    counterpart for start as the identity (zero output projection). UNet3D's temporal
    convolutions and ``transformer_in`` have no place in this layout and are dropped.
    """
    from diffusers import UNetMotionModel

    c = unet3d.config
    heads = c.num_attention_heads or c.attention_head_dim
    unet = UNetMotionModel(
        sample_size=c.sample_size,
        in_channels=c.in_channels,
        out_channels=c.out_channels,
        down_block_types=tuple(t.replace("3D", "Motion") for t in c.down_block_types),
        up_block_types=tuple(t.replace("3D", "Motion") for t in c.up_block_types),
        block_out_channels=tuple(c.block_out_channels),
        layers_per_block=c.layers_per_block,
        norm_num_groups=c.norm_num_groups,
        cross_attention_dim=c.cross_attention_dim,
        num_attention_heads=heads,
        motion_num_attention_heads=heads,
        motion_max_seq_length=32,
    )
    for name, module in unet.named_modules():
        if ".motion_modules." in name and name.endswith("proj_out"):
            torch.nn.init.zeros_(module.weight)
            torch.nn.init.zeros_(module.bias)
    target = unet.state_dict()
    copied = {}
    for key, value in unet3d.state_dict().items():
        new = key.replace("temp_attentions", "motion_modules")
        if new in target and target[new].numel() == value.numel():
            copied[new] = value.reshape(target[new].shape)
    unet.load_state_dict(copied, strict=False)
    return unet, sorted(copied)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--teacher", default="world")
    ap.add_argument("--layout", choices=["modelscope", "animatediff"], default="modelscope")
    ap.add_argument("--weighting", choices=WEIGHTINGS, default="eps")
    ap.add_argument("--prediction", choices=["epsilon", "v_prediction"], default="epsilon")
    ap.add_argument("--zero-snr", action="store_true", help="needs --prediction v_prediction")
    ap.add_argument("--t-min", type=int, default=0)
    ap.add_argument(
        "--top-fraction", type=float, default=0.0, help="fraction of clips noised at t = 999"
    )
    ap.add_argument("--separation", type=float, default=0.0, help="0 = off")
    ap.add_argument("--separation-weight", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--pool", type=int, default=4096, help="low-quality clips rendered once")
    ap.add_argument("--eval-clips", type=int, default=32)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/direction_finetune")
    ap.add_argument(
        "--save",
        default=None,
        help="folder for the fine-tuned teacher (a stock pipeline for "
        "modelscope, for `mcm world teacher-metrics --teacher`; unet/ + text_encoder/ otherwise)",
    )
    args = ap.parse_args(argv)
    if args.zero_snr and args.prediction != "v_prediction":
        ap.error("--zero-snr needs --prediction v_prediction (eps cannot give x0 at zero SNR).")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)

    from mcm.diffusion.parametrization import from_x0_eps, to_x0_eps
    from mcm.diffusion.schedules import VPSchedule, add_noise
    from mcm.paths import resolve_teacher
    from mcm.world.pipeline import load_world_pipeline
    from mcm.world.teacher import scheduler_overrides
    from mcm.world.teacher_training import (
        direction_hinge,
        latent_pool,
        prompt_tokens,
        training_timesteps,
    )
    from mcm.world.train_config import BuildConfig
    from mcm.world.train_data import world_prompts
    from teacher_direction import opposite_direction

    parts = load_world_pipeline(str(resolve_teacher(args.teacher))).components
    vae, text_encoder, unet = parts["vae"], parts["text_encoder"], parts["unet"]
    if args.layout == "animatediff":
        unet, _ = motion_layout_unet(unet)
    frames_of = (lambda x: x.shape[2]) if args.layout == "animatediff" else (lambda x: 1)

    def denoise(x_t, t, context):
        # UNetMotionModel wants per-frame text embeddings [B * F, L, D].
        ctx = context.repeat_interleave(frames_of(x_t), dim=0)
        return unet(x_t, t, encoder_hidden_states=ctx).sample

    overrides = scheduler_overrides(
        BuildConfig(prediction_type=args.prediction, zero_snr=args.zero_snr)
    )
    parts["scheduler"] = type(parts["scheduler"]).from_config(
        parts["scheduler"].config, **overrides
    )
    schedule = VPSchedule.from_config(parts["scheduler"].config)
    alpha_bar = schedule.alphas_cumprod

    def alpha_sigma(t):
        return alpha_bar[t].sqrt(), (1 - alpha_bar[t]).sqrt()

    prompts = world_prompts()
    tokens = prompt_tokens(parts["tokenizer"], "cpu")  # [P + 1, L]; last row ""
    opposite = torch.tensor([prompts.index(opposite_direction(p)) for p in prompts])
    scale = vae.config.scaling_factor
    cpu = torch.device("cpu")
    latents, prompt_index = latent_pool(vae, args.pool, args.seed + 11, cpu)
    held_out, held_prompt = latent_pool(vae, args.eval_clips, args.seed + 99, cpu)
    latents, held_out = latents * scale, held_out * scale

    @torch.no_grad()
    def direction_gap() -> dict:
        unet.eval()
        text_encoder.eval()
        g = torch.Generator().manual_seed(args.seed + 5)
        out = {}
        for t in EVAL_TIMESTEPS:
            tt = torch.full((held_out.shape[0],), t)
            x_t = add_noise(schedule, held_out, torch.randn(held_out.shape, generator=g), tt)
            err = []
            for p in (held_prompt, opposite[held_prompt]):
                out_t = denoise(x_t, tt, text_encoder(tokens[p]).last_hidden_state)
                x0, _ = to_x0_eps(out_t, x_t, *alpha_sigma(tt), args.prediction)
                err.append(F.mse_loss(x0, held_out).item())
            out[t] = {"x0_mse": round(err[0], 5), "gap": round(err[1] - err[0], 5)}
        unet.train()
        text_encoder.train()
        return out

    for m in (*unet.modules(), *text_encoder.modules()):
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0  # as in the build: fresh data every step, every draw from `g`
    params = [p for m in (unet, text_encoder) for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    g = torch.Generator().manual_seed(args.seed + 1)
    empty = tokens.shape[0] - 1
    report = Path(args.out) / f"{args.name}.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "name")}

    def write() -> None:
        text = json.dumps({"name": args.name, **settings, "curve": curve}, indent=1)
        report.write_text(text + "\n")

    curve = [{"step": 0, **direction_gap()}]
    print(json.dumps(curve[-1]), flush=True)
    write()
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1.0, step / args.warmup)
        idx = torch.randint(latents.shape[0], (args.batch_size,), generator=g)
        drop = torch.rand(args.batch_size, generator=g) < 0.1
        prompt = torch.where(drop, torch.full_like(idx, empty), prompt_index[idx])
        t = training_timesteps(args.batch_size, 1000, g, cpu, args.top_fraction, args.t_min)
        noise = torch.randn(latents[idx].shape, generator=g)
        x_t = add_noise(schedule, latents[idx], noise, t)
        pred = denoise(x_t, t, text_encoder(tokens[prompt]).last_hidden_state)
        target = from_x0_eps(latents[idx], noise, *alpha_sigma(t), args.prediction)
        per_clip = (pred - target).square().mean(dim=(1, 2, 3, 4))
        loss = (per_clip * loss_weight(args.weighting, alpha_bar[t])).mean()
        if args.separation > 0:
            hinge = direction_hinge(text_encoder, tokens, prompt_index[idx], args.separation, g)
            loss = loss + args.separation_weight * hinge
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % args.eval_every == 0 or step == args.steps:
            row = {"step": step, "seconds": round(time.perf_counter() - t0, 1)}
            curve.append({**row, "loss": round(loss.item(), 5), **direction_gap()})
            print(json.dumps(curve[-1]), flush=True)
            write()  # after every evaluation: a long run stopped early keeps its curve
    if args.save:
        if args.layout == "modelscope":
            from mcm.world.pipeline import world_pipeline

            world_pipeline(parts).save_pretrained(args.save, safe_serialization=True)
        else:
            unet.save_pretrained(Path(args.save) / "unet")
            text_encoder.save_pretrained(Path(args.save) / "text_encoder")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
