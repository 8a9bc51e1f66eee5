"""Bringing frames and clips to a feature network's input size, in torch (no torchvision).

Frames are ``[N, 3, H, W]``, videos ``[B, 3, F, H, W]``, pixels in ``[-1, 1]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

TEMPORAL_POLICIES = ("repeat", "loop")


def resize_center_crop(frames: Tensor, size: int, mode: str = "bilinear") -> Tensor:
    """Resize the shorter side to ``size`` (antialiased when shrinking) and crop the centre.

    Args:
        frames: [N, 3, H, W].
        size: output height and width.
        mode: ``"bilinear"`` or ``"bicubic"``.

    Returns:
        [N, 3, size, size], same dtype (bicubic overshoot is clamped back into the input's
        range only by the caller, if at all).
    """
    if frames.ndim != 4:
        raise ValueError(f"frames must be [N, C, H, W], got shape {tuple(frames.shape)}.")
    H, W = frames.shape[-2:]
    if (size, size) != (H, W):
        scale = size / min(H, W)
        out = (max(size, round(H * scale)), max(size, round(W * scale)))
        frames = F.interpolate(frames, size=out, mode=mode, align_corners=False, antialias=True)
        top = (frames.shape[-2] - size) // 2
        left = (frames.shape[-1] - size) // 2
        frames = frames[..., top : top + size, left : left + size]
    return frames


def resize_videos(videos: Tensor, size: int, mode: str = "bilinear") -> Tensor:
    """[B, 3, F, H, W] -> [B, 3, F, size, size] with :func:`resize_center_crop` per frame."""
    B, C, Fr, H, W = videos.shape
    frames = videos.permute(0, 2, 1, 3, 4).reshape(B * Fr, C, H, W)
    frames = resize_center_crop(frames, size, mode)
    return frames.reshape(B, Fr, C, size, size).permute(0, 2, 1, 3, 4)


def extend_clips(videos: Tensor, min_frames: int, policy: str = "repeat") -> Tensor:
    """Lengthen clips shorter than ``min_frames`` (longer clips are returned unchanged).

    Args:
        videos: [B, 3, F, H, W].
        min_frames: the shortest clip the feature network accepts.
        policy: ``"repeat"``: every frame r = ceil(min_frames / F) times in a row (the clip
            played r times slower: same frames, same order, no jump); ``"loop"``: the whole
            clip r times (same speed, one jump per loop).

    Returns:
        [B, 3, r * F, H, W].
    """
    if policy not in TEMPORAL_POLICIES:
        raise ValueError(f"Unknown temporal policy {policy!r}; use one of {TEMPORAL_POLICIES}.")
    frames = videos.shape[2]
    if frames >= min_frames:
        return videos
    r = math.ceil(min_frames / frames)
    if policy == "repeat":
        return videos.repeat_interleave(r, dim=2)
    return videos.repeat(1, 1, r, 1, 1)


def normalize(frames: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """[-1, 1] pixels [N, 3, H, W] -> ((x + 1) / 2 - mean) / std, per channel."""
    m = torch.tensor(mean, dtype=frames.dtype, device=frames.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=frames.dtype, device=frames.device).view(1, -1, 1, 1)
    return ((frames + 1) / 2 - m) / s
