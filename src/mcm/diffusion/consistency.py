"""Consistency-model boundary scalings (Song et al. 2023; LCM's discrete form).

f(x, t) = c_skip(t) x + c_out(t) x0_pred(x, t), with s the timestep scaling:

    c_skip(t) = sigma_data^2 / ((s t)^2 + sigma_data^2)
    c_out(t)  = s t / sqrt((s t)^2 + sigma_data^2)

so c_skip(0) = 1 and c_out(0) = 0: f is the identity at t = 0 (the boundary condition).
Reference MCM uses s = 4; diffusers' LCMScheduler defaults to s = 10.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mcm.diffusion.schedules import append_dims


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
