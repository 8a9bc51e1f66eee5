"""Sampling videos from a teacher (guided DDIM) or a distilled student (multistep
consistency), with the same arithmetic and noise draws as stock diffusers. On a
flow-matching teacher (Wan) both samplers step deterministically over the shifted sigma
grid (:func:`~mcm.diffusion.sample_flow`; the student as stock ``WanPipeline`` samples it
with the exported UniPC scheduler).

Both samplers take a loaded bundle (:func:`mcm.models.load_teacher`) and prompts and return
pixels ``[B, 3, F, H, W]`` in ``[-1, 1]`` (or the latents, ``output_type="latent"``). The
initial noise and the student's re-noising draws come from one CPU generator seeded with
``seed``, in the order a stock pipeline (``TextToVideoSDPipeline`` / ``AnimateDiffPipeline``
with ``LCMScheduler``) draws them: the initial noise as the pipeline draws its latents, the
re-noising draws in the layout the pipeline hands to ``scheduler.step`` (ModelScope:
``[B*F, C, H, W]``). So the same seed gives the same video here and there.
"""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import tqdm

from mcm.diffusion import (
    cfg_guidance,
    consistency_timesteps,
    ddim_timesteps,
    flow_sigmas,
    sample_consistency,
    sample_ddim,
    sample_flow,
)
from mcm.models.denoiser import VideoDenoiser

OUTPUT_TYPES = ("pt", "latent")


def latent_shape(
    bundle, batch_size: int, num_frames: int | None, height: int | None, width: int | None
):
    """[B, C, F', h, w] of the initial noise for the teacher in ``bundle`` (F' = F, or
    Wan's 1 + (F - 1) / 4 latent frames; Wan's defaults are its 480x832x81)."""
    vae, unet = bundle.vae, bundle.denoiser.unet
    d = vae.downsample
    if bundle.family == "wan":
        height, width, num_frames = height or 480, width or 832, num_frames or 81
    else:
        sample = unet.config.sample_size
        sample = sample[0] if isinstance(sample, list | tuple) else sample
        height, width = height or sample * d, width or sample * d
    if height % d or width % d:
        raise ValueError(
            f"height and width must be multiples of the VAE downsampling ({d}); got {height}x{width}."
        )
    frames = num_frames or getattr(bundle, "num_frames", None) or 16
    if hasattr(vae, "latent_frames"):
        frames = vae.latent_frames(frames)
    return (batch_size, unet.config.in_channels, frames, height // d, width // d)


def _check(prompts: list[str], steps: int, max_steps: int, output_type: str) -> None:
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}; got {output_type!r}.")
    if not prompts or any(not p.strip() for p in prompts):
        raise ValueError(
            "Empty prompt: give at least one non-empty prompt (--prompt TEXT or --prompt-file FILE)."
        )
    if not 1 <= steps <= max_steps:
        raise ValueError(f"--steps must be in 1..{max_steps}; got {steps}.")


def _noise(bundle, batch_size: int, seed: int, *size) -> tuple[Tensor, torch.Generator]:
    """x_T [B, C, F, h, w] for ``size`` = (num_frames, height, width), drawn on the CPU as
    the stock pipelines' ``prepare_latents`` does with a CPU generator, and the generator
    for the draws that follow."""
    shape = latent_shape(bundle, batch_size, *size)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(shape, generator=generator, dtype=torch.float32)
    return noise.to(bundle.denoiser.device), generator


