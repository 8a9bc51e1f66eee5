"""Learning-rate schedules: linear warm-up, then cosine decay to zero or constant."""

from __future__ import annotations

import math

import torch


def warmup_cosine(step: int, warmup_steps: int, max_steps: int, cosine: bool = True) -> float:
    """LR multiplier at ``step``: step / warmup during warm-up, then
    0.5 (1 + cos(pi * progress)) (cosine) or 1 (constant)."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if not cosine:
        return 1.0
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def lr_scheduler(optimizer, warmup_steps: int, max_steps: int, kind: str = "cosine"):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, warmup_steps, max_steps, kind == "cosine")
    )
