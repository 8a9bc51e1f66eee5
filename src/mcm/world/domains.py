"""The world's data domains, built from clean renders.

* ``lowq_video`` - the WebVid analogue: blurred, low contrast, noisy, with one fixed
  semi-transparent watermark. The teacher is trained on this alone.
* ``hq_image`` - the LAION-aesthetic analogue: single clean sharp frames.
* ``style_image`` - an image-only look (outlined cartoon) that no video has.
* ``clean_video`` - held-out clean clips, used by metrics only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mcm.world.scenes import (
    DEFAULT_FRAMES,
    DEFAULT_SIZE,
    Scene,
    render_frame,
    render_video,
    sample_scene,
)

DOMAINS = ("lowq_video", "hq_image", "style_image", "clean_video")

BLUR_SIGMA = 0.9
CONTRAST = 0.6
NOISE_STD = 0.05
WATERMARK_OPACITY = 0.45


def watermark_alpha(size: int = DEFAULT_SIZE) -> Tensor:
    """The fixed watermark's opacity map [H, W] in [0, 1]: a bright 'W'-like glyph in the
    lower-right corner, scaled to the frame size (the same in every low-quality clip)."""
    glyph = torch.tensor(
        [
            [1, 0, 0, 0, 1, 0, 0, 0, 1],
            [1, 0, 0, 0, 1, 0, 0, 0, 1],
            [0, 1, 0, 1, 0, 1, 0, 1, 0],
            [0, 1, 0, 1, 0, 1, 0, 1, 0],
            [0, 0, 1, 0, 0, 0, 1, 0, 0],
        ],
        dtype=torch.float32,
    )
    scale = max(1, round(size / 32))
    glyph = glyph.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    alpha = torch.zeros(size, size)
    h, w = glyph.shape
    top, left = size - h - 2 * scale, size - w - 2 * scale
    alpha[top : top + h, left : left + w] = glyph * WATERMARK_OPACITY
    return alpha


def add_watermark(frames: Tensor, alpha: Tensor | None = None) -> Tensor:
    """Overlay the white watermark on frames [..., H, W] in [-1, 1] with opacity ``alpha``
    [H, W] (default: :func:`watermark_alpha` at the frames' size)."""
    if alpha is None:
        alpha = watermark_alpha(frames.shape[-1])
    alpha = alpha.to(frames)
    return frames * (1 - alpha) + alpha


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of [N, C, H, W] with reflect padding."""
    radius = max(1, math.ceil(3 * sigma))
    k = torch.exp(
        -0.5 * (torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device) / sigma) ** 2
    )
    k = k / k.sum()
    C = x.shape[1]
    x = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(C, 1, 1, 1), groups=C)
    x = F.pad(x, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(C, 1, 1, 1), groups=C)


def degrade(video: Tensor, generator: torch.Generator) -> Tensor:
    """Clean clip [3, F, H, W] in [-1, 1] -> its low-quality version (same shape).

    Blur (sigma BLUR_SIGMA), contrast x CONTRAST around the clip mean, the watermark
    (white, WATERMARK_OPACITY), then Gaussian noise (std NOISE_STD), clamped to [-1, 1].
    """
    C, Fr, H, W = video.shape
    frames = video.permute(1, 0, 2, 3)  # [F, 3, H, W]
    frames = gaussian_blur(frames, BLUR_SIGMA)
    mean = frames.mean(dim=(0, 2, 3), keepdim=True)
    frames = mean + CONTRAST * (frames - mean)
    frames = add_watermark(frames)
    frames = frames + NOISE_STD * 2 * torch.randn(frames.shape, generator=generator)
    return frames.clamp(-1, 1).permute(1, 0, 2, 3)


def render_sample(
    domain: str,
    generator: torch.Generator,
    size: int = DEFAULT_SIZE,
    num_frames: int = DEFAULT_FRAMES,
    scene: Scene | None = None,
    frame: int | None = None,
) -> tuple[Tensor, str, Scene]:
    """One sample of a domain: (pixels, caption, ground truth).

    Videos are [3, F, H, W]; images [3, H, W] (frame ``frame`` of the scene, default a
    random one). All in [-1, 1].
    """
    if domain not in DOMAINS:
        raise ValueError(f"Unknown world domain {domain!r}; allowed: {', '.join(DOMAINS)}.")
    scene = scene or sample_scene(generator, size, num_frames)
    if domain in ("lowq_video", "clean_video"):
        video = render_video(scene, num_frames, size)
        if domain == "lowq_video":
            video = degrade(video, generator)
        return video, scene.prompt, scene
    if frame is None:
        frame = int(torch.randint(num_frames, (1,), generator=generator))
    style = "cartoon" if domain == "style_image" else "clean"
    return render_frame(scene, frame, size, style), scene.image_caption, scene
