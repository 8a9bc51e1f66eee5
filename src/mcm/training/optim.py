"""The optimisers and learning-rate schedules of every trainer."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.optimization import get_scheduler


def make_optimizer(
    params,
    lr: float,
    betas=(0.9, 0.999),
    weight_decay: float = 0.0,
    eps: float = 1e-8,
    kind: str = "adamw",
    fused: bool | None = None,
) -> torch.optim.Optimizer:
    """AdamW over ``params`` (parameters or param groups); ``kind="adamw8bit"``: bitsandbytes'.

    ``fused``: torch's fused AdamW kernel (one kernel per parameter; on the CPU about 8x
    faster than the default loop of tensor operations, the same update up to rounding);
    None: torch's default implementation for the device.
    """
    if kind == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError as e:
            raise ImportError(
                "train.optimizer=adamw8bit needs bitsandbytes: `pip install bitsandbytes`, "
                "or set train.optimizer=adamw."
            ) from e
        return bnb.optim.AdamW8bit(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    return torch.optim.AdamW(
        params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, eps=eps, fused=fused
    )


def make_scheduler(optimizer, kind: str, warmup_steps: int, max_steps: int):
    """The LR schedule: a linear warm-up from 0 over ``warmup_steps``, then ``"cosine"``
    decay to 0 at ``max_steps`` or ``"constant"`` (diffusers' schedules)."""
    name = {"cosine": "cosine", "constant": "constant_with_warmup"}[kind]
    return get_scheduler(
        name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=max_steps
    )


@dataclass
class Optimization:
    """One optimiser, its LR schedule, the parameters it updates and their clipping.

    ``max_grad_norm`` 0 leaves the gradients unclipped (their norm is still logged)."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    params: list[torch.Tensor]
    max_grad_norm: float = 0.0
