"""Fixed motion representations m(x) on latents [B, C, F, H, W] (no parameters).

The disentangled motion loss compares m(student output) with m(target); these modules
say what "motion" means:

* raw: identity (plain LCM).
* diff: temporal difference x[:, :, 1:] - x[:, :, :-1].
* lowfreq / highfreq: Butterworth low-pass (and its complement) over a 3-D FFT of
  (F, H, W): mask = 1 / (1 + (d / d0)^(2n)), d the normalised frequency radius.
* corr_local / corr_global: per consecutive frame pair, dot products of each position's
  channel vector with the next frame's vectors, / sqrt(C); a window of a radius around
  the position, or all positions.

On Wan latents (causal VAE, 4x in time) F is 1 + (frames - 1) / 4 and the latent frames
are not alike: frame 0 encodes video frame 0 alone (exactly as an image), each later one
four frames. raw, learnable and the Butterworth filters treat all latent frames alike (the
filters over a short time axis: 3 latent frames for 9 video frames, 21 for 81); diff and
corr_* compare consecutive latent frames, so their first pair mixes the one-frame and the
four-frame encodings and each later pair spans four video frames of motion.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _check_video(x: Tensor, min_frames: int = 1) -> None:
    if x.ndim != 5:
        raise ValueError(
            f"Motion representations take latents [B, C, F, H, W]; got shape {tuple(x.shape)}."
        )
    if x.shape[2] < min_frames:
        raise ValueError(
            f"This motion representation needs at least {min_frames} frames; got "
            f"{x.shape[2]}. Use 'raw' or a clip with more frames."
        )


def temporal_difference(x: Tensor) -> Tensor:
    """x[:, :, 1:] - x[:, :, :-1]: [B, C, F, H, W] -> [B, C, F-1, H, W]."""
    return x[:, :, 1:] - x[:, :, :-1]


def butterworth_mask(
    size: tuple[int, int, int], d0: float = 0.25, order: int = 4, device=None
) -> Tensor:
    """Butterworth low-pass mask [F, H, W] in unshifted FFT layout.

    Each axis' frequency is normalised so that Nyquist is 1 (2 * fftfreq, values in
    [-1, 1)); d = sqrt(f_F^2 + f_H^2 + f_W^2); mask = 1 / (1 + (d / d0)^(2 order)).
    """
    freqs = [2.0 * torch.fft.fftfreq(n, device=device) for n in size]
    fF, fH, fW = torch.meshgrid(*freqs, indexing="ij")
    d = (fF**2 + fH**2 + fW**2).sqrt()
    return 1.0 / (1.0 + (d / d0) ** (2 * order))


def low_frequency(x: Tensor, d0: float = 0.25, order: int = 4) -> Tensor:
    """Butterworth low-pass of x over (F, H, W): [B, C, F, H, W] -> same shape (real).

    Computed in float32 (FFTs in half precision are restricted to power-of-two sizes).
    """
    xf = x.float()
    mask = butterworth_mask(tuple(x.shape[2:]), d0, order, device=x.device)
    spectrum = torch.fft.fftn(xf, dim=(-3, -2, -1))
    return torch.fft.ifftn(spectrum * mask, dim=(-3, -2, -1)).real.to(x.dtype)


def high_frequency(x: Tensor, d0: float = 0.25, order: int = 4) -> Tensor:
    """Complement of :func:`low_frequency` (high-pass mask 1 - mask): same shape."""
    return x - low_frequency(x, d0, order)


def global_correlation(x: Tensor) -> Tensor:
    """Correlation of every position with every position of the next frame.

    corr[b, f, p, q] = <x[b, :, f, p], x[b, :, f+1, q]> / sqrt(C), p, q over H*W.
    [B, C, F, H, W] -> [B, F-1, H*W, H*W].
    """
    B, C, Fr, H, W = x.shape
    cur = x[:, :, :-1].reshape(B, C, Fr - 1, H * W)
    nxt = x[:, :, 1:].reshape(B, C, Fr - 1, H * W)
    return torch.einsum("bcfp,bcfq->bfpq", cur, nxt) / math.sqrt(C)


def local_correlation(x: Tensor, radius: int = 7) -> Tensor:
    """Correlation of each position with the next frame's positions within a window.

    corr[b, f, k, i, j] = <x[b, :, f, i, j], x[b, :, f+1, i+dy, j+dx]> / sqrt(C) for the
    k-th offset (dy, dx) in [-radius, radius]^2 (row-major, dy outer); positions outside
    the frame count as zero vectors. [B, C, F, H, W] -> [B, F-1, (2r+1)^2, H, W].
    """
    B, C, Fr, H, W = x.shape
    cur = x[:, :, :-1]
    nxt = F.pad(x[:, :, 1:], (radius, radius, radius, radius))
    size = 2 * radius + 1
    # One offset at a time: memory stays at one frame-pair product per offset.
    corr = [
        (cur * nxt[..., dy : dy + H, dx : dx + W]).sum(dim=1)
        for dy in range(size)
        for dx in range(size)
    ]
    return torch.stack(corr, dim=2) / math.sqrt(C)


class RawMotion(nn.Module):
    """m(x) = x: plain consistency distillation (LCM)."""

    def forward(self, x: Tensor) -> Tensor:
        """[B, C, F, H, W] -> [B, C, F, H, W]."""
        _check_video(x)
        return x


class TemporalDifference(nn.Module):
    """m(x) = x[:, :, 1:] - x[:, :, :-1]."""

    def forward(self, x: Tensor) -> Tensor:
        """[B, C, F, H, W] -> [B, C, F-1, H, W]."""
        _check_video(x, min_frames=2)
        return temporal_difference(x)


class FrequencyMotion(nn.Module):
    """Butterworth low- or high-pass over the 3-D spectrum of (F, H, W).

    Args:
        band: "low" or "high".
        d0 (float): cut-off normalised frequency. Default: 0.25.
        order (int): Butterworth order n. Default: 4.

    Raises:
        ValueError: unknown band, or d0 / order not positive.
    """

    def __init__(self, band: str, d0: float = 0.25, order: int = 4):
        super().__init__()
        if band not in ("low", "high"):
            raise ValueError(f"band must be 'low' or 'high'; got {band!r}.")
        if d0 <= 0 or order <= 0:
            raise ValueError(f"d0 and order must be positive; got d0={d0}, order={order}.")
        self.band, self.d0, self.order = band, d0, order

    def forward(self, x: Tensor) -> Tensor:
        """[B, C, F, H, W] -> [B, C, F, H, W]."""
        _check_video(x)
        fn = low_frequency if self.band == "low" else high_frequency
        return fn(x, self.d0, self.order)

    def extra_repr(self) -> str:
        return f"band={self.band}, d0={self.d0}, order={self.order}"


class CorrelationMotion(nn.Module):
    """Consecutive-frame correlation, local (window of ``radius``) or global.

    Args:
        radius (int | None): window radius; None for global correlation. Default: 7.

    Raises:
        ValueError: negative radius.
    """

    def __init__(self, radius: int | None = 7):
        super().__init__()
        if radius is not None and radius < 0:
            raise ValueError(f"radius must be >= 0 or None (global); got {radius}.")
        self.radius = radius

    def forward(self, x: Tensor) -> Tensor:
        """[B, C, F, H, W] -> [B, F-1, (2r+1)^2, H, W] (local) or [B, F-1, HW, HW]."""
        _check_video(x, min_frames=2)
        if self.radius is None:
            return global_correlation(x)
        return local_correlation(x, self.radius)

    def extra_repr(self) -> str:
        return "global" if self.radius is None else f"radius={self.radius}"
