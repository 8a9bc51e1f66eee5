"""Which frames the discriminator sees.

Fake: k frames of each generated video, the same frame indices for the whole batch.
Real: high-quality images; when no image set is given, frames of the training clips,
one drawn from each half of every clip.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_video(video: Tensor, min_frames: int) -> None:
    if video.ndim != 5:
        raise ValueError(f"Expected a video batch [B, C, F, H, W]; got {tuple(video.shape)}.")
    if video.shape[2] < min_frames:
        raise ValueError(f"Need at least {min_frames} frames per video; got {video.shape[2]}.")


def _frames(video: Tensor, idx: Tensor) -> Tensor:
    """video [B, C, F, H, W], idx [B, k] -> [B*k, C, H, W], video-major."""
    B, C, _, H, W = video.shape
    k = idx.shape[1]
    gather = idx.to(video.device).view(B, 1, k, 1, 1).expand(B, C, k, H, W)
    return video.gather(2, gather).permute(0, 2, 1, 3, 4).reshape(B * k, C, H, W)


def sample_frames(
    video: Tensor, k: int, generator: torch.Generator, return_indices: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """k distinct random frames of every video, the same indices for the whole batch.

    Row b*k + j of the output is frame idx[j] of video b, so per-video conditioning
    repeats with ``repeat_interleave(k, dim=0)``. Differentiable in ``video``.

    Args:
        video: [B, C, F, H, W]. k: frames per video (1 <= k <= F).
        generator: source of the draw.
        return_indices: also return the frame indices [k].
    Returns:
        frames [B*k, C, H, W] (and indices [k]).
    """
    _check_video(video, 1)
    Fr = video.shape[2]
    if not 1 <= k <= Fr:
        raise ValueError(f"k must lie in 1..{Fr} (the number of frames); got {k}.")
    idx = torch.randperm(Fr, generator=generator, device=generator.device)[:k]
    frames = _frames(video, idx.view(1, k).expand(video.shape[0], k))
    return (frames, idx) if return_indices else frames


def real_frames_from_clips(
    video: Tensor, generator: torch.Generator, return_indices: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """One random frame from each half of every clip (the real set when no images exist).

    Row 2b is from frames [0, F//2) of video b, row 2b+1 from [F//2, F); each video draws
    its own indices. Repeat per-video conditioning with ``repeat_interleave(2, dim=0)``.

    Args:
        video: [B, C, F, H, W] with F >= 2. generator: source of the draws.
        return_indices: also return the indices [B, 2].
    Returns:
        frames [B*2, C, H, W] (and indices [B, 2]).
    """
    _check_video(video, 2)
    B, Fr = video.shape[0], video.shape[2]
    half = Fr // 2
    u = torch.rand(B, 2, generator=generator, device=generator.device)
    first = (u[:, 0] * half).long().clamp(max=half - 1)
    second = half + (u[:, 1] * (Fr - half)).long().clamp(max=Fr - half - 1)
    idx = torch.stack([first, second], dim=1)
    frames = _frames(video, idx)
    return (frames, idx) if return_indices else frames
