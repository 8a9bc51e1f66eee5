"""The DDIM solver: timestep grids and the deterministic (eta = 0) step.

The same step serves distillation targets (a teacher step from t_{n+k} to t_n) and
inference; gradient mode is the caller's choice. On a flow-matching schedule the DDIM
step is the Euler step of the probability-flow ODE, and its grids are shifted sigma grids
(:func:`flow_sigmas`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mcm.diffusion.schedules import NoiseSchedule, append_dims, shift_sigmas

TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")


def skipping_step_grid(
    num_train_timesteps: int = 1000, num_ode_steps: int = 50
) -> tuple[Tensor, Tensor]:
    """The skipping-step DDIM grid used for consistency distillation.

    k = T // N; grid tau_i = k (i + 1) - 1 for i = 0..N-1 (19, 39, ..., 999 for T=1000,
    N=50) and each one's previous point max(tau_i - k, 0).

    Returns:
        timesteps [N] (ascending, long), previous [N] (long).
    """
    if not 1 <= num_ode_steps <= num_train_timesteps:
        raise ValueError(
            f"num_ode_steps must be in 1..num_train_timesteps ({num_train_timesteps}); got {num_ode_steps}."
        )
    k = num_train_timesteps // num_ode_steps
    timesteps = torch.arange(1, num_ode_steps + 1) * k - 1
    previous = (timesteps - k).clamp(min=0)
    return timesteps, previous


def ddim_timesteps(
    num_inference_steps: int,
    num_train_timesteps: int = 1000,
    timestep_spacing: str = "leading",
    steps_offset: int = 0,
) -> Tensor:
    """Descending sampling timesteps [n] as diffusers' DDIMScheduler.set_timesteps makes them.

    * leading: (arange(n) * (T // n))[::-1] + steps_offset
    * trailing: round(arange(T, 0, -T / n)) - 1
    * linspace: round(linspace(0, T - 1, n))[::-1]

    round() is round-half-to-even and the float64 arithmetic is numpy's, so the values
    are diffusers' exactly. One difference: for some n (61, 103, ... with T = 1000)
    numpy's arange yields an extra point in "trailing" and diffusers appends a bogus
    timestep -1; here the result always has n entries (diffusers' first n).

    Raises:
        ValueError: num_inference_steps outside 1..T, or an unknown timestep_spacing
            (the message lists TIMESTEP_SPACINGS).
    """
    if not 1 <= num_inference_steps <= num_train_timesteps:
        raise ValueError(
            f"num_inference_steps must be in 1..{num_train_timesteps}; got {num_inference_steps}."
        )
    n, T = num_inference_steps, num_train_timesteps
    i = torch.arange(n, dtype=torch.float64)
    if timestep_spacing == "leading":
        t = torch.arange(n).flip(0) * (T // n) + steps_offset
    elif timestep_spacing == "trailing":
        # numpy.arange(T, 0, -T / n) computes T + i * ((T - T / n) - T).
        t = torch.round(T + i * ((T - T / n) - T)).long() - 1
    elif timestep_spacing == "linspace":
        # numpy.linspace(0, T - 1, n) computes i * ((T - 1) / (n - 1)), last point exact.
        y = i * ((T - 1) / max(n - 1, 1))
        y[-1] = T - 1 if n > 1 else 0
        t = torch.round(y).long().flip(0)
    else:
        raise ValueError(
            f"Unknown timestep_spacing {timestep_spacing!r}; allowed: {', '.join(TIMESTEP_SPACINGS)}."
        )
    return t.long()


def ddim_previous_timestep(
    t: Tensor, num_inference_steps: int, num_train_timesteps: int = 1000
) -> Tensor:
    """DDIM's next point down the trajectory: t - T // n (negative -> the clean end, -1)."""
    return (t - num_train_timesteps // num_inference_steps).clamp(min=-1)


def ddim_step(schedule: NoiseSchedule, x0: Tensor, eps: Tensor, t_next: Tensor) -> Tensor:
    """Deterministic DDIM step (Song et al. 2021, eq. 12 with eta = 0).

    x_{t_next} = alpha(t_next) x0 + sigma(t_next) eps, with x0 and eps predicted at the
    current t. t_next = -1 gives the clean end (VP: alpha = sqrt(final_alpha_cumprod);
    flow: alpha = 1). On a flow schedule this is the Euler step x + (s' - s) v.

    Args:
        x0, eps: [B, ...]; t_next: [B].
    Returns:
        x_{t_next} [B, ...].
    """
    a = append_dims(schedule.alpha(t_next), x0.ndim).to(x0.device, x0.dtype)
    s = append_dims(schedule.sigma(t_next), x0.ndim).to(x0.device, x0.dtype)
    return a * x0 + s * eps


def flow_sigmas(num_steps: int, shift: float = 1.0, num_train_timesteps: int = 1000) -> Tensor:
    """The n-step flow-matching grid: descending float64 timesteps t = sigma T [n + 1],
    the last one 0 (the clean end).

    sigma_j = shift(u_j) for u = linspace(1, 1/T, n + 1) without its last point, the first
    (sigma = 1) lowered by 1e-6: exactly diffusers' ``UniPCMultistepScheduler(
    use_flow_sigmas=True, flow_shift=shift).set_timesteps(n)`` (its ``sigmas``; its
    ``timesteps`` are these t truncated to integers, which is what the network sees). With
    shift 5: n = 2 -> sigmas [1.0, .834, 0], n = 4 -> [1.0, .938, .834, .626, 0] (the grid
    of the common 4-step Wan LoRAs). The n-step grid is every (N / n)-th point of the
    N-step grid when n divides N, so a student trained on the N-step grid is sampled on
    points it was trained at.

    Raises:
        ValueError: num_steps < 1 or shift <= 0.
    """
    if num_steps < 1 or not shift > 0:
        raise ValueError(f"Need num_steps >= 1 and shift > 0; got {num_steps}, {shift}.")
    T = num_train_timesteps
    # numpy's linspace arithmetic (start + i * step, last point exact), so that the grid
    # equals diffusers' to the last bit
    u = 1.0 + torch.arange(num_steps + 1, dtype=torch.float64) * ((1.0 / T - 1.0) / num_steps)
    sigmas = shift_sigmas(u[:-1], shift)
    if abs(float(sigmas[0]) - 1) < 1e-6:
        sigmas[0] -= 1e-6  # as diffusers does (log(alpha) stays finite in its solvers)
    return torch.cat([sigmas * T, sigmas.new_zeros(1)])


def flow_grid(
    num_ode_steps: int = 48, shift: float = 1.0, num_train_timesteps: int = 1000
) -> tuple[Tensor, Tensor]:
    """The flow-matching counterpart of :func:`skipping_step_grid`: ascending float64
    timesteps [N] of the N-step grid (:func:`flow_sigmas`) and each one's previous point
    (the next one down; 0 = the clean end for the lowest)."""
    t = flow_sigmas(num_ode_steps, shift, num_train_timesteps).flip(0)  # ascending, 0 first
    return t[1:], t[:-1]


def training_timesteps(
    n: int, T: int, generator, device, top_fraction: float = 0.0, t_min: int = 0
) -> torch.Tensor:
    """Timesteps (or grid indices) [n] long: uniform in t_min..T-1, each set to T-1 with
    probability ``top_fraction`` (the top: pure noise). P(T-1) = top_fraction + (1 -
    top_fraction) / (T - t_min).

    With ``top_fraction`` 0 the draws are exactly those of a plain uniform draw.
    """
    t = torch.randint(t_min, T, (n,), generator=generator, device=device)
    if top_fraction > 0:
        top = torch.rand(n, generator=generator, device=device) < top_fraction
        t = torch.where(top, torch.full_like(t, T - 1), t)
    return t
