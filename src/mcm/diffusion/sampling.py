"""Multistep consistency sampling (LCM), guided DDIM sampling for the teacher, and the
deterministic flow-matching (Euler) sampler both use on a flow schedule.

Samplers take a denoiser callable and the noise; k-diffusion style. They do not switch
off gradients: wrap calls in torch.no_grad() where wanted.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from mcm.diffusion.consistency import consistency_output, consistency_scalings
from mcm.diffusion.parametrization import x0_to_eps
from mcm.diffusion.schedules import NoiseSchedule, add_noise
from mcm.diffusion.solvers import ddim_previous_timestep, ddim_step

# x_t [B, ...], t [B] (long) -> predicted x0 [B, ...]
X0Denoiser = Callable[[Tensor, Tensor], Tensor]
# x_t [B, ...], t [B] (long) -> (x0, eps), each [B, ...]
X0EpsDenoiser = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def consistency_timesteps(
    num_inference_steps: int,
    num_train_timesteps: int = 1000,
    original_inference_steps: int = 50,
    strength: float = 1.0,
) -> Tensor:
    """Descending timesteps [n] for n-step consistency sampling on the original grid.

    The grid is k (i + 1) - 1 for i = 0..int(N * strength) - 1 (k = T // N, N =
    original_inference_steps), reversed; the n timesteps are taken at indices
    floor(linspace(0, len, n, endpoint=False)). For T=1000, N=50: 1 step [999],
    2 [999, 499], 4 [999, 759, 499, 259]. Equals diffusers'
    ``LCMScheduler.set_timesteps(n, original_inference_steps=N, strength=strength)``.

    Raises:
        ValueError: original_inference_steps outside 1..T, a strength that leaves no
            grid point, or num_inference_steps outside 1..len(grid).
    """
    if not 1 <= original_inference_steps <= num_train_timesteps:
        raise ValueError(
            f"original_inference_steps must be in 1..{num_train_timesteps} "
            f"(num_train_timesteps); got {original_inference_steps}."
        )
    k = num_train_timesteps // original_inference_steps
    grid = (torch.arange(1, int(original_inference_steps * strength) + 1) * k - 1).flip(0)
    if len(grid) == 0:
        raise ValueError(
            f"strength must leave at least one grid point: need original_inference_steps * "
            f"strength >= 1; got {original_inference_steps} * {strength}."
        )
    if not 1 <= num_inference_steps <= len(grid):
        raise ValueError(
            f"num_inference_steps must be in 1..{len(grid)} (the original grid's length); "
            f"got {num_inference_steps}."
        )
    idx = torch.floor(
        torch.arange(num_inference_steps, dtype=torch.float64) * (len(grid) / num_inference_steps)
    ).long()
    return grid[idx]


def sample_consistency(
    denoiser: X0Denoiser,
    noise: Tensor,
    schedule: NoiseSchedule,
    timesteps: Tensor,
    sigma_data: float = 0.5,
    timestep_scaling: float = 10.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Multistep consistency sampling (Song et al. 2023, Algorithm 1; LCM).

    For each t_i: denoised = c_skip(t_i) x + c_out(t_i) x0(x, t_i); unless last, re-noise
    x = alpha(t_{i+1}) denoised + sigma(t_{i+1}) z with z = randn(x.shape, generator).
    Same arithmetic and noise draws as a loop of diffusers' LCMScheduler.step (with
    clip_sample and thresholding off) over the same timesteps, so with the same
    generator and the same x0 predictions the result is bit for bit the same.

    Args:
        denoiser: (x_t [B, ...], t [B] long) -> predicted x0 [B, ...].
        noise: x_T [B, ...]. schedule: gives alpha, sigma for the re-noising.
        timesteps: descending [n], e.g. from :func:`consistency_timesteps`.
        sigma_data, timestep_scaling: see :func:`consistency_scalings`.
        generator: source of the re-noising draws (n - 1 of them).
    Returns:
        the sample [B, ...] (the last step's denoised output).
    """
    x = noise
    B = noise.shape[0]
    for i, t in enumerate(timesteps.tolist()):
        tb = torch.full((B,), t, dtype=torch.long, device=noise.device)
        c_skip, c_out = consistency_scalings(tb, sigma_data, timestep_scaling)
        denoised = consistency_output(x, denoiser(x, tb), c_skip.to(x.device), c_out.to(x.device))
        if i == len(timesteps) - 1:
            return denoised
        # Drawn on the generator's device, then moved (as diffusers' randn_tensor does).
        gen_device = generator.device if generator is not None else x.device
        z = torch.randn(x.shape, generator=generator, device=gen_device, dtype=x.dtype).to(x.device)
        x = add_noise(schedule, denoised, z, torch.full_like(tb, int(timesteps[i + 1])))
    return x


