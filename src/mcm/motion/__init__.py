"""Layer 2: motion representations m(x) for the disentangled motion loss.

Every representation is an ``nn.Module`` mapping latents [B, C, F, H, W] to the tensor on
which the distance is computed. Build one by name with
:func:`build_motion_representation`.
"""

from __future__ import annotations

from torch import nn

from mcm.motion.distances import DISTANCES, l2, pseudo_huber
from mcm.motion.learnable import LearnableMotionHead
from mcm.motion.representations import (
    CorrelationMotion,
    FrequencyMotion,
    RawMotion,
    TemporalDifference,
    butterworth_mask,
    global_correlation,
    high_frequency,
    local_correlation,
    low_frequency,
    temporal_difference,
)

MOTION_REPRESENTATIONS = (
    "raw",
    "diff",
    "lowfreq",
    "highfreq",
    "corr_local",
    "corr_global",
    "learnable",
    "learnable_heavy",
)


def build_motion_representation(name: str, channels: int, **kwargs) -> nn.Module:
    """The motion representation ``name`` for latents with ``channels`` channels.

    Args:
        name: one of MOTION_REPRESENTATIONS.
        channels: latent channels C (used by the learnable heads).
        **kwargs: options of the chosen module: ``d0``, ``order`` (lowfreq, highfreq);
            ``radius`` (corr_local, default 7); ``hidden``, ``num_layers``,
            ``kernel_size``, ``num_groups`` (learnable; learnable_heavy defaults to
            kernel_size=3, num_layers=5).

    Raises:
        ValueError: unknown name, or an option the representation does not take.
    """
    builders = {
        "raw": lambda: RawMotion(**kwargs),
        "diff": lambda: TemporalDifference(**kwargs),
        "lowfreq": lambda: FrequencyMotion("low", **kwargs),
        "highfreq": lambda: FrequencyMotion("high", **kwargs),
        "corr_local": lambda: CorrelationMotion(**{"radius": 7, **kwargs}),
        "corr_global": lambda: CorrelationMotion(radius=None, **kwargs),
        "learnable": lambda: LearnableMotionHead(channels, **kwargs),
        "learnable_heavy": lambda: LearnableMotionHead(
            channels, **{"kernel_size": 3, "num_layers": 5, **kwargs}
        ),
    }
    if name not in builders:
        raise ValueError(
            f"Unknown motion representation {name!r}; allowed: {', '.join(MOTION_REPRESENTATIONS)}."
        )
    try:
        return builders[name]()
    except TypeError as e:
        raise ValueError(
            f"Bad options {sorted(kwargs)} for motion representation {name!r}: {e}. "
            "See build_motion_representation's docstring for the options each one takes."
        ) from e


__all__ = [
    "DISTANCES",
    "MOTION_REPRESENTATIONS",
    "CorrelationMotion",
    "FrequencyMotion",
    "LearnableMotionHead",
    "RawMotion",
    "TemporalDifference",
    "build_motion_representation",
    "butterworth_mask",
    "global_correlation",
    "high_frequency",
    "l2",
    "local_correlation",
    "low_frequency",
    "pseudo_huber",
    "temporal_difference",
]
