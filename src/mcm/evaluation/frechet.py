"""Frechet distance between Gaussians fitted to features (the FID / FVD formula).

    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^{1/2} S2 S1^{1/2})^{1/2})

Everything runs in float64. The trace term uses the symmetric matrix
S1^{1/2} S2 S1^{1/2}, which has the same eigenvalues as S1 S2 but, being symmetric
positive semi-definite, can be square-rooted with `torch.linalg.eigh` (no scipy).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def _as_float64(x, name: str) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}.")
    return x.detach().to(device="cpu", dtype=torch.float64)


def gaussian_stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean [D] and unbiased covariance [D, D] (float64) of features [N, D], N >= 2."""
    x = _as_float64(features, "features")
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be [N, D] with N >= 2, got shape {tuple(x.shape)}.")
    mu = x.mean(dim=0)
    centred = x - mu
    sigma = centred.T @ centred / (x.shape[0] - 1)
    return mu, sigma


def sqrtm_psd(matrix: Tensor) -> Tensor:
    """Square root [D, D] of a symmetric positive semi-definite matrix [D, D].

    Symmetrised first; eigenvalues below zero (round-off) are clamped to zero.
    """
    a = _as_float64(matrix, "matrix")
    a = 0.5 * (a + a.T)
    eigenvalues, eigenvectors = torch.linalg.eigh(a)
    root = eigenvalues.clamp(min=0).sqrt()
    return (eigenvectors * root) @ eigenvectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    Args:
        mu1, mu2: means [D] (Tensor or numpy).
        sigma1, sigma2: covariances [D, D], symmetric positive semi-definite.

    Returns:
        The distance as a Python float (>= 0 up to round-off), computed in float64.
    """
    mu1, mu2 = _as_float64(mu1, "mu1"), _as_float64(mu2, "mu2")
    sigma1, sigma2 = _as_float64(sigma1, "sigma1"), _as_float64(sigma2, "sigma2")
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            "Frechet distance needs mu [D] and sigma [D, D] of one feature size D; got "
            f"mu1 {tuple(mu1.shape)}, sigma1 {tuple(sigma1.shape)}, mu2 {tuple(mu2.shape)}, "
            f"sigma2 {tuple(sigma2.shape)}."
        )
    root1 = sqrtm_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    middle = 0.5 * (middle + middle.T)
    trace_sqrt = torch.linalg.eigvalsh(middle).clamp(min=0).sqrt().sum()
    diff = mu1 - mu2
    distance = diff @ diff + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt
    return float(distance)


def frechet_distance_to_stats(features: Tensor, mu_ref, sigma_ref) -> float:
    """Frechet distance of features [N, D] to reference statistics (mu [D], sigma [D, D])."""
    mu, sigma = gaussian_stats(features)
    return frechet_distance(mu, sigma, mu_ref, sigma_ref)
