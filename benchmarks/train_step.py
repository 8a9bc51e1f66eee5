"""Time and peak memory of one MCM training step: the library's structure vs the reference
implementation's.

    python benchmarks/train_step.py                      # world + full-size UNet, ~5 min on 2 CPU cores
    python benchmarks/train_step.py --world-only         # ~1 min
    python benchmarks/train_step.py --device cuda --full-frames 16 --full-latent 32   # on a GPU

Arms, at identical settings (the defaults of ``mcm.training.config``: LoRA rank 64, learnable
motion head, discriminator with gradient penalty, mixed trajectories; batch 1; the same
draws from the same seed):

* ``ours`` - the library's default: the teacher is the student with its LoRA disabled (one
  UNet in memory) and the discriminator is the latent one (the frozen teacher UNet's
  encoder on noised latent frames: no VAE decode, no extra backbone).
* ``reference`` - the reference implementation's structure: a separate frozen teacher copy
  of the UNet, and a pixel discriminator (DINOv2 ViT-S/14, random weights) on frames that
  the VAE decodes *with gradient*.
* ``ours_dinov2`` (opt-in with ``--arms``) - one UNet, pixel discriminator: separates the
  two effects.

Models:

* ``world`` - the shipped world teacher (``load_teacher("world")``): 8 frames of 4x8x8
  latents (32x32 px).
* ``full`` - a ModelScopeT2V-architecture ``UNet3DConditionModel`` (text-to-video-ms-1.7b
  config, ~1.41B parameters) and a Stable-Diffusion-architecture VAE, random weights, at
  a short clip (``--full-frames`` x ``--full-latent``^2 latents; default 2 x 16x16 =
  128x128 px). Text embeddings are random [1, 77, 1024] tensors (the text encoder is not
  part of a training step when embeddings come from the latent cache).

Every (model, arm) runs in a fresh subprocess so that peak memory (``ru_maxrss`` on CPU,
``torch.cuda.max_memory_allocated`` on CUDA) is that configuration's alone. Torch threads:
``--threads`` (default 1). Timings drift run to run on a shared machine: compare the
ratios, which are measured in one run. JSON to ``--out``; a markdown table is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ARMS = {
    # name: (separate teacher copy, discriminator backbone)
    "ours": (False, "latent"),
    "reference": (True, "dinov2"),
    "ours_dinov2": (False, "dinov2"),
}
MODELS = ("world", "full")

from fullsize import MODELSCOPE_SCHEDULER, MODELSCOPE_UNET, SD_VAE  # noqa: E402

# DINOv2 ViT-S/14 (facebook/dinov2-small), random weights.
DINOV2_SMALL = dict(
    hidden_size=384,
    num_hidden_layers=12,
    num_attention_heads=6,
    mlp_ratio=4,
    patch_size=14,
    image_size=518,
    layerscale_value=1.0,
)
TEXT_LEN = 77


# ---------------------------------------------------------------------------- worker side
@dataclass
class Models:
    denoiser: object  # VideoDenoiser
    vae: object  # VideoVAE
    text_emb: object  # [B, L, D]
    uncond_emb: object  # [B, L, D]
    pooled: object  # [B, D']
    latent_shape: tuple  # [B, C, F, h, w]


@contextlib.contextmanager
def seeded(seed: int):
    """Weights drawn under a forked RNG: the same seed builds the same model, and the
    caller's global RNG is left untouched."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_world(device) -> Models:
    from mcm.models import load_teacher

    bundle = load_teacher("world", device=device, dtype_policy="fp32")
    prompts = ["a red circle moving left"]
    text = bundle.text_encoder
    sample = bundle.denoiser.unet.config.sample_size
    return Models(
        denoiser=bundle.denoiser,
        vae=bundle.vae,
        text_emb=text(prompts),
        uncond_emb=text.empty(1),
        pooled=text.pooled(prompts),
        latent_shape=(1, bundle.vae.latent_channels, 8, sample, sample),
    )


