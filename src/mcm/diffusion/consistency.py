"""Consistency-model boundary scalings (Song et al. 2023; LCM's discrete form).

f(x, t) = c_skip(t) x + c_out(t) x0_pred(x, t), with s the timestep scaling:

    c_skip(t) = sigma_data^2 / ((s t)^2 + sigma_data^2)
    c_out(t)  = s t / sqrt((s t)^2 + sigma_data^2)

so c_skip(0) = 1 and c_out(0) = 0: f is the identity at t = 0 (the boundary condition).
Reference MCM uses s = 4; diffusers' LCMScheduler defaults to s = 10.

On a flow-matching schedule the prediction itself is the consistency function:
f(x, t) = x - sigma(t) v(x, t) = x0_pred is the identity at sigma = 0 exactly, and it is
what a stock flow scheduler computes, so no scalings are applied
(:func:`consistency_function`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mcm.diffusion.schedules import NoiseSchedule, append_dims


def consistency_scalings(
    t: Tensor, sigma_data: float = 0.5, timestep_scaling: float = 10.0
) -> tuple[Tensor, Tensor]:
    """(c_skip, c_out), each [B], for timesteps t [B].

    c_skip = sigma_data^2 / ((s t)^2 + sigma_data^2), c_out = s t / sqrt((s t)^2 +
    sigma_data^2) with s = timestep_scaling; c_skip(0) = 1, c_out(0) = 0. Integer t gives
    float32 (bit for bit diffusers' LCMScheduler.get_scalings_for_boundary_condition_discrete
    on a tensor timestep); floating t keeps its dtype.
    """
    t = torch.as_tensor(t)
    st = (t if t.is_floating_point() else t.float()) * timestep_scaling
    denom = st**2 + sigma_data**2
    return sigma_data**2 / denom, st / denom.sqrt()


def consistency_output(x: Tensor, x0: Tensor, c_skip: Tensor, c_out: Tensor) -> Tensor:
    """f = c_skip x + c_out x0 for x, x0 [B, ...] and scalings [B]."""
    return (
        append_dims(c_skip, x.ndim).to(x.device, x.dtype) * x
        + append_dims(c_out, x.ndim).to(x.device, x.dtype) * x0
    )


def consistency_function(
    x: Tensor,
    x0: Tensor,
    t: Tensor,
    schedule: NoiseSchedule,
    sigma_data: float = 0.5,
    timestep_scaling: float = 10.0,
) -> Tensor:
    """f(x, t) [B, ...] from a network's x0 prediction at (x, t [B]): the boundary-scaled
    output on a VP schedule, x0 itself on a flow-matching one (exact at sigma = 0)."""
    if schedule.kind == "flow":
        return x0
    c_skip, c_out = consistency_scalings(t, sigma_data, timestep_scaling)
    return consistency_output(x, x0, c_skip.to(x.device), c_out.to(x.device))
