"""The world teacher's two training stages, as recipes of the one trainer.

1. :class:`VAERecipe`: frames of the low-quality videos, clean high-quality images and
   style images (so the VAE can also represent the sharp frames the student will learn
   to make); loss = MSE + ``kl_weight`` * KL.
2. :class:`UNetRecipe`: the UNet3D and the text encoder, jointly, on VAE latents of
   **low-quality videos only**: epsilon- or v-prediction MSE over the DDPM forward process
   of the scheduler's betas (``top_noise_fraction`` of each batch at the last timestep),
   ``prompt_dropout`` of the prompts replaced by "" (for classifier-free guidance), and a
   hinge that keeps prompts differing only in the direction word apart. The clips come
   from a pool rendered and encoded once (fresh noise and timesteps every step); the saved
   weights are an EMA of the trained ones.

:func:`mcm.world.teacher.build_world_teacher` runs both and saves the pipeline.
"""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from mcm.diffusion.parametrization import from_x0_eps
from mcm.diffusion.schedules import VPSchedule, add_noise
from mcm.diffusion.solvers import training_timesteps
from mcm.training import checkpoint as ckpt
from mcm.training.config import TrainLoopConfig
from mcm.training.ema import EMA
from mcm.training.optim import Optimization, make_optimizer, make_scheduler
from mcm.training.trainer import Trainer
from mcm.world.train_config import BuildConfig
from mcm.world.train_data import lowq_video_batch, vae_frame_batch, world_prompts


def loop_config(cfg: BuildConfig, steps: int, max_seconds: float | None) -> TrainLoopConfig:
    """The trainer's settings for one stage of the build."""
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and cfg.device.startswith("cuda"))
    return TrainLoopConfig(
        seed=cfg.seed,
        max_steps=steps,
        warmup_steps=cfg.warmup_steps,
        lr_schedule="constant",
        max_grad_norm=cfg.grad_clip,
        mixed_precision="bf16" if bf16 else "no",
        checkpoint_every=cfg.checkpoint_every,
        keep_checkpoints=1,
        log_every=25,
        tracker="none",
        max_seconds=max_seconds,
        progress=cfg.progress,
        export=False,
    )


class _StageRecipe(Trainer):
    """What both stages share: the build's device and checkpoints, a device generator."""

    def __init__(self, components: dict, cfg: BuildConfig, steps, max_seconds, ckpt_dir, resume):
        out = Path(ckpt_dir) / self.name
        resume = "latest" if resume and ckpt.list_checkpoints(out) else None
        super().__init__(loop_config(cfg, steps, max_seconds), out, resume, config=cfg)
        self.components, self.cfg = components, cfg
        self.device = torch.device(cfg.device)

    def _setup_optimizer(self, params: list, lr: float, weight_decay: float) -> None:
        optim = make_optimizer(params, lr, weight_decay=weight_decay)
        loop = self.loop
        schedule = make_scheduler(optim, loop.lr_schedule, loop.warmup_steps, loop.max_steps)
        self.optimizers["main"] = Optimization(optim, schedule, params, loop.max_grad_norm)

    def run(self) -> dict:
        """Train to the stage's steps; the stats the manifest records."""
        self.setup()
        already = self.step
        self.train()
        stats = dict(self.stats)
        stats["samples_per_s"] = round(stats["steps_per_s"] * self.batch_size, 1)
        stats["trained"] = self.step > already
        print(
            f"[{self.name}] {stats['steps_run']} steps in {stats['wall_s']:.1f} s: "
            f"{stats['steps_per_s']:.2f} steps/s, {stats['samples_per_s']:.0f} samples/s",
            file=sys.stderr,
        )
        return stats


class VAERecipe(_StageRecipe):
    """Stage 1 (see the module docstring)."""

    name = "vae"

    def setup(self) -> None:
        cfg = self.cfg
        self.make_accelerator(cpu=self.device.type == "cpu")
        self.generator = torch.Generator(self.device).manual_seed(cfg.seed)
        self.vae = self.components["vae"].train()
        self.batch_size = cfg.vae_batch_size
        self._setup_optimizer(list(self.vae.parameters()), cfg.vae_lr, weight_decay=0.0)
        super().setup()

    def next_batch(self) -> torch.Tensor:
        return vae_frame_batch(self.cfg.vae_batch_size, self.generator)

    def _loss_step(self, frames: torch.Tensor) -> dict | None:
        with self.accelerator.autocast():
            loss = vae_loss(self.vae, frames, self.cfg.kl_weight, self.generator)
        return {"loss": loss.detach()} if self.backward(loss) else None

    def _checkpoint_weights(self) -> dict:
        return {"vae": self.vae.state_dict()}

    def _load_weights(self, path: Path) -> None:
        self.vae.load_state_dict(ckpt.load_weights(path / "vae.safetensors"))