def build_full(device, frames: int, latent: int) -> Models:
    import torch
    from diffusers import AutoencoderKL, UNet3DConditionModel

    from mcm.models import VideoVAE, make_denoiser

    with seeded(0):
        unet = UNet3DConditionModel(**MODELSCOPE_UNET)
        vae = AutoencoderKL(**SD_VAE)
    denoiser = make_denoiser("modelscope", unet.requires_grad_(False), MODELSCOPE_SCHEDULER)
    g = torch.Generator().manual_seed(1)
    dim = MODELSCOPE_UNET["cross_attention_dim"]
    return Models(
        denoiser=denoiser.to(device),
        vae=VideoVAE(vae, chunk_size=8).to(device),
        text_emb=torch.randn(1, TEXT_LEN, dim, generator=g).to(device),
        uncond_emb=torch.randn(1, TEXT_LEN, dim, generator=g).to(device),
        pooled=torch.randn(1, dim, generator=g).to(device),
        latent_shape=(1, 4, frames, latent, latent),
    )


class UNetCalls:
    """Counts calls of one or more UNets (encoder-only calls included) and their rows."""

    def __init__(self, unets):
        self.calls = self.rows = 0
        self.handles = [u.register_forward_pre_hook(self._pre, with_kwargs=True) for u in unets]

    def _pre(self, module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        self.calls += 1
        self.rows += sample.shape[0]

    def reset(self):
        self.calls = self.rows = 0


def _rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def run_arm(spec: dict) -> dict:
    """Build one (model, arm) and time ``spec['steps']`` training steps after warm-up."""
    import torch

    torch.set_num_threads(spec["threads"])
    rss_import = _rss_gb()
    from mcm.adversarial import AdaptivePenaltyWeight, DinoV2Backbone, FrameDiscriminator
    from mcm.models import attach_lora, copy_teacher, disable_adapters, lora_parameters
    from mcm.motion import build_motion_representation
    from mcm.training.config import DiscriminatorConfig, MethodConfig, ModelConfig
    from mcm.training.distiller import DistillBatch, MCMDistiller, teacher_latent_backbone
    from mcm.training.ema import EMA

    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    separate_teacher, backbone_kind = ARMS[spec["arm"]]
    m_cfg, method, d_cfg = ModelConfig(), MethodConfig(), DiscriminatorConfig()

    t_build = time.perf_counter()
    if spec["model"] == "world":
        models = build_world(device)
    else:
        models = build_full(device, spec["full_frames"], spec["full_latent"])
    student = models.denoiser
    teacher_model = copy_teacher(student) if separate_teacher else None
    attach_lora(student, rank=m_cfg.lora_rank, alpha=m_cfg.lora_alpha)
    C = models.latent_shape[1]
    with seeded(1):
        motion = build_motion_representation(method.motion, C).to(device)
    motion_ema, motion_target = EMA.of_module(motion, method.motion_ema_decay)

    with seeded(2):
        if backbone_kind == "latent":
            backbone = teacher_latent_backbone(
                student,
                (d_cfg.latent_t_min, d_cfg.latent_t_max),
                models.uncond_emb[:1],
                models.latent_shape[-1],
            )
        else:
            from transformers import Dinov2Config

            backbone = DinoV2Backbone(Dinov2Config(**DINOV2_SMALL), taps=tuple(d_cfg.taps))
        disc = FrameDiscriminator(
            backbone,
            text_dim=models.pooled.shape[-1],
            cmap_dim=d_cfg.head_channels,
            augment_policy=d_cfg.augment,
        ).to(device)

    vae = models.vae

    def decode_frames(frames):  # [N, C, h, w] -> what D sees
        if backbone_kind == "latent":
            return frames
        return vae.decode(frames[:, :, None])[:, :, 0]  # with gradient: the reference's cost

    distiller = MCMDistiller(
        method,
        student,
        motion=motion,
        motion_target=motion_target,
        teacher_model=teacher_model,
        disable_adapters=disable_adapters,
        discriminator=disc,
        decode_frames=decode_frames,
    )
    student_params = lora_parameters(student) + [p for p in motion.parameters() if p.requires_grad]
    opt_g = torch.optim.AdamW(student_params, lr=1e-6)
    opt_d = torch.optim.AdamW(list(disc.head_parameters()), lr=d_cfg.lr)
    gp_weight = AdaptivePenaltyWeight(d_cfg.gp_weight)

    # A fixed synthetic batch: the step's cost does not depend on the values.
    g = torch.Generator().manual_seed(3)
    B, _, Fr, h, w = models.latent_shape
    n_real = 2 * B  # one frame from each half of every clip (the recipe's default)
    if backbone_kind == "latent":
        real = torch.randn(n_real, C, h, w, generator=g)
    else:
        d = vae.downsample
        real = torch.rand(n_real, 3, h * d, w * d, generator=g) * 2 - 1
    batch = DistillBatch(
        latents=torch.randn(models.latent_shape, generator=g).to(device),
        text_emb=models.text_emb,
        uncond_emb=models.uncond_emb,
        pooled_text=models.pooled,
        real_frames=real.to(device),
        real_pooled_text=models.pooled.repeat(n_real // B, 1),
    )
    unets = [student.unet] + ([teacher_model.unet] if teacher_model is not None else [])
    counter = UNetCalls(unets)
    build_s = time.perf_counter() - t_build
    rss_setup = _rss_gb()
    n_params = sum(p.numel() for n, p in student.unet.named_parameters() if ".lora_" not in n)
    n_lora = sum(p.numel() for p in lora_parameters(student))

    def sync():
        if cuda:
            torch.cuda.synchronize()

    draws_gen = torch.Generator().manual_seed(4)

    def step(i: int) -> dict:
        draws = distiller.sample_draws(batch.latents, draws_gen)
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        disc.requires_grad_heads(False)
        gen = distiller.generator_step(batch, draws)
        sync()
        t1 = time.perf_counter()
        gen.loss.backward()
        sync()
        t2 = time.perf_counter()
        disc.requires_grad_heads(True)
        d_loss, _ = distiller.discriminator_step(
            gen, batch, draws, penalty_weight=lambda gp: gp_weight.update(gp, i)
        )
        d_loss.backward()
        sync()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(student_params, 10.0)
        opt_g.step()
        opt_d.step()
        opt_g.zero_grad(set_to_none=True)
        opt_d.zero_grad(set_to_none=True)
        motion_ema.update()
        sync()
        t4 = time.perf_counter()
        return {
            "step_s": t4 - t0,
            "cpu_s": time.process_time() - c0,
            "generator_forward_s": t1 - t0,
            "generator_backward_s": t2 - t1,
            "discriminator_s": t3 - t2,
            "optimizer_s": t4 - t3,
            "use_real": bool(draws.use_real),
        }

    for i in range(spec["warmup"]):
        step(i)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    counter.reset()
    timed = [step(spec["warmup"] + i) for i in range(spec["steps"])]

    def med(key):
        return round(statistics.median(t[key] for t in timed), 4)

    result = {
        "model": spec["model"],
        "arm": spec["arm"],
        "separate_teacher": separate_teacher,
        "discriminator": backbone_kind,
        "device": str(device),
        "threads": spec["threads"],
        "latent_shape": list(models.latent_shape),
        "unet_parameters": n_params,
        "lora_parameters": n_lora,
        "build_s": round(build_s, 2),
        "warmup_steps": spec["warmup"],
        "timed_steps": spec["steps"],
        "step_s": med("step_s"),
        "step_cpu_s": med("cpu_s"),
        "step_s_all": [round(t["step_s"], 4) for t in timed],
        "phases_s": {
            k: med(k)
            for k in (
                "generator_forward_s",
                "generator_backward_s",
                "discriminator_s",
                "optimizer_s",
            )
        },
        "use_real": [t["use_real"] for t in timed],
        "unet_calls_per_step": counter.calls / spec["steps"],
        "unet_rows_per_step": counter.rows / spec["steps"],
        "rss_after_imports_gb": round(rss_import, 3),
        "rss_after_setup_gb": round(rss_setup, 3),
        "peak_rss_gb": round(_peak_rss_gb(), 3),
    }
    if cuda:
        result["peak_cuda_allocated_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return result


# ---------------------------------------------------------------------------- parent side
def run_in_subprocess(spec: dict, timeout: float) -> dict:
    """One configuration in a fresh interpreter (its own peak memory)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{spec['model']}/{spec['arm']} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ratios(rows: list[dict]) -> list[dict]:
    """reference / ours (and any other arm / ours) for each model."""
    out = []
    for model in MODELS:
        base = next((r for r in rows if r["model"] == model and r["arm"] == "ours"), None)
        if base is None:
            continue
        for r in rows:
            if r["model"] != model or r["arm"] == "ours":
                continue
            mem = "peak_cuda_allocated_gb" if "peak_cuda_allocated_gb" in r else "peak_rss_gb"
            out.append(
                {
                    "model": model,
                    "arm": r["arm"],
                    "vs": "ours",
                    "step_time_ratio": round(r["step_s"] / base["step_s"], 3),
                    "step_cpu_time_ratio": round(r["step_cpu_s"] / base["step_cpu_s"], 3),
                    "peak_memory_ratio": round(r[mem] / base[mem], 3),
                    "peak_memory_extra_gb": round(r[mem] - base[mem], 3),
                    "memory_measure": mem,
                }
            )
    return out


def table(rows: list[dict], rel: list[dict]) -> str:
    lines = [
        "| model | arm | teacher | discriminator | step s (wall) | step s (CPU) | G fwd / G bwd / D s "
        "| UNet calls | peak mem GB | time ratio | mem ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        q = next((x for x in rel if x["model"] == r["model"] and x["arm"] == r["arm"]), None)
        mem = r.get("peak_cuda_allocated_gb", r["peak_rss_gb"])
        p = r["phases_s"]
        lines.append(
            f"| {r['model']} | {r['arm']} | {'copy' if r['separate_teacher'] else 'LoRA off'} "
            f"| {r['discriminator']} | {r['step_s']:.3f} | {r['step_cpu_s']:.3f} "
            f"| {p['generator_forward_s']:.2f} / {p['generator_backward_s']:.2f} / "
            f"{p['discriminator_s']:.2f} | {r['unet_calls_per_step']:g} | {mem:.2f} "
            f"| {q['step_time_ratio'] if q else 1.0:.2f}x | {q['peak_memory_ratio'] if q else 1.0:.2f}x |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Time and peak memory of one MCM step: the library's structure vs the reference's.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--out", default="benchmarks/results/train_step.json")
    ap.add_argument("--world-only", action="store_true", help="skip the full-size UNet (~1 min)")
    ap.add_argument("--models", default="world,full", help="comma-separated among world, full")
    ap.add_argument(
        "--arms",
        default="ours,reference",
        help=f"comma-separated arms among {', '.join(ARMS)}; 'ours' is the ratios' base",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads per configuration")
    ap.add_argument(
        "--device", default="cpu", help="device of the full-size runs (cpu, cuda, cuda:1, ...)"
    )
    ap.add_argument("--world-device", default="cpu", help="device of the world runs")
    ap.add_argument("--world-steps", type=int, default=5, help="timed steps (world)")
    ap.add_argument("--world-warmup", type=int, default=2)
    ap.add_argument("--full-steps", type=int, default=1, help="timed steps (full-size)")
    ap.add_argument("--full-warmup", type=int, default=1)
    ap.add_argument("--full-frames", type=int, default=2, help="frames of the full-size clip")
    ap.add_argument("--full-latent", type=int, default=16, help="latent height = width (x8 pixels)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per configuration")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        print(json.dumps(run_arm(json.loads(args.worker))))
        return 0

    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown or "ours" not in arms:
        raise ValueError(
            f"--arms must include 'ours' and name arms among {list(ARMS)}; got {arms}."
        )
    models = ["world"] if args.world_only else [m.strip() for m in args.models.split(",")]
    if not models or any(m not in MODELS for m in models):
        raise ValueError(f"--models must name models among {list(MODELS)}; got {args.models!r}.")
    if "cuda" in args.device:
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked but CUDA is not available; use --device cpu.")
    rows = []
    t0 = time.perf_counter()
    for model in models:
        for arm in arms:
            world = model == "world"
            spec = {
                "model": model,
                "arm": arm,
                "device": args.world_device if world else args.device,
                "threads": args.threads,
                "steps": args.world_steps if world else args.full_steps,
                "warmup": args.world_warmup if world else args.full_warmup,
                "full_frames": args.full_frames,
                "full_latent": args.full_latent,
            }
            t = time.perf_counter()
            rows.append(run_in_subprocess(spec, args.timeout))
            print(
                f"{model}/{arm}: {rows[-1]['step_s']:.3f} s/step, "
                f"peak {rows[-1]['peak_rss_gb']:.2f} GB RSS ({time.perf_counter() - t:.0f} s)",
                file=sys.stderr,
            )
    rel = ratios(rows)
    import torch

    result = {
        "benchmark": "train_step",
        "command": "python " + " ".join(sys.argv),
        "what": "one MCM optimiser step (generator step + backward, discriminator step with "
        "gradient penalty + backward, both optimiser steps, motion-head EMA); batch 1",
        "composed": False,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "threads": args.threads,
        },
        "configs": {"modelscope_unet": MODELSCOPE_UNET, "sd_vae": SD_VAE, "dinov2": DINOV2_SMALL},
        "results": rows,
        "ratios": rel,
        "total_s": round(time.perf_counter() - t0, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(table(rows, rel))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
