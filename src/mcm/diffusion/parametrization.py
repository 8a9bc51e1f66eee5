"""Conversions between what a network predicts and (x0, eps).

With x_t = alpha x0 + sigma eps (alpha, sigma broadcast from [B]):

* epsilon:       out = eps        x0 = (x_t - sigma eps) / alpha
* sample:        out = x0         eps = (x_t - alpha x0) / sigma
* v_prediction:  out = alpha eps - sigma x0 (Salimans & Ho 2022; VP, alpha^2+sigma^2=1)
                 x0 = alpha x_t - sigma v, eps = sigma x_t + alpha v
* flow:          out = eps - x0 (rectified flow; alpha + sigma = 1)
                 x0 = x_t - sigma v, eps = x_t + alpha v
"""

from __future__ import annotations

from torch import Tensor

from mcm.diffusion.schedules import append_dims

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction", "flow")


def _check(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"Unknown prediction_type {prediction_type!r}; allowed: {', '.join(PREDICTION_TYPES)}."
        )


def _b(c: Tensor, x: Tensor) -> Tensor:
    return append_dims(c, x.ndim).to(x.device, x.dtype)


def eps_to_x0(eps: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """x0 = (x_t - sigma eps) / alpha. Tensors [B, ...], alpha and sigma [B]."""
    return (x_t - _b(sigma, x_t) * eps) / _b(alpha, x_t)


def x0_to_eps(x0: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """eps = (x_t - alpha x0) / sigma. Tensors [B, ...], alpha and sigma [B]."""
    return (x_t - _b(alpha, x_t) * x0) / _b(sigma, x_t)


def v_to_x0(v: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """x0 = alpha x_t - sigma v (VP: alpha^2 + sigma^2 = 1). Tensors [B, ...], alpha, sigma [B]."""
    return _b(alpha, x_t) * x_t - _b(sigma, x_t) * v


def v_to_eps(v: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """eps = sigma x_t + alpha v (VP: alpha^2 + sigma^2 = 1). Tensors [B, ...], alpha, sigma [B]."""
    return _b(sigma, x_t) * x_t + _b(alpha, x_t) * v


def flow_to_x0(v: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """x0 = x_t - sigma v for v = eps - x0 (flow: alpha + sigma = 1; alpha unused)."""
    return x_t - _b(sigma, x_t) * v


def flow_to_eps(v: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """eps = x_t + alpha v for v = eps - x0 (flow: alpha + sigma = 1; sigma unused)."""
    return x_t + _b(alpha, x_t) * v


def to_x0_eps(
    model_output: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor, prediction_type: str
) -> tuple[Tensor, Tensor]:
    """(x0, eps) implied by a model output.

    Args:
        model_output, x_t: [B, ...]; alpha, sigma: [B]; prediction_type: one of
            PREDICTION_TYPES.
    Returns:
        x0 [B, ...], eps [B, ...] (for "epsilon" eps is model_output itself, for "sample"
        x0 is).
    Raises:
        ValueError: unknown prediction_type (the message lists PREDICTION_TYPES).
    """
    _check(prediction_type)
    if prediction_type == "epsilon":
        x0 = eps_to_x0(model_output, x_t, alpha, sigma)
        return x0, model_output
    if prediction_type == "sample":
        return model_output, x0_to_eps(model_output, x_t, alpha, sigma)
    if prediction_type == "v_prediction":
        return v_to_x0(model_output, x_t, alpha, sigma), v_to_eps(model_output, x_t, alpha, sigma)
    return flow_to_x0(model_output, x_t, alpha, sigma), flow_to_eps(model_output, x_t, alpha, sigma)


def from_x0_eps(
    x0: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor, prediction_type: str
) -> Tensor:
    """The model output of a given prediction type that corresponds to (x0, eps). [B, ...].

    The inverse of :func:`to_x0_eps`: eps, x0, alpha eps - sigma x0 or eps - x0.

    Raises:
        ValueError: unknown prediction_type (the message lists PREDICTION_TYPES).
    """
    _check(prediction_type)
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "sample":
        return x0
    if prediction_type == "v_prediction":
        return _b(alpha, x0) * eps - _b(sigma, x0) * x0
    return eps - x0
