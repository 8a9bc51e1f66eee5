"""The DDIM solver: timestep grids and the deterministic (eta = 0) step.

The same step serves distillation targets (a teacher step from t_{n+k} to t_n) and
inference; gradient mode is the caller's choice.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mcm.diffusion.schedules import NoiseSchedule, append_dims

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
