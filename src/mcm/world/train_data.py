"""Batched, on-device rendering of world scenes for training the world teacher.

:mod:`mcm.world.scenes` renders one scene at a time (the ground truth, used for files on
disk and metrics); training needs thousands of clips per second, so this module renders a
whole batch of scenes at once with tensor ops on any device. It draws scenes from the same
distribution as :func:`mcm.world.scenes.sample_scene` (not the same random stream) and
renders them with the same formulas: ``render_scene_batch`` on scenes converted with
``SceneBatch.from_scenes`` equals ``render_video`` to float precision (tested).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from mcm.world.domains import BLUR_SIGMA, CONTRAST, NOISE_STD, add_watermark, gaussian_blur
from mcm.world.scenes import (
    _SUPERSAMPLE,
    COLOURS,
    DEFAULT_FRAMES,
    DEFAULT_SIZE,
    DIRECTIONS,
    SHAPES,
    Scene,
    shape_inside,
)

COLOUR_NAMES = tuple(COLOURS)
DIRECTION_NAMES = tuple(DIRECTIONS)


@dataclass
class SceneBatch:
    """B scenes as tensors [B]: indices into SHAPES / COLOURS / DIRECTIONS, and floats."""

    shape: Tensor
    colour: Tensor
    direction: Tensor
    x0: Tensor
    y0: Tensor
    speed: Tensor
    radius: Tensor
    background: Tensor

    def __len__(self) -> int:
        return self.shape.shape[0]

    @classmethod
    def from_scenes(cls, scenes: list[Scene], device: str | torch.device = "cpu") -> SceneBatch:
        def floats(name: str) -> Tensor:
            return torch.tensor(
                [getattr(s, name) for s in scenes], dtype=torch.float32, device=device
            )

        def index(names: tuple[str, ...], attr: str) -> Tensor:
            return torch.tensor([names.index(getattr(s, attr)) for s in scenes], device=device)

        return cls(
            index(SHAPES, "shape"),
            index(COLOUR_NAMES, "colour"),
            index(DIRECTION_NAMES, "direction"),
            *(floats(n) for n in ("x0", "y0", "speed", "radius", "background")),
        )

    def scene(self, i: int) -> Scene:
        """Scene i as a ground-truth :class:`Scene`."""
        return Scene(
            SHAPES[int(self.shape[i])],
            COLOUR_NAMES[int(self.colour[i])],
            DIRECTION_NAMES[int(self.direction[i])],
            *(float(getattr(self, f.name)[i]) for f in fields(self)[3:]),
        )

    def prompt_index(self) -> Tensor:
        """Index [B] of each scene's prompt in :func:`world_prompts`."""
        return (self.colour * len(SHAPES) + self.shape) * len(DIRECTION_NAMES) + self.direction


def world_prompts() -> list[str]:
    """All video prompts, ordered colour-major, then shape, then direction."""
    return [f"a {c} {s} moving {d}" for c in COLOUR_NAMES for s in SHAPES for d in DIRECTION_NAMES]


def sample_scene_batch(
    n: int,
    generator: torch.Generator,
    size: int = DEFAULT_SIZE,
    num_frames: int = DEFAULT_FRAMES,
) -> SceneBatch:
    """n scenes drawn on the generator's device, distributed as ``sample_scene``'s."""
    device = generator.device

    def uniform(lo: Tensor | float, hi: Tensor | float) -> Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator, device=device)

    def choice(k: int) -> Tensor:
        return torch.randint(k, (n,), generator=generator, device=device)

    shape, colour, direction = (
        choice(len(SHAPES)),
        choice(len(COLOUR_NAMES)),
        choice(len(DIRECTION_NAMES)),
    )
    radius = uniform(0.17, 0.21) * size
    speed = uniform(0.045, 0.06) * size
    travel = speed * (num_frames - 1)
    lo, hi = radius + 1, size - radius - 1
    steps = torch.tensor(list(DIRECTIONS.values()), device=device)[direction]  # [n, 2]

    def start(d: Tensor) -> Tensor:
        a = torch.where(d > 0, lo, torch.where(d < 0, torch.minimum(hi, lo + travel), lo))
        b = torch.where(d > 0, torch.maximum(lo, hi - travel), hi)
        return uniform(a, b)

    x0, y0 = start(steps[:, 0]), start(steps[:, 1])
    background = uniform(0.12, 0.3)
    return SceneBatch(shape, colour, direction, x0, y0, speed, radius, background)


