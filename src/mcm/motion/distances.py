"""Distances d(a, b) for the motion loss, reduced to one value per sample [B]."""

from __future__ import annotations

from torch import Tensor


def _per_sample_mean(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).mean(dim=1)


def pseudo_huber(a: Tensor, b: Tensor, c: float = 0.001) -> Tensor:
    """sqrt((a - b)^2 + c^2) - c, averaged over all but the batch dim: [B, ...] -> [B]."""
    if a.shape != b.shape:
        raise ValueError(f"Shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}.")
    return _per_sample_mean(((a - b) ** 2 + c**2).sqrt() - c)


def l2(a: Tensor, b: Tensor) -> Tensor:
    """(a - b)^2 averaged over all but the batch dim (per-sample MSE): [B, ...] -> [B]."""
    if a.shape != b.shape:
        raise ValueError(f"Shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}.")
    return _per_sample_mean((a - b) ** 2)


DISTANCES = {"huber": pseudo_huber, "l2": l2}