class LatentStage(_StageRecipe):
    """What the denoiser stages of both world teachers share: a pool of encoded clips and
    their prompts, batches drawn from it with prompt dropout, and an EMA of the trained
    weights that :meth:`run` leaves in the models."""

    def __init__(self, components, pool: tuple, cfg, steps, max_seconds, ckpt_dir, resume):
        super().__init__(components, cfg, steps, max_seconds, ckpt_dir, resume)
        self.latents, self.prompt_index = pool  # [n, C, F, h, w], [n]

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(latents [B, C, F, h, w], prompt tokens [B, L] with dropout, prompt index [B])."""
        cfg, g, device = self.cfg, self.generator, self.device
        idx = torch.randint(self.latents.shape[0], (cfg.batch_size,), generator=g, device=device)
        drop = torch.rand(cfg.batch_size, generator=g, device=device) < cfg.prompt_dropout
        empty = self.tokens.shape[0] - 1
        prompt = torch.where(drop, torch.full_like(idx, empty), self.prompt_index[idx])
        return self.latents[idx], self.tokens[prompt], self.prompt_index[idx]

    def _setup_training(self, models: tuple[torch.nn.Module, ...]) -> None:
        """AdamW and the EMA over ``models``' weights, the models in train mode."""
        params = [p for m in models for p in m.parameters()]
        self._setup_optimizer(params, self.cfg.lr, weight_decay=0.01)
        self.emas["ema"] = EMA(params, self.cfg.ema_decay, warmup=True)
        self.trained_models = models
        for m in models:
            m.train()

    def _direction_term(self, prompt_index: torch.Tensor) -> torch.Tensor | float:
        """0.1 x the direction hinge (0 when ``direction_margin`` is 0)."""
        if self.cfg.direction_margin <= 0:
            return 0.0
        margin = self.cfg.direction_margin
        hinge = direction_hinge(
            self.text_encoder, self.tokens, prompt_index, margin, self.generator
        )
        return 0.1 * hinge

    def run(self) -> dict:
        stats = super().run()
        self.emas["ema"].copy_to()
        for m in self.trained_models:
            m.eval()
        return stats


class UNetRecipe(LatentStage):
    """Stage 2 (see the module docstring). Leaves the EMA weights in the models."""

    name = "unet"

    def setup(self) -> None:
        cfg, device = self.cfg, self.device
        self.make_accelerator(cpu=device.type == "cpu")
        self.unet, self.text_encoder = self.components["unet"], self.components["text_encoder"]
        schedule = VPSchedule.from_config(self.components["scheduler"].config)
        self.schedule = replace(schedule, alphas_cumprod=schedule.alphas_cumprod.to(device))
        self.tokens = prompt_tokens(self.components["tokenizer"], device)
        self.attention, self.attention_timing = choose_attention(
            self.components,
            cfg,
            self.tokens,
            self.latents.shape[1:],
            bf16=self.loop.mixed_precision == "bf16",
        )
        self.generator = torch.Generator(device).manual_seed(cfg.seed + 1)
        self.batch_size = cfg.batch_size
        self._setup_training((self.unet, self.text_encoder))
        # UNet3D's temporal convolutions hard-code dropout 0.1, drawn from the global RNG. With
        # fresh data every step it is not needed, and without it every draw is from `generator`.
        for m in (*self.unet.modules(), *self.text_encoder.modules()):
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        super().setup()

    def _loss_step(self, batch) -> dict | None:
        z0, tokens, prompt_index = batch
        cfg = self.cfg
        with _attention_context(self.attention), self.accelerator.autocast():
            loss = diffusion_loss(
                self.unet,
                self.text_encoder,
                self.schedule,
                z0,
                tokens,
                self.generator,
                cfg.prediction_type,
                cfg.top_noise_fraction,
            )
            loss = loss + self._direction_term(prompt_index)
        return {"loss": loss.detach()} if self.backward(loss) else None

    def _checkpoint_weights(self) -> dict:
        return {"unet": self.unet.state_dict(), "text_encoder": self.text_encoder.state_dict()}

    def _load_weights(self, path: Path) -> None:
        self.unet.load_state_dict(ckpt.load_weights(path / "unet.safetensors"))
        self.text_encoder.load_state_dict(ckpt.load_weights(path / "text_encoder.safetensors"))

    def run(self) -> dict:
        stats = super().run()
        stats["attention"] = self.attention
        if self.attention_timing:
            stats["attention_seconds_per_step"] = self.attention_timing
        return stats


# ---------------------------------------------------------------------------------------
# Losses and the pieces of a batch
# ---------------------------------------------------------------------------------------


def vae_loss(
    vae, frames: torch.Tensor, kl_weight: float, generator: torch.Generator, decode=None
) -> torch.Tensor:
    """MSE of the reconstruction of frames [N, 3, H, W] (or clips [N, 3, F, H, W]) +
    kl_weight * KL (summed per latent). ``decode(vae, z)``: how latents become frames
    (default ``vae.decode(z).sample``)."""
    posterior = vae.encode(frames).latent_dist
    z = posterior.sample(generator=generator)
    recon = vae.decode(z).sample if decode is None else decode(vae, z)
    return F.mse_loss(recon.float(), frames) + kl_weight * posterior.kl().float().mean()


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
# Attention kernels
# ---------------------------------------------------------------------------------------


def _attention_context(choice: str):
    return sdpa_kernel(SDPBackend.MATH) if choice == "math" else nullcontext()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def choose_attention(
    components: dict,
    cfg: BuildConfig,
    tokens: torch.Tensor,
    latent_shape,
    bf16: bool = True,
    steps: int = 5,
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
                autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16)
                with _attention_context(choice), autocast:
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
