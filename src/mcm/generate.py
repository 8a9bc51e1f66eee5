"""Sampling videos from a teacher (guided DDIM) or a distilled student (multistep LCM).

Both return pixels [B, 3, F, H, W] in [-1, 1]. The initial noise and the student's
re-noising draws come from one CPU generator seeded with ``seed``, in the same order as a
stock diffusers pipeline (``TextToVideoSDPipeline`` + ``LCMScheduler``), so the same seed
gives the same video here and there.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mcm.diffusion import cfg_guidance, ddim_timesteps, sample_ddim
from mcm.media import write_video

__all__ = ["latent_shape", "sample_student", "sample_teacher", "write_video"]


def latent_shape(
    bundle, batch_size: int, num_frames: int | None, height: int | None, width: int | None
):
    """[B, C, F, h, w] of the initial noise for the teacher in ``bundle``."""
    vae, unet = bundle.vae, bundle.denoiser.unet
    d = vae.downsample
    sample = unet.config.sample_size
    sample = sample[0] if isinstance(sample, list | tuple) else sample
    height, width = height or sample * d, width or sample * d
    if height % d or width % d:
        raise ValueError(
            f"height and width must be multiples of the VAE downsampling ({d}); got {height}x{width}."
        )
    frames = num_frames or getattr(bundle, "num_frames", None) or 16
    return (batch_size, unet.config.in_channels, frames, height // d, width // d)


def _check(prompts: list[str], steps: int, max_steps: int) -> None:
    if not prompts or any(not p.strip() for p in prompts):
        raise ValueError(
            "Empty prompt: give at least one non-empty prompt (--prompt TEXT or --prompt-file FILE)."
        )
    if not 1 <= steps <= max_steps:
        raise ValueError(f"--steps must be in 1..{max_steps}; got {steps}.")


def _noise(shape, seed: int, device) -> tuple[Tensor, torch.Generator]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator).to(device), generator


@torch.no_grad()
def sample_teacher(
    bundle,
    prompts: list[str],
    steps: int = 50,
    guidance_scale: float = 9.0,
    seed: int = 0,
    num_frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
) -> Tensor:
    """Guided DDIM sampling (eta = 0, Imagen-form CFG with scale g; 2 NFE per step when g > 1)."""
    T = bundle.denoiser.schedule.num_train_timesteps
    _check(prompts, steps, T)
    den, text = bundle.denoiser, bundle.text_encoder
    shape = latent_shape(bundle, len(prompts), num_frames, height, width)
    noise, _ = _noise(shape, seed, den.device)
    cond = text(prompts)
    uncond = text.empty(len(prompts))
    spacing = bundle.scheduler_config.get("timestep_spacing", "leading")
    offset = bundle.scheduler_config.get("steps_offset", 0)
    timesteps = ddim_timesteps(steps, T, spacing, offset)

    def denoiser(x, t):
        if guidance_scale <= 1.0:
            return den.predict_x0_eps(x, t, cond)
        x0, eps = den.predict_x0_eps(
            torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, uncond])
        )
        (x0_c, x0_u), (eps_c, eps_u) = x0.chunk(2), eps.chunk(2)
        return cfg_guidance(x0_c, x0_u, guidance_scale), cfg_guidance(eps_c, eps_u, guidance_scale)

    latents = sample_ddim(denoiser, noise, den.schedule, timesteps, T)
    return bundle.vae.decode(latents).clamp(-1, 1)


@torch.no_grad()
def sample_student(
    bundle,
    prompts: list[str],
    steps: int = 4,
    seed: int = 0,
    timestep_scaling: float = 4.0,
    original_inference_steps: int = 50,
    num_frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
) -> Tensor:
    """Multistep consistency sampling of the student (1 NFE per step, no CFG); the same
    draws as the stock pipeline with LCMScheduler (see mcm.models.sample_student)."""
    from mcm.models import sample_student as sample_denoiser

    _check(prompts, steps, original_inference_steps)
    den = bundle.denoiser
    shape = latent_shape(bundle, len(prompts), num_frames, height, width)
    noise, generator = _noise(shape, seed, den.device)
    latents = sample_denoiser(
        den,
        bundle.text_encoder(prompts),
        noise,
        num_inference_steps=steps,
        generator=generator,
        timestep_scaling=timestep_scaling,
        original_inference_steps=original_inference_steps,
    )
    return bundle.vae.decode(latents).clamp(-1, 1)
