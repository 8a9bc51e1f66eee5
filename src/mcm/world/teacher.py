"""Build the world teacher: train its VAE, then its UNet3D + text encoder, save a stock
diffusers ``TextToVideoSDPipeline`` plus ``manifest.json``.

Two stages, each seeded, resumable (``checkpoint_every`` steps, ``resume=True``) and
shown with a progress bar that reports throughput:

1. VAE: frames of the low-quality videos, clean high-quality images and style images
   (so the VAE can also represent the sharp frames the student will learn to make);
   loss = MSE + ``kl_weight`` * KL. Then the latent scaling factor = 1 / std of the
   latents of low-quality clips.
2. UNet + text encoder, jointly, on VAE latents of **low-quality videos only**:
   epsilon-prediction MSE over the DDPM forward process of the scheduler's betas, with
   ``prompt_dropout`` of the prompts replaced by "" (for classifier-free guidance). The
   clips come from a pool of ``pool_size`` clips rendered and encoded once on the device
   (fresh noise and timesteps every step). The saved weights are an EMA of the trained ones.

Everything renders and trains on ``device``; on CUDA the forward passes run under bf16
autocast. Checkpoints live in ``<out_dir>.checkpoints/`` so that ``out_dir`` can be copied
as-is into ``mcm/world/assets/teacher``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, replace
from pathlib import Path

import diffusers
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm.auto import tqdm

from mcm.diffusion.parametrization import from_x0_eps
from mcm.diffusion.schedules import VPSchedule, add_noise
from mcm.world.metrics import world_metrics
from mcm.world.pipeline import (
    WorldTeacherConfig,
    load_world_pipeline,
    world_pipeline,
    world_teacher_components,
)
from mcm.world.probes import load_probes
from mcm.world.train_config import TEACHER_GUIDANCE, TEACHER_STEPS, BuildConfig
from mcm.world.train_data import lowq_video_batch, vae_frame_batch, world_prompts

MANIFEST = "manifest.json"
__all__ = [
    "BuildConfig",
    "build_world_teacher",
    "teacher_metrics",
    "TEACHER_STEPS",
    "TEACHER_GUIDANCE",
]


# ---------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------


def _autocast(cfg: BuildConfig, device: torch.device):
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def _warmup_lr(step: int, peak: float, warmup: int) -> float:
    return peak * min(1.0, (step + 1) / max(1, warmup))


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _load(path: Path, device: torch.device) -> dict | None:
    return torch.load(path, map_location=device, weights_only=True) if path.is_file() else None


def _git_revision() -> str:
    if os.environ.get("MCM_GIT_REVISION"):  # e.g. a copied working tree with a stale .git
        return os.environ["MCM_GIT_REVISION"]
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev, dirty = "", ""
    if not rev:
        return "unknown (no .git; set MCM_GIT_REVISION)"
    return rev + ("+dirty" if dirty else "")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Stage:
    """Progress bar + throughput of one training stage."""

    def __init__(self, name: str, start: int, total: int, unit_per_step: int, show: bool):
        self.name, self.start, self.unit = name, start, unit_per_step
        self.bar = tqdm(total=total, initial=start, desc=name, disable=not show, dynamic_ncols=True)
        self.t0 = time.perf_counter()
        self.steps = 0

    def update(self, loss: float | None) -> None:
        self.steps += 1
        self.bar.update(1)
        if loss is not None:
            rate = self.steps / max(1e-9, time.perf_counter() - self.t0)
            self.bar.set_postfix(loss=f"{loss:.4f}", steps_s=f"{rate:.2f}")

    def close(self) -> dict:
        self.bar.close()
        wall = time.perf_counter() - self.t0
        rate = self.steps / wall if wall > 0 else 0.0
        stats = {
            "steps_run": self.steps,
            "wall_s": round(wall, 2),
            "steps_per_s": round(rate, 3),
            "samples_per_s": round(rate * self.unit, 1),
        }
        print(
            f"[{self.name}] {self.steps} steps in {wall:.1f} s: {rate:.2f} steps/s, "
            f"{rate * self.unit:.0f} samples/s",
            file=sys.stderr,
        )
        return stats


# ---------------------------------------------------------------------------------------
# Stage 1: the VAE
# ---------------------------------------------------------------------------------------


def vae_loss(
    vae, frames: torch.Tensor, kl_weight: float, generator: torch.Generator
) -> torch.Tensor:
    """MSE of the reconstruction of frames [N, 3, H, W] + kl_weight * KL (summed per frame)."""
    posterior = vae.encode(frames).latent_dist
    z = posterior.sample(generator=generator)
    recon = vae.decode(z).sample
    return F.mse_loss(recon.float(), frames) + kl_weight * posterior.kl().float().mean()


def train_vae(vae, cfg: BuildConfig, ckpt_dir: Path, resume: bool) -> tuple[dict, bool]:
    """Stage 1 (see module docstring). Returns (stats, whether any step was taken)."""
    device = torch.device(cfg.device)
    g = torch.Generator(device).manual_seed(cfg.seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    path, step = ckpt_dir / "vae.pt", 0
    state = _load(path, device) if resume else None
    if state is not None:
        vae.load_state_dict(state["vae"])
        opt.load_state_dict(state["optimizer"])
        g.set_state(state["generator"].cpu())
        step = state["step"]
        if state["seed"] != cfg.seed:
            print(
                f"warning: resuming a VAE trained with seed {state['seed']} (now {cfg.seed})",
                file=sys.stderr,
            )

    def save() -> None:
        _save_atomic(
            {
                "vae": vae.state_dict(),
                "optimizer": opt.state_dict(),
                "generator": g.get_state(),
                "step": step,
                "seed": cfg.seed,
            },
            path,
        )

    stage = _Stage("vae", step, cfg.vae_steps, cfg.vae_batch_size, cfg.progress)
    trained = step < cfg.vae_steps
    vae.train()
    while step < cfg.vae_steps:
        if cfg.vae_max_seconds is not None and time.perf_counter() - stage.t0 > cfg.vae_max_seconds:
            break
        for group in opt.param_groups:
            group["lr"] = _warmup_lr(step, cfg.vae_lr, cfg.warmup_steps)
        frames = vae_frame_batch(cfg.vae_batch_size, g)
        with _autocast(cfg, device):
            loss = vae_loss(vae, frames, cfg.kl_weight, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        show = step % 25 == 0 or step == cfg.vae_steps
        stage.update(loss.item() if show else None)
        if step % cfg.checkpoint_every == 0 or step == cfg.vae_steps:
            save()
    if trained:
        save()
    stats = stage.close()
    stats["steps"] = step
    vae.eval()
    return stats, trained


@torch.no_grad()
def encode_videos(vae, videos: torch.Tensor, scaling_factor: float = 1.0) -> torch.Tensor:
    """Posterior means of clips [B, 3, F, H, W] -> latents [B, C, F, h, w] times the scale."""
    B, C, Fr, H, W = videos.shape
    frames = videos.permute(0, 2, 1, 3, 4).reshape(B * Fr, C, H, W)
    z = vae.encode(frames).latent_dist.mean.float() * scaling_factor
    return z.reshape(B, Fr, *z.shape[1:]).permute(0, 2, 1, 3, 4)


@torch.no_grad()
def latent_pool(vae, n: int, seed: int, device: torch.device, chunk: int = 256, autocast=None):
    """n fresh low-quality clips, encoded: (latents [n, C, F, h, w] unscaled, prompt index [n])."""
    g = torch.Generator(device).manual_seed(seed)
    latents, prompts = [], []
    for start in range(0, n, chunk):
        videos, scenes = lowq_video_batch(min(chunk, n - start), g)
        with autocast or nullcontext():
            latents.append(encode_videos(vae, videos))
        prompts.append(scenes.prompt_index())
    return torch.cat(latents), torch.cat(prompts)


# ---------------------------------------------------------------------------------------
# Stage 2: UNet + text encoder
# ---------------------------------------------------------------------------------------


def _attention_context(choice: str):
    return sdpa_kernel(SDPBackend.MATH) if choice == "math" else nullcontext()


def choose_attention(
    components: dict, cfg: BuildConfig, tokens: torch.Tensor, latent_shape, steps: int = 5
):
    """The attention setting for stage 2 and, for "auto" on CUDA, the measured seconds per
    training step of each candidate (random latents, own generator, no optimiser step, so
    the build's draws and weights are untouched)."""
    device = torch.device(cfg.device)
    if cfg.attention != "auto":
        return cfg.attention, {}
    if device.type != "cuda":
        return "sdpa", {}
    unet, text_encoder = components["unet"], components["text_encoder"]
    schedule = VPSchedule.from_config(components["scheduler"].config)
    schedule = replace(schedule, alphas_cumprod=schedule.alphas_cumprod.to(device))
    g = torch.Generator(device).manual_seed(12345)
    z0 = torch.randn(cfg.batch_size, *latent_shape, generator=g, device=device)
    ids = tokens[torch.randint(tokens.shape[0], (cfg.batch_size,), generator=g, device=device)]
    seconds: dict[str, float | str] = {}
    for choice in ("sdpa", "math"):
        times = []
        try:
            for i in range(steps + 2):  # two warm-up steps
                _sync(device)
                t0 = time.perf_counter()
                with _attention_context(choice), _autocast(cfg, device):
                    loss = diffusion_loss(unet, text_encoder, schedule, z0, ids, g)
                loss.backward()
                _sync(device)
                if i >= 2:
                    times.append(time.perf_counter() - t0)
            seconds[choice] = round(sorted(times)[len(times) // 2], 5)
        except RuntimeError as e:  # e.g. fused SDPA kernels reject 1024 * 64 * 8 sequences
            seconds[choice] = f"failed: {str(e).splitlines()[0]}"
        unet.zero_grad(set_to_none=True)
        text_encoder.zero_grad(set_to_none=True)
    timed = {k: v for k, v in seconds.items() if isinstance(v, float)}
    if not timed:
        raise RuntimeError(f"No attention setting ran on {device}: {seconds}")
    best = min(timed, key=timed.get)
    print(f"[attention] seconds per step {seconds}: using {best}", file=sys.stderr)
    return best, seconds


def _ema_update(ema: list[torch.Tensor], params: list[torch.Tensor], decay: float) -> None:
    torch._foreach_lerp_(ema, [p.detach() for p in params], 1.0 - decay)


def training_timesteps(
    n: int, T: int, generator, device, top_fraction: float = 0.0, t_min: int = 0
) -> torch.Tensor:
    """Timesteps [n]: uniform in t_min..T-1, with a ``top_fraction`` of them set to T-1.

    With ``top_fraction`` 0 the draws are exactly those of a plain uniform draw.
    """
    t = torch.randint(t_min, T, (n,), generator=generator, device=device)
    if top_fraction > 0:
        top = torch.rand(n, generator=generator, device=device) < top_fraction
        t = torch.where(top, torch.full_like(t, T - 1), t)
    return t


def scheduler_overrides(cfg: BuildConfig) -> dict:
    """Scheduler config entries the build sets, whatever the starting teacher had: the
    parametrisation and the schedule, zero SNR with "trailing" timesteps (sampling starts at
    the pure-noise step) or ModelScope's with "leading" ones."""
    return {
        "prediction_type": cfg.prediction_type,
        "rescale_betas_zero_snr": cfg.zero_snr,
        "timestep_spacing": "trailing" if cfg.zero_snr else "leading",
    }


def diffusion_loss(
    unet,
    text_encoder,
    schedule: VPSchedule,
    z0,
    tokens,
    generator,
    prediction_type="epsilon",
    top_fraction: float = 0.0,
) -> torch.Tensor:
    """MSE of the UNet's eps (or v) prediction: z0 [B, C, F, h, w], tokens [B, L] -> scalar.

    Timesteps come from :func:`training_timesteps` (``top_fraction`` of them at T-1)."""
    B = z0.shape[0]
    T = schedule.num_train_timesteps
    t = training_timesteps(B, T, generator, z0.device, top_fraction)
    noise = torch.randn(z0.shape, generator=generator, device=z0.device)
    x_t = add_noise(schedule, z0, noise, t)
    context = text_encoder(tokens).last_hidden_state
    pred = unet(x_t, t, encoder_hidden_states=context).sample
    alpha_bar = schedule.alphas_cumprod[t]
    target = from_x0_eps(z0, noise, alpha_bar.sqrt(), (1 - alpha_bar).sqrt(), prediction_type)
    return F.mse_loss(pred.float(), target)


def direction_hinge(text_encoder, tokens, prompt_index, margin: float, generator) -> torch.Tensor:
    """mean(relu(margin - d)), d = mean token distance between each prompt [B] and the same
    colour and shape moving another way (prompt index = (colour * shapes + shape) * 4 + dir)."""
    shift = torch.randint(1, 4, prompt_index.shape, generator=generator, device=tokens.device)
    other = prompt_index - prompt_index % 4 + (prompt_index + shift) % 4
    e = text_encoder(tokens[torch.cat([prompt_index, other])]).last_hidden_state
    distance = (e[: len(other)] - e[len(other) :]).norm(dim=-1).mean(dim=1)
    return F.relu(margin - distance).mean()


def prompt_tokens(tokenizer, device: torch.device) -> torch.Tensor:
    """Token ids [P + 1, L] of every world video prompt, then of the empty prompt (last row)."""
    ids = tokenizer(
        world_prompts() + [""],
        padding="max_length",
        truncation=True,
        max_length=tokenizer.model_max_length,
        return_tensors="pt",
    ).input_ids
    return ids.to(device)


def train_unet(
    components: dict, pool: tuple, cfg: BuildConfig, ckpt_dir: Path, resume: bool
) -> dict:
    """Stage 2 (see module docstring). Leaves the EMA weights in the models."""
    device = torch.device(cfg.device)
    unet, text_encoder = components["unet"], components["text_encoder"]
    schedule = VPSchedule.from_config(components["scheduler"].config)
    schedule = replace(schedule, alphas_cumprod=schedule.alphas_cumprod.to(device))
    params = [p for m in (unet, text_encoder) for p in m.parameters()]
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    g = torch.Generator(device).manual_seed(cfg.seed + 1)
    tokens = prompt_tokens(components["tokenizer"], device)
    latents, prompt_index = pool
    attention, attention_timing = choose_attention(components, cfg, tokens, latents.shape[1:])
    path, step = ckpt_dir / "unet.pt", 0
    state = _load(path, device) if resume else None
    if state is not None:
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text_encoder"])
        for e, v in zip(ema, state["ema"]):
            e.copy_(v)
        opt.load_state_dict(state["optimizer"])
        g.set_state(state["generator"].cpu())
        step = state["step"]

    def save() -> None:
        _save_atomic(
            {
                "unet": unet.state_dict(),
                "text_encoder": text_encoder.state_dict(),
                "ema": ema,
                "optimizer": opt.state_dict(),
                "generator": g.get_state(),
                "step": step,
                "seed": cfg.seed,
            },
            path,
        )

    stage = _Stage("unet", step, cfg.unet_steps, cfg.batch_size, cfg.progress)
    trained = step < cfg.unet_steps
    unet.train()
    text_encoder.train()
    # UNet3D's temporal convolutions hard-code dropout 0.1, drawn from the global RNG. With
    # fresh data every step it is not needed, and without it every draw is from `g`.
    for m in (*unet.modules(), *text_encoder.modules()):
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    empty = tokens.shape[0] - 1
    while step < cfg.unet_steps:
        if (
            cfg.unet_max_seconds is not None
            and time.perf_counter() - stage.t0 > cfg.unet_max_seconds
        ):
            break
        for group in opt.param_groups:
            group["lr"] = _warmup_lr(step, cfg.lr, cfg.warmup_steps)
        idx = torch.randint(latents.shape[0], (cfg.batch_size,), generator=g, device=device)
        drop = torch.rand(cfg.batch_size, generator=g, device=device) < cfg.prompt_dropout
        prompt = torch.where(drop, torch.full_like(idx, empty), prompt_index[idx])
        with _attention_context(attention), _autocast(cfg, device):
            loss = diffusion_loss(
                unet,
                text_encoder,
                schedule,
                latents[idx],
                tokens[prompt],
                g,
                cfg.prediction_type,
                cfg.top_noise_fraction,
            )
            if cfg.direction_margin > 0:
                hinge = direction_hinge(
                    text_encoder, tokens, prompt_index[idx], cfg.direction_margin, g
                )
                loss = loss + 0.1 * hinge
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        # EMA warm-up: early averages forget the random initialisation quickly.
        _ema_update(ema, params, min(cfg.ema_decay, (1 + step) / (10 + step)))
        step += 1
        show = step % 25 == 0 or step == cfg.unet_steps
        stage.update(loss.item() if show else None)
        if step % cfg.checkpoint_every == 0 or step == cfg.unet_steps:
            save()
    if trained:
        save()
    stats = stage.close()
    stats["steps"] = step
    stats["attention"] = attention
    if attention_timing:
        stats["attention_seconds_per_step"] = attention_timing
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e)
    unet.eval()
    text_encoder.eval()
    return stats


# ---------------------------------------------------------------------------------------
# The whole build
# ---------------------------------------------------------------------------------------


def _asset_bytes(out_dir: Path) -> int:
    return sum(f.stat().st_size for f in out_dir.rglob("*") if f.is_file())


def build_world_teacher(
    out_dir: str | Path,
    vae_steps: int = BuildConfig.vae_steps,
    unet_steps: int = BuildConfig.unet_steps,
    batch_size: int = BuildConfig.batch_size,
    device: str = "cpu",
    seed: int = 0,
    resume: bool = False,
    model_config: WorldTeacherConfig | None = None,
    evaluate_videos: int = 0,
    command: str | None = None,
    note: str | None = None,
    init_from: str | Path | None = None,
    **overrides,
) -> Path:
    """Train the world teacher and save it to ``out_dir`` as a stock diffusers pipeline.

    Args:
        out_dir: the pipeline directory to write (``model_index.json``, ``vae/``,
            ``text_encoder/``, ``tokenizer/``, ``unet/``, ``scheduler/``, ``manifest.json``).
            Checkpoints go to ``<out_dir>.checkpoints/``.
        vae_steps, unet_steps, batch_size, device, seed: see :class:`BuildConfig`.
        resume: continue from the checkpoints (a finished stage is not re-run).
        model_config: model sizes (default: the shipped teacher's).
        evaluate_videos: if > 0 and the world probes exist, sample this many videos at
            DDIM-50 and DDIM-4 and record the world metrics in the manifest.
        command: the command line to record in the manifest (default: ``sys.argv``).
        note: free text stored in the manifest (e.g. why this build was made).
        init_from: a saved world teacher to continue from: its VAE (and latent scale) is
            kept as is (no VAE stage), its UNet and text encoder are trained further
            with a fresh optimiser; its manifest goes into this one's ``history``.
        **overrides: any other :class:`BuildConfig` field.

    Returns:
        ``out_dir`` as a Path.
    """
    cfg = BuildConfig(
        vae_steps=vae_steps,
        unet_steps=unet_steps,
        batch_size=batch_size,
        device=str(device),
        seed=seed,
        **overrides,
    )
    dev = torch.device(cfg.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its kernels
    out_dir = Path(out_dir)
    ckpt_dir = out_dir.with_name(out_dir.name + ".checkpoints")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    history: list[dict] = []
    if init_from is not None:
        previous = read_manifest(init_from)
        history = [*previous.pop("history", []), previous]
        model_config = WorldTeacherConfig(
            **{
                k: tuple(v) if isinstance(v, list) else v
                for k, v in previous["model_config"].items()
            }
        )
        components = load_world_pipeline(str(init_from)).components
    else:
        model_config = model_config or WorldTeacherConfig()
        components = world_teacher_components(model_config, seed=cfg.seed)
    components["scheduler"] = type(components["scheduler"]).from_config(
        components["scheduler"].config, **scheduler_overrides(cfg)
    )
    for name in ("vae", "text_encoder", "unet"):
        components[name].to(dev)
    t_start = time.perf_counter()

    # 1. VAE; a VAE trained further invalidates a UNet checkpoint built on the old one.
    vae = components["vae"]
    if init_from is None:
        vae_stats, vae_changed = train_vae(vae, cfg, ckpt_dir, resume)
    else:
        vae_stats, vae_changed = {"skipped": f"kept the VAE of {init_from}"}, False
    if vae_changed and (ckpt_dir / "unet.pt").exists():
        (ckpt_dir / "unet.pt").unlink()
    vae.requires_grad_(False)

    # 2. Latent scale and the pool of encoded low-quality clips.
    t0 = time.perf_counter()
    latents, prompt_index = latent_pool(
        vae, cfg.pool_size, cfg.seed + 2, dev, autocast=_autocast(cfg, dev)
    )
    if init_from is None:
        scaling_factor = float(1.0 / latents.std())
        vae.register_to_config(scaling_factor=scaling_factor)
    else:
        scaling_factor = float(vae.config.scaling_factor)
    latents = latents * scaling_factor
    _sync(dev)
    pool_s = time.perf_counter() - t0
    print(
        f"[pool] {cfg.pool_size} clips rendered + encoded in {pool_s:.1f} s; "
        f"latent scaling factor {scaling_factor:.4f}",
        file=sys.stderr,
    )

    # 3. UNet + text encoder on low-quality latents only.
    unet_stats = train_unet(components, (latents, prompt_index), cfg, ckpt_dir, resume)
    del latents

    # 4. Save the stock pipeline and the manifest.
    for name in ("vae", "text_encoder", "unet"):
        components[name].to("cpu")
    pipe = world_pipeline(components)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    manifest = {
        "what": "the mcm world teacher: a stock diffusers TextToVideoSDPipeline",
        "command": command if command is not None else " ".join(["mcm", *sys.argv[1:]]),
        "seed": cfg.seed,
        "revision": _git_revision(),
        "device": _device_name(dev),
        "created_unix": int(time.time()),
        "versions": {"torch": torch.__version__, **_versions()},
        "build_config": asdict(cfg),
        "model_config": asdict(model_config),
        "parameters": {
            n: sum(p.numel() for p in components[n].parameters())
            for n in ("vae", "text_encoder", "unet")
        },
        "latent_scaling_factor": scaling_factor,
        "stages": {
            "vae": vae_stats,
            "pool": {"clips": cfg.pool_size, "wall_s": round(pool_s, 2)},
            "unet": unet_stats,
        },
        "total_wall_s": round(time.perf_counter() - t_start, 2),
        "sampling": {
            "scheduler": "DDIMScheduler",
            "num_inference_steps": TEACHER_STEPS,
            "guidance_scale": TEACHER_GUIDANCE,
            "num_frames": model_config.num_frames,
            "height": model_config.size,
            "width": model_config.size,
        },
        "metrics": None,
    }
    if note:
        manifest["note"] = note
    if history:
        manifest["init_from"] = str(init_from)
        manifest["history"] = history
    write_manifest(out_dir, manifest)
    if evaluate_videos > 0:
        manifest["metrics"] = teacher_metrics(
            out_dir, evaluate_videos, device=cfg.device, seed=cfg.seed
        )
        write_manifest(out_dir, manifest)
    manifest["asset_bytes"] = _asset_bytes(out_dir)
    write_manifest(out_dir, manifest)
    return out_dir


def _versions() -> dict:
    import transformers

    return {"diffusers": diffusers.__version__, "transformers": transformers.__version__}


def write_manifest(out_dir: str | Path, manifest: dict) -> None:
    path = Path(out_dir) / MANIFEST
    path.write_text(json.dumps(manifest, indent=1, default=str) + "\n")


def read_manifest(out_dir: str | Path) -> dict:
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"No {MANIFEST} in {out_dir}; is it a world teacher built by `mcm world build`?"
        )
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------------
# Sampling and metrics
# ---------------------------------------------------------------------------------------


@torch.no_grad()
def sample_teacher(
    pipe,
    prompts: list[str],
    num_inference_steps: int = TEACHER_STEPS,
    guidance_scale: float = TEACHER_GUIDANCE,
    seed: int = 0,
    batch_size: int = 128,
    num_frames: int = WorldTeacherConfig.num_frames,
) -> torch.Tensor:
    """Videos [B, 3, F, H, W] in [-1, 1] from the stock pipeline (DDIM, CFG)."""
    g = torch.Generator(pipe.device).manual_seed(seed)
    out = []
    for i in range(0, len(prompts), batch_size):
        frames = pipe(
            prompts[i : i + batch_size],
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            num_frames=num_frames,
            generator=g,
            output_type="pt",
        ).frames  # [B, F, 3, H, W] in [0, 1]
        out.append(frames.permute(0, 2, 1, 3, 4) * 2 - 1)
    return torch.cat(out).float().cpu()


def teacher_metrics(
    teacher_dir: str | Path,
    num_videos: int = 120,
    device: str = "cpu",
    seed: int = 0,
    steps: tuple[int, ...] = (TEACHER_STEPS, 4),
    guidance_scale: float = TEACHER_GUIDANCE,
    probes_dir: str | Path | None = None,
) -> dict:
    """World metrics of the teacher's samples at each DDIM step count (probes from
    ``probes_dir``, default the shipped ones), or {"skipped": reason} without probes."""
    try:
        probes = load_probes() if probes_dir is None else load_probes(probes_dir)
    except (ImportError, FileNotFoundError, OSError) as e:
        return {"skipped": f"world probes not available ({e}); run `mcm world build-probes` first"}

    pipe = load_world_pipeline(str(teacher_dir), device)
    prompts = world_prompts()
    prompts = [prompts[i % len(prompts)] for i in range(num_videos)]
    result = {"num_videos": num_videos, "guidance_scale": guidance_scale}
    for n in steps:
        t0 = time.perf_counter()
        videos = sample_teacher(pipe, prompts, n, guidance_scale, seed)
        wall = time.perf_counter() - t0
        m = world_metrics(videos, prompts, probes)
        m = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in m.items()}
        m["wall_s_per_video"] = round(wall / num_videos, 4)
        m["nfe"] = 2 * n
        result[f"ddim_{n}"] = m
    return result