def render_scene_batch(
    scenes: SceneBatch,
    frames: Tensor | None = None,
    size: int = DEFAULT_SIZE,
    num_frames: int = DEFAULT_FRAMES,
    style: str = "clean",
) -> Tensor:
    """Render frames [B, 3, K, H, W] in [-1, 1] of B scenes.

    Args:
        frames: frame indices [B, K] per scene; default all ``num_frames`` frames.
        style: "clean" (videos, hq images) or "cartoon" (the style domain).
    """
    device = scenes.x0.device
    B = len(scenes)
    if frames is None:
        frames = torch.arange(num_frames, device=device).expand(B, num_frames)
    steps = torch.tensor(list(DIRECTIONS.values()), dtype=torch.float32, device=device)[
        scenes.direction
    ]
    f = frames.float()
    # Same arithmetic (float32) as Scene.positions: x0 + dx * speed * f.
    cx = scenes.x0[:, None] + (steps[:, 0] * scenes.speed)[:, None] * f  # [B, K]
    cy = scenes.y0[:, None] + (steps[:, 1] * scenes.speed)[:, None] * f
    n = size * _SUPERSAMPLE
    coords = (torch.arange(n, dtype=torch.float32, device=device) + 0.5) / _SUPERSAMPLE
    r = scenes.radius[:, None, None, None]
    u = (coords[None, None, None, :] - cx[..., None, None]) / r  # [B, K, 1, n]
    v = (coords[None, None, :, None] - cy[..., None, None]) / r  # [B, K, n, 1]
    u, v = torch.broadcast_tensors(u, v)
    inside = torch.zeros(u.shape, dtype=torch.bool, device=device)
    for i, name in enumerate(SHAPES):
        sel = scenes.shape == i
        if sel.any():
            inside[sel] = shape_inside(name, u[sel], v[sel])
    K = frames.shape[1]
    mask = inside.float().reshape(B, K, size, _SUPERSAMPLE, size, _SUPERSAMPLE).mean(dim=(3, 5))
    mask = mask[:, None]  # [B, 1, K, H, W]
    palette = torch.tensor(list(COLOURS.values()), dtype=torch.float32, device=device)
    colour = palette[scenes.colour][:, :, None, None, None]  # [B, 3, 1, 1, 1]
    if style == "clean":
        bg = scenes.background[:, None, None, None, None]
        img = bg * (1 - mask) + colour * mask
    elif style == "cartoon":
        bg = torch.tensor([0.96, 0.92, 0.80], device=device)[None, :, None, None, None]
        fill = 0.55 * colour + 0.45
        img = bg * (1 - mask) + fill * mask
        flat = mask.reshape(B * K, 1, size, size)
        line = (torch.nn.functional.max_pool2d(flat, 3, stride=1, padding=1) - flat).clamp(0, 1)
        line = line.reshape(B, 1, K, size, size)
        img = img * (1 - line) + 0.05 * line
    else:
        raise ValueError(f"Unknown style {style!r}; allowed: clean, cartoon.")
    return img * 2 - 1


def degrade_batch(videos: Tensor, generator: torch.Generator) -> Tensor:
    """Batched :func:`mcm.world.domains.degrade`: [B, 3, F, H, W] -> low-quality clips.

    For B = 1 on the same generator it draws the same noise as ``degrade``.
    """
    B, C, Fr, H, W = videos.shape
    frames = videos.permute(0, 2, 1, 3, 4).reshape(B * Fr, C, H, W)
    frames = gaussian_blur(frames, BLUR_SIGMA).reshape(B, Fr, C, H, W)
    mean = frames.mean(dim=(1, 3, 4), keepdim=True)
    frames = mean + CONTRAST * (frames - mean)
    frames = add_watermark(frames)
    noise = torch.randn(frames.shape, generator=generator, device=frames.device, dtype=frames.dtype)
    frames = frames + NOISE_STD * 2 * noise
    return frames.clamp(-1, 1).permute(0, 2, 1, 3, 4)


def lowq_video_batch(
    n: int, generator: torch.Generator, size: int = DEFAULT_SIZE, num_frames: int = DEFAULT_FRAMES
) -> tuple[Tensor, SceneBatch]:
    """n fresh low-quality clips [n, 3, F, H, W] and their scenes."""
    scenes = sample_scene_batch(n, generator, size, num_frames)
    clean = render_scene_batch(scenes, size=size, num_frames=num_frames)
    return degrade_batch(clean, generator), scenes


def vae_frame_batch(
    n: int, generator: torch.Generator, size: int = DEFAULT_SIZE, num_frames: int = DEFAULT_FRAMES
) -> Tensor:
    """n frames [n, 3, H, W] for training the VAE: half low-quality video frames, a quarter
    clean high-quality frames (hq_image and clean_video look), a quarter style images."""
    n_clips = max(1, n // (2 * num_frames))
    lowq, _ = lowq_video_batch(n_clips, generator, size, num_frames)
    lowq = lowq.permute(0, 2, 1, 3, 4).reshape(-1, 3, size, size)
    rest = n - lowq.shape[0]
    out = [lowq]
    for style, k in (("clean", rest - rest // 2), ("cartoon", rest // 2)):
        if k > 0:
            scenes = sample_scene_batch(k, generator, size, num_frames)
            frame = torch.randint(num_frames, (k, 1), generator=generator, device=generator.device)
            out.append(render_scene_batch(scenes, frame, size, num_frames, style)[:, :, 0])
    return torch.cat(out)[:n]
