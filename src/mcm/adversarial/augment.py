"""Differentiable augmentation (Zhao et al. 2020, "DiffAugment") for frames [N, C, H, W].

Applied identically in kind (random per sample) to real and fake frames before the
backbone, so the discriminator cannot overfit a small real set. Every operation is
differentiable in its input; all draws come from the given generator.

* color: brightness + U[-0.5, 0.5); saturation: (x - mean_c) * U[0, 2) + mean_c;
  contrast: (x - mean_chw) * U[0.5, 1.5) + mean_chw.
* translation: integer shift by up to 1/8 of the size along each axis, zero fill.
* cutout: a zeroed square of 0.2 of the size at a random centre (clipped at borders).

Pixel frames are expected in [-1, 1] (colour offsets are in those units).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

AUGMENTATIONS = ("color", "translation", "cutout")


def _uniform(n: int, generator: torch.Generator, x: Tensor, low: float, high: float) -> Tensor:
    """n draws from U[low, high) on the generator's device, as [n, 1, 1, 1] like x."""
    u = torch.rand(n, generator=generator, device=generator.device)
    return (low + (high - low) * u).to(device=x.device, dtype=x.dtype).view(n, 1, 1, 1)


def _randint(n: int, low: int, high: int, generator: torch.Generator, device) -> Tensor:
    """n integers in [low, high] (inclusive) on ``device``."""
    r = torch.randint(low, high + 1, (n,), generator=generator, device=generator.device)
    return r.to(device)


def color(x: Tensor, generator: torch.Generator) -> Tensor:
    """Random brightness, saturation and contrast per sample. [N, C, H, W] -> same."""
    n = x.shape[0]
    x = x + _uniform(n, generator, x, -0.5, 0.5)
    mean_c = x.mean(dim=1, keepdim=True)
    x = (x - mean_c) * _uniform(n, generator, x, 0.0, 2.0) + mean_c
    mean_chw = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean_chw) * _uniform(n, generator, x, 0.5, 1.5) + mean_chw


def translation(x: Tensor, generator: torch.Generator, ratio: float = 0.125) -> Tensor:
    """Shift each sample by integers in [-ratio*H, ratio*H] x [-ratio*W, ratio*W], zero fill.

    out[n, :, i, j] = x[n, :, i - ty_n, j - tx_n] where that lies inside, else 0.
    """
    N, _, H, W = x.shape
    max_y, max_x = int(H * ratio + 0.5), int(W * ratio + 0.5)
    ty = _randint(N, -max_y, max_y, generator, x.device)
    tx = _randint(N, -max_x, max_x, generator, x.device)
    # Index into a copy padded by one zero on each side: -1 and H map to the zero border.
    padded = F.pad(x, (1, 1, 1, 1))
    iy = (torch.arange(H, device=x.device)[None] - ty[:, None]).clamp(-1, H) + 1  # (N, H)
    ix = (torch.arange(W, device=x.device)[None] - tx[:, None]).clamp(-1, W) + 1  # (N, W)
    n = torch.arange(N, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[n, iy[:, :, None], ix[:, None, :]]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2)


def cutout(x: Tensor, generator: torch.Generator, ratio: float = 0.2) -> Tensor:
    """Zero a square of size (ratio*H, ratio*W) at a random centre per sample."""
    N, _, H, W = x.shape
    sy, sx = int(H * ratio + 0.5), int(W * ratio + 0.5)
    cy = _randint(N, 0, H - 1, generator, x.device)
    cx = _randint(N, 0, W - 1, generator, x.device)
    y = torch.arange(H, device=x.device)[None]
    xx = torch.arange(W, device=x.device)[None]
    in_y = (y >= (cy - sy // 2)[:, None]) & (y < (cy - sy // 2 + sy)[:, None])  # (N, H)
    in_x = (xx >= (cx - sx // 2)[:, None]) & (xx < (cx - sx // 2 + sx)[:, None])  # (N, W)
    keep = ~(in_y[:, :, None] & in_x[:, None, :])  # (N, H, W)
    return x * keep[:, None].to(x.dtype)


def parse_policy(policy: str) -> list[str]:
    """ "color,translation" -> ["color", "translation"]; raises ValueError on unknown names."""
    names = [p.strip() for p in policy.split(",") if p.strip()]
    unknown = [p for p in names if p not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"Unknown augmentation(s) {unknown}; allowed: {', '.join(AUGMENTATIONS)}.")
    return names


def diff_augment(
    x: Tensor, generator: torch.Generator, policy: str = "color,translation,cutout"
) -> Tensor:
    """Apply the comma-separated augmentations of ``policy`` in order.

    Args:
        x: frames [N, C, H, W]. generator: source of every random draw.
        policy: subset of "color", "translation", "cutout"; "" for none.
    Returns:
        augmented frames [N, C, H, W], differentiable in x.
    Raises:
        ValueError: unknown augmentation name, missing generator, or x not 4-D.
    """
    names = parse_policy(policy)
    if not names:
        return x
    if generator is None:
        raise ValueError("diff_augment needs a torch.Generator (or policy='' for none).")
    if x.ndim != 4:
        raise ValueError(f"diff_augment takes frames [N, C, H, W]; got {tuple(x.shape)}.")
    ops = {"color": color, "translation": translation, "cutout": cutout}
    for name in names:
        x = ops[name](x, generator)
    return x
