"""Classifier-free guidance in the two forms used by the method.

LCM form (what MCM distils with, w ~ U[5, 15]):   y = y_c + w (y_c - y_u)
Imagen/diffusers form (guidance_scale g):         y = y_u + g (y_c - y_u)
They agree for g = 1 + w. Both apply to x0 and eps alike.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mcm.diffusion.schedules import append_dims


def lcm_guidance(cond: Tensor, uncond: Tensor, w: Tensor | float) -> Tensor:
    """y_c + w (y_c - y_u); cond, uncond [B, ...], w scalar or [B]."""
    w = torch.as_tensor(w, dtype=cond.dtype, device=cond.device)
    return cond + append_dims(w, cond.ndim) * (cond - uncond)


def cfg_guidance(cond: Tensor, uncond: Tensor, guidance_scale: Tensor | float) -> Tensor:
    """y_u + g (y_c - y_u); cond, uncond [B, ...], g scalar or [B]."""
    g = torch.as_tensor(guidance_scale, dtype=cond.dtype, device=cond.device)
    return uncond + append_dims(g, cond.ndim) * (cond - uncond)


def guidance_scale_embedding(w: Tensor, dim: int = 256, scale: float = 1000.0) -> Tensor:
    """Sinusoidal embedding of guidance scales (the full-model recipe's timestep_cond).

    e = [sin(scale w f_j), cos(scale w f_j)], f_j = exp(-ln(10000) j / (h - 1)) for
    j = 0..h-1, h = dim // 2: the sines first, then the cosines. Equals diffusers'
    LatentConsistencyModelPipeline.get_guidance_scale_embedding, which that pipeline
    calls with the LCM-form w = guidance_scale - 1.

    Args:
        w: [B] (LCM-form scales). dim: embedding size, >= 4. scale: multiplies w.
    Returns:
        [B, dim] float32 (the last column zero when dim is odd).
    Raises:
        ValueError: w not 1-D, or dim < 4.
    """
    if w.ndim != 1:
        raise ValueError(f"w must have shape [B]; got shape {tuple(w.shape)}.")
    if dim < 4:
        raise ValueError(f"dim must be at least 4; got {dim}.")
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) / (half - 1) * torch.arange(half, dtype=torch.float32))
    args = (w.float() * scale)[:, None] * freqs[None, :].to(w.device)
    emb = torch.cat([args.sin(), args.cos()], dim=1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb
