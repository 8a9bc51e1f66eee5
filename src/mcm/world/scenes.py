"""Procedural scenes of the built-in world: one coloured shape moving in one direction.

Every clip is fully described by a :class:`Scene` (its ground truth), and rendering is a
pure function of the scene, so the same seed always gives the same pixels. Shapes are
drawn with 4x supersampling (anti-aliased edges); everything is torch, on CPU.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from mcm.errors import InputError

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.12, 0.12),
    "green": (0.10, 0.80, 0.20),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.85, 0.10),
    "magenta": (0.90, 0.15, 0.85),
    "cyan": (0.10, 0.85, 0.90),
}
DIRECTIONS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
}
STYLES = ("clean", "cartoon")

DEFAULT_SIZE = 32
DEFAULT_FRAMES = 8
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class Scene:
    """Ground truth of one clip. Positions are object centres in pixels (x right, y down)."""

    shape: str
    colour: str
    direction: str
    x0: float
    y0: float
    speed: float  # pixels per frame
    radius: float  # half-size of the shape in pixels
    background: float  # grey level of the background in [0, 1]

    @property
    def prompt(self) -> str:
        return f"a {self.colour} {self.shape} moving {self.direction}"

    @property
    def image_caption(self) -> str:
        return f"a {self.colour} {self.shape}"

    def positions(self, num_frames: int = DEFAULT_FRAMES) -> Tensor:
        """Object centre per frame, [F, 2] as (x, y)."""
        dx, dy = DIRECTIONS[self.direction]
        f = torch.arange(num_frames, dtype=torch.float32)
        return torch.stack([self.x0 + dx * self.speed * f, self.y0 + dy * self.speed * f], dim=1)

    def to_dict(self) -> dict:
        return asdict(self)


def _choice(options, generator: torch.Generator):
    return options[int(torch.randint(len(options), (1,), generator=generator))]


def _uniform(lo: float, hi: float, generator: torch.Generator) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=generator))


def sample_scene(
    generator: torch.Generator,
    size: int = DEFAULT_SIZE,
    num_frames: int = DEFAULT_FRAMES,
    shape: str | None = None,
    colour: str | None = None,
    direction: str | None = None,
) -> Scene:
    """Draw a scene whose object stays fully inside the frame for ``num_frames`` frames."""
    shape = shape or _choice(SHAPES, generator)
    colour = colour or _choice(list(COLOURS), generator)
    direction = direction or _choice(list(DIRECTIONS), generator)
    for name, value, allowed in (
        ("shape", shape, SHAPES),
        ("colour", colour, tuple(COLOURS)),
        ("direction", direction, tuple(DIRECTIONS)),
    ):
        if value not in allowed:
            raise ValueError(f"Unknown {name} {value!r}; allowed: {', '.join(allowed)}.")
    radius = _uniform(0.17, 0.21, generator) * size
    speed = _uniform(0.045, 0.06, generator) * size
    travel = speed * (num_frames - 1)
    lo, hi = radius + 1, size - radius - 1
    dx, dy = DIRECTIONS[direction]

    # Along the motion axis the start leaves room for the whole trajectory.
    def start(d: int) -> float:
        if d > 0:
            return _uniform(lo, max(lo, hi - travel), generator)
        if d < 0:
            return _uniform(min(hi, lo + travel), hi, generator)
        return _uniform(lo, hi, generator)

    x0, y0 = start(dx), start(dy)
    background = _uniform(0.12, 0.3, generator)
    return Scene(shape, colour, direction, x0, y0, speed, radius, background)


_PROMPT = re.compile(
    r"\b(?P<colour>" + "|".join(COLOURS) + r")\s+(?P<shape>" + "|".join(SHAPES) + r")"
    r"(?:\s+moving\s+(?P<direction>" + "|".join(DIRECTIONS) + r"))?",
    re.IGNORECASE,
)


def parse_prompt(text: str) -> dict[str, str | None]:
    """{"shape", "colour", "direction"} named in a world prompt (direction may be None)."""
    m = _PROMPT.search(text)
    if m is None:
        raise InputError(
            f"Not a world prompt: {text!r}. Expected 'a <colour> <shape> [moving <direction>]' with "
            f"colour in {list(COLOURS)}, shape in {list(SHAPES)}, direction in {list(DIRECTIONS)}."
        )
    d = m.group("direction")
    return {
        "shape": m.group("shape").lower(),
        "colour": m.group("colour").lower(),
        "direction": d and d.lower(),
    }


def shape_mask(shape: str, cx: float, cy: float, radius: float, size: int) -> Tensor:
    """Anti-aliased coverage [H, W] in [0, 1] of a shape centred at (cx, cy)."""
    n = size * _SUPERSAMPLE
    coords = (torch.arange(n, dtype=torch.float32) + 0.5) / _SUPERSAMPLE
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    u, v = (x - cx) / radius, (y - cy) / radius  # unit-radius coordinates
    cover = shape_inside(shape, u, v).float().reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE)
    return cover.mean(dim=(1, 3))


def shape_inside(shape: str, u: Tensor, v: Tensor) -> Tensor:
    """Whether unit-radius coordinates (u, v) (any equal shapes) lie inside ``shape``."""
    if shape == "circle":
        return u**2 + v**2 <= 1.0
    if shape == "square":
        return (u.abs() <= 0.85) & (v.abs() <= 0.85)
    if shape == "diamond":
        return u.abs() + v.abs() <= 1.1
    if shape == "triangle":  # pointing up
        return (v <= 0.8) & (v >= -1.0 + 1.8 * u.abs() * 1.0)
    if shape == "cross":
        return ((u.abs() <= 0.33) & (v.abs() <= 1.0)) | ((v.abs() <= 0.33) & (u.abs() <= 1.0))
    raise ValueError(f"Unknown shape {shape!r}; allowed: {', '.join(SHAPES)}.")


def _outline(mask: Tensor, width: int = 1) -> Tensor:
    """Coverage of a band just outside/on the edge of ``mask`` [H, W]."""
    k = 2 * width + 1
    dilated = torch.nn.functional.max_pool2d(mask[None, None], k, stride=1, padding=width)[0, 0]
    return (dilated - mask).clamp(0, 1)


def render_frame(
    scene: Scene, frame: int = 0, size: int = DEFAULT_SIZE, style: str = "clean"
) -> Tensor:
    """One frame [3, H, W] in [-1, 1]. style "cartoon" is the image-only style domain:
    a cream background, a lighter flat fill and a thick dark outline."""
    if style not in STYLES:
        raise ValueError(f"Unknown style {style!r}; allowed: {', '.join(STYLES)}.")
    cx, cy = scene.positions(frame + 1)[frame].tolist()
    mask = shape_mask(scene.shape, cx, cy, scene.radius, size)
    colour = torch.tensor(COLOURS[scene.colour])[:, None, None]
    if style == "clean":
        bg = torch.full((3, 1, 1), scene.background)
        img = bg * (1 - mask) + colour * mask
    else:
        bg = torch.tensor([0.96, 0.92, 0.80])[:, None, None]
        fill = 0.55 * colour + 0.45
        img = bg * (1 - mask) + fill * mask
        line = _outline(mask, width=1)
        img = img * (1 - line) + 0.05 * line
    return img * 2 - 1


def render_video(
    scene: Scene, num_frames: int = DEFAULT_FRAMES, size: int = DEFAULT_SIZE, style: str = "clean"
) -> Tensor:
    """A clean clip [3, F, H, W] in [-1, 1]."""
    return torch.stack([render_frame(scene, f, size, style) for f in range(num_frames)], dim=1)