def _output(bundle, latents: Tensor, output_type: str, decoder=None) -> Tensor:
    if output_type == "latent":
        return latents
    return (decoder or bundle.vae).decode(latents).clamp(-1, 1)


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
    output_type: str = "pt",
    progress: bool = False,
    decoder=None,
) -> Tensor:
    """Guided DDIM sampling (eta = 0, Imagen-form CFG with scale g; 2 NFE per step when
    g > 1); on a flow-matching teacher the Euler steps of :func:`flow_sigmas`'s grid.

    ``progress``: draw a bar of the sampling steps on stderr (tqdm). ``decoder``: decodes the
    latents instead of the bundle's VAE (a :class:`~mcm.models.PreviewDecoder`)."""
    den, text = bundle.denoiser, bundle.text_encoder
    T = den.schedule.num_train_timesteps
    _check(prompts, steps, T, output_type)
    noise, _ = _noise(bundle, len(prompts), seed, num_frames, height, width)
    cond = text(prompts)
    uncond = text.empty(len(prompts))

    def denoiser(x, t):
        if guidance_scale <= 1.0:
            return den.predict_x0_eps(x, t, cond)
        x0, eps = den.predict_x0_eps(
            torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, uncond])
        )
        (x0_c, x0_u), (eps_c, eps_u) = x0.chunk(2), eps.chunk(2)
        return cfg_guidance(x0_c, x0_u, guidance_scale), cfg_guidance(eps_c, eps_u, guidance_scale)

    with tqdm(total=steps, desc="teacher", unit="step", disable=not progress) as bar:
        denoiser = _counting_steps(denoiser, bar)
        if den.schedule.kind == "flow":
            timesteps = flow_sigmas(steps, den.schedule.shift, T)
            latents = sample_flow(denoiser, noise, den.schedule, timesteps)
        else:
            spacing = bundle.scheduler_config.get("timestep_spacing", "leading")
            offset = bundle.scheduler_config.get("steps_offset", 0)
            timesteps = ddim_timesteps(steps, T, spacing, offset)
            latents = sample_ddim(denoiser, noise, den.schedule, timesteps, T)
    return _output(bundle, latents, output_type, decoder)


def _counting_steps(denoiser, bar):
    """``denoiser`` that advances ``bar`` by one after each call (one call per sampling step:
    the guided batch is one call)."""

    def counted(x: Tensor, t: Tensor):
        out = denoiser(x, t)
        bar.update(1)
        return out

    return counted


@torch.no_grad()
def student_latents(
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

    On a flow-matching schedule the steps are deterministic Euler steps over
    ``flow_sigmas(n, shift)`` (stock: UniPC, order 1, no corrector) and ``generator``,
    ``timestep_scaling``, ``sigma_data`` are unused.

    Args:
        denoiser: the student; text_emb: [B, L, D]; noise: x_T [B, C, F, h, w].
        num_inference_steps: n (timesteps as LCMScheduler on the original grid).
        generator: for the re-noising draws between steps (the draws after ``noise``).
        timestep_scaling: s in the boundary scalings (reference MCM: 4).
        original_inference_steps: N of the skipping-step grid (50).
        timestep_cond: optional [B, d] (e.g. a guidance-scale embedding).
    """
    B = noise.shape[0]
    schedule = denoiser.schedule
    if schedule.kind == "flow":
        timesteps = flow_sigmas(num_inference_steps, schedule.shift, schedule.num_train_timesteps)
        return sample_flow(
            lambda x, t: denoiser.predict_x0_eps(x, t, text_emb, timestep_cond),
            noise,
            schedule,
            timesteps,
        )
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
    output_type: str = "pt",
    decoder=None,
) -> Tensor:
    """Multistep consistency sampling of the student in ``bundle`` (1 NFE per step, no CFG);
    the same draws as the stock pipeline with ``LCMScheduler``. ``decoder``: as in
    :func:`sample_teacher`."""
    _check(prompts, steps, original_inference_steps, output_type)
    noise, generator = _noise(bundle, len(prompts), seed, num_frames, height, width)
    latents = student_latents(
        bundle.denoiser,
        bundle.text_encoder(prompts),
        noise,
        num_inference_steps=steps,
        generator=generator,
        timestep_scaling=timestep_scaling,
        original_inference_steps=original_inference_steps,
    )
    return _output(bundle, latents, output_type, decoder)
