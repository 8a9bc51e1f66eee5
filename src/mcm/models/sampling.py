"""Sample a video denoiser with the same arithmetic and noise draws as stock diffusers.

:func:`sample_student` runs multistep consistency sampling (``mcm.diffusion``) so that a
student sampled here equals the stock pipeline (``TextToVideoSDPipeline`` /
``AnimateDiffPipeline``) with ``LCMScheduler`` and the same generator: the initial noise
is drawn as the pipeline draws its latents, and the re-noising draws are made in the
layout the pipeline hands to ``scheduler.step`` (ModelScope: [B*F, C, H, W]).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mcm.diffusion import consistency_timesteps, sample_consistency
from mcm.models.denoiser import VideoDenoiser


def initial_noise(shape: tuple[int, ...], generator: torch.Generator | None, device=None) -> Tensor:
    """x_T [B, C, F, h, w] drawn as the stock pipelines' ``prepare_latents`` does."""
    return torch.randn(shape, generator=generator, device=device, dtype=torch.float32)


@torch.no_grad()
def sample_student(
    denoiser: VideoDenoiser,
    text_emb: Tensor,
    noise: Tensor,
    num_inference_steps: int = 4,
    generator: torch.Generator | None = None,
    timestep_scaling: float = 4.0,
    original_inference_steps: int = 50,
    sigma_data: float = 0.5,
    timestep_cond: Tensor | None = None,
) -> Tensor:
    """n-step consistency sample [B, C, F, h, w] of a (distilled) denoiser, no CFG.

    Args:
        denoiser: the student; text_emb: [B, L, D]; noise: x_T [B, C, F, h, w].
        num_inference_steps: n (timesteps as LCMScheduler on the original grid).
        generator: for the re-noising draws between steps (the draws after ``noise``).
        timestep_scaling: s in the boundary scalings (reference MCM: 4).
        original_inference_steps: N of the skipping-step grid (50).
        timestep_cond: optional [B, d] (e.g. a guidance-scale embedding).
    """
    B = noise.shape[0]
    timesteps = consistency_timesteps(
        num_inference_steps, denoiser.schedule.num_train_timesteps, original_inference_steps
    )

    def x0_of(x: Tensor, t: Tensor) -> Tensor:
        video = denoiser.from_scheduler_layout(x, B)
        x0, _ = denoiser.predict_x0_eps(video, t[:1].expand(B), text_emb, timestep_cond)
        return denoiser.to_scheduler_layout(x0)

    x = sample_consistency(
        x0_of,
        denoiser.to_scheduler_layout(noise),
        denoiser.schedule,
        timesteps,
        sigma_data=sigma_data,
        timestep_scaling=timestep_scaling,
        generator=generator,
    )
    return denoiser.from_scheduler_layout(x, B)