def sample_consistency_ode(
    consistency_fn: X0Denoiser,
    noise: Tensor,
    schedule: NoiseSchedule,
    timesteps: Tensor,
    first: Tensor | None = None,
) -> Tensor:
    """Deterministic multistep consistency sampling: as :func:`sample_consistency`, but each
    step moves to the next timestep along the noise its own output implies (a DDIM step
    with eps = (x - alpha(t) y) / sigma(t); on a flow schedule the Euler step) instead of a
    fresh draw, so the sample is a function of x_T alone: the target a one-step student
    can regress to.

    Args:
        consistency_fn: (x_t [B, ...], t [B]) -> the consistency output y = f(x_t, t).
        noise: x_T [B, ...]. schedule: gives alpha and sigma.
        timesteps: descending [n] (any dtype the schedule takes).
        first: f(x_T, timesteps[0]) when the caller already has it (saves that call).
    Returns:
        the last step's output y [B, ...].
    """
    x, B = noise, noise.shape[0]
    for i, t in enumerate(timesteps):
        t = t.expand(B).to(noise.device)
        y = first if i == 0 and first is not None else consistency_fn(x, t)
        if i + 1 < len(timesteps):
            a = schedule.alpha(t).to(x.device, x.dtype)
            s = schedule.sigma(t).to(x.device, x.dtype)
            x = ddim_step(schedule, y, x0_to_eps(y, x, a, s), timesteps[i + 1].expand(B))
    return y


def sample_ddim(
    denoiser: X0EpsDenoiser,
    noise: Tensor,
    schedule: NoiseSchedule,
    timesteps: Tensor,
    num_train_timesteps: int | None = None,
) -> Tensor:
    """Deterministic DDIM sampling (eta = 0) over descending ``timesteps``.

    Each step goes from t to t - T // n with n = len(timesteps) (diffusers'
    DDIMScheduler rule, whatever the spacing), a negative target meaning the clean end
    (timestep -1, alpha_bar = final_alpha_cumprod). With "linspace" spacing, "leading"
    (steps_offset < T // n) or "trailing" with n dividing T, the last step lands on the
    clean end; otherwise it stops at t_last - T // n >= 0, as diffusers does. Guidance, if
    any, lives inside ``denoiser``. Equals a loop of DDIMScheduler.step (eta = 0,
    clip_sample off).

    Args:
        denoiser: (x_t [B, ...], t [B] long) -> (x0, eps), each [B, ...].
        noise: x_T [B, ...]. timesteps: descending [n], e.g. from
            :func:`~mcm.diffusion.solvers.ddim_timesteps`.
        num_train_timesteps: T; defaults to ``schedule.num_train_timesteps``.
    Returns:
        the sample [B, ...].
    """
    T = num_train_timesteps or schedule.num_train_timesteps
    n = len(timesteps)
    x = noise
    B = noise.shape[0]
    for t in timesteps.tolist():
        tb = torch.full((B,), t, dtype=torch.long, device=noise.device)
        x0, eps = denoiser(x, tb)
        x = ddim_step(schedule, x0, eps, ddim_previous_timestep(tb, n, T))
    return x


def sample_flow(
    denoiser: X0EpsDenoiser, noise: Tensor, schedule: NoiseSchedule, timesteps: Tensor
) -> Tensor:
    """Deterministic sampling over a flow-matching grid: x <- alpha(t') x0 + sigma(t') eps
    from each timestep t to the next t', i.e. the Euler step x + (sigma' - sigma) v.

    For a consistency student this is multistep consistency sampling that re-noises with
    its own eps estimate instead of fresh noise (so it needs no generator, as stock
    pipelines that never pass one to ``scheduler.step``); it equals diffusers'
    UniPCMultistepScheduler with ``solver_order=1`` and the corrector disabled.

    Args:
        denoiser: (x_t [B, ...], t [B]) -> (x0, eps); guidance, if any, lives inside.
        noise: x at timesteps[0] [B, ...]; timesteps: descending [n + 1] ending at 0, e.g.
            :func:`~mcm.diffusion.solvers.flow_sigmas`.
    Returns:
        the sample [B, ...].
    """
    x = noise
    B = noise.shape[0]
    for t, t_next in zip(timesteps[:-1].tolist(), timesteps[1:].tolist(), strict=True):
        x0, eps = denoiser(x, torch.full((B,), t, dtype=timesteps.dtype, device=noise.device))
        x = ddim_step(schedule, x0, eps, torch.full((B,), t_next, dtype=timesteps.dtype))
    return x
