"""World metrics: how well a batch of generated world videos matches its prompts and the
clean high-quality look, measured against the world's ground truth.

One call, :func:`world_metrics`, gives

* ``prompt_accuracy`` - shape and colour both right, from the *frame probe* (its logits
  averaged over the frames of a video); ``shape_accuracy`` and ``colour_accuracy`` apart.
* ``motion_accuracy`` - the prompt's direction equals the direction of the object's track
  (weighted centroid of the pixels that differ from each frame's background, outside the
  watermark box; least-squares velocity over frames). No classifier is involved.
* ``watermark_score`` - the opacity of the known watermark glyph in the temporal-median
  frame, divided by the opacity the low-quality domain uses: ~1 on low-quality clips,
  ~0 on clean ones.
* ``sharpness`` - noise-corrected edge energy at a fine scale over edge energy at a
  coarse scale (contrast cancels), divided by its mean on clean renders: 1 on clean data,
  lower for blur (the low-quality domain ~0.5), not raised by pixel noise.
* ``frame_fd`` / ``video_fd`` - Frechet distances of frame-probe features of all frames to
  the high-quality image set, and of video-probe features to the held-out clean videos
  (reference statistics shipped with the probes). Like FID/FVD they are biased by the
  sample count: compare numbers computed from the same number of videos.

The probes are evaluation-only networks (see :mod:`mcm.world.probes`); nothing here is
differentiable on purpose and nothing here is used in any training loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mcm.errors import InputError
from mcm.evaluation.frechet import frechet_distance_to_stats
from mcm.world.domains import WATERMARK_OPACITY, gaussian_blur, render_sample, watermark_alpha
from mcm.world.probes import load_probes
from mcm.world.scenes import COLOURS, DIRECTIONS, SHAPES, parse_prompt, render_video, sample_scene

SHARPNESS_FINE_SIGMA = 0.5  # pixels; the fine scale still sees the blur of the low-quality domain
SHARPNESS_COARSE_SIGMA = 2.0  # pixels; at this scale blur hardly matters: it measures contrast
WATERMARK_MARGIN = 1  # pixels around the glyph's box that the object track ignores


def _check_videos(videos: Tensor) -> None:
    if not isinstance(videos, Tensor) or videos.ndim != 5 or videos.shape[1] != 3:
        shape = tuple(videos.shape) if isinstance(videos, Tensor) else type(videos).__name__
        raise InputError(f"videos must be a tensor [B, 3, F, H, W] in [-1, 1], got {shape}.")
    if not torch.isfinite(videos).all():
        raise InputError(
            "videos contain NaN or infinite values; check the sampler that produced them."
        )
    if videos.shape[3] != videos.shape[4]:
        raise InputError(f"World videos are square; got H={videos.shape[3]}, W={videos.shape[4]}.")


def watermark_box(size: int, margin: int = 0) -> tuple[slice, slice]:
    """(rows, cols) slices of the watermark glyph's bounding box, grown by ``margin``."""
    ys, xs = torch.nonzero(watermark_alpha(size) > 0, as_tuple=True)
    top, bottom = max(int(ys.min()) - margin, 0), min(int(ys.max()) + 1 + margin, size)
    left, right = max(int(xs.min()) - margin, 0), min(int(xs.max()) + 1 + margin, size)
    return slice(top, bottom), slice(left, right)


# ---------------------------------------------------------------------------------------
# Motion: the object's track
# ---------------------------------------------------------------------------------------


def object_track(videos: Tensor) -> tuple[Tensor, Tensor]:
    """Per-frame object centroid from pixels that differ from the frame's background.

    The background colour of a frame is the per-channel median of its pixels (the object
    covers a small part of the frame). A pixel's weight is its colour distance to that
    background minus half the frame's 98th-percentile distance (clamped at 0), so noise
    and faint smudges weigh nothing; the watermark box is ignored.

    Args:
        videos: [B, 3, F, H, W] in [-1, 1].

    Returns:
        centroids [B, F, 2] as (x, y) in pixels (NaN where nothing was found) and the total
        weight per frame [B, F].
    """
    _check_videos(videos)
    B, _, Fr, H, W = videos.shape
    x = videos.detach().float().cpu()
    keep = torch.ones(H, W, dtype=torch.bool)
    rows, cols = watermark_box(H, WATERMARK_MARGIN)
    keep[rows, cols] = False
    pixels = x[..., keep]  # [B, 3, F, P]
    background = pixels.median(dim=-1).values  # [B, 3, F]
    distance = (x - background[..., None, None]).norm(dim=1)  # [B, F, H, W]
    distance = distance * keep
    high = distance.flatten(2).quantile(0.98, dim=-1)  # [B, F]
    weight = (distance - 0.5 * high[..., None, None]).clamp(min=0)
    total = weight.sum(dim=(2, 3))
    coords = torch.arange(H, dtype=torch.float32) + 0.5
    cx = (weight.sum(dim=2) * coords).sum(dim=-1) / total
    cy = (weight.sum(dim=3) * coords).sum(dim=-1) / total
    centroids = torch.stack([cx, cy], dim=-1)
    centroids[total <= 0] = float("nan")
    return centroids, total


def track_velocity(centroids: Tensor) -> Tensor:
    """Least-squares velocity [B, 2] (pixels per frame) of tracks [B, F, 2]; NaN frames skipped."""
    B, Fr, _ = centroids.shape
    t = torch.arange(Fr, dtype=torch.float32).expand(B, Fr)
    valid = ~centroids.isnan().any(dim=-1)
    n = valid.sum(dim=1).clamp(min=1)
    t_mean = (t * valid).sum(dim=1) / n
    c = centroids.nan_to_num(0.0)
    c_mean = (c * valid[..., None]).sum(dim=1) / n[:, None]
    dt = (t - t_mean[:, None]) * valid
    slope = (dt[..., None] * (c - c_mean[:, None])).sum(dim=1) / (dt**2).sum(dim=1).clamp(min=1e-8)[
        :, None
    ]
    slope[valid.sum(dim=1) < 2] = 0.0
    return slope


def track_direction(velocity: Tensor) -> list[str]:
    """Names of the world directions closest to velocities [B, 2] (x right, y down)."""
    names = list(DIRECTIONS)
    unit = torch.tensor([DIRECTIONS[n] for n in names], dtype=torch.float32)  # [4, 2]
    return [names[i] for i in (velocity @ unit.T).argmax(dim=1).tolist()]


# ---------------------------------------------------------------------------------------
# Watermark and sharpness
# ---------------------------------------------------------------------------------------


def watermark_strength(videos: Tensor) -> Tensor:
    """Estimated watermark opacity per video [B], divided by the low-quality domain's.

    Inside the glyph's box, the luminance of the temporal-median frame (robust to the
    object passing over the box) is split into glyph and non-glyph pixels; the gap of
    their medians, over the room left to white (the watermark is white, so a pixel p
    becomes p (1 - a) + a), estimates the opacity a. 0 where no glyph is present.
    """
    _check_videos(videos)
    H = videos.shape[3]
    rows, cols = watermark_box(H)
    glyph = (watermark_alpha(H) > 0)[rows, cols]
    luminance = videos.detach().float().cpu().mean(dim=1)  # [B, F, H, W]
    median_frame = luminance.median(dim=1).values[:, rows, cols]  # [B, h, w]
    on = median_frame[:, glyph].median(dim=1).values
    off = median_frame[:, ~glyph].median(dim=1).values
    opacity = (on - off) / (1 - off).clamp(min=0.25)
    return opacity / WATERMARK_OPACITY


def _gradients(frames: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
    """Finite differences (dx [N, C, H, W-1], dy [N, C, H-1, W]) after a Gaussian blur."""
    x = gaussian_blur(frames, sigma) if sigma > 0 else frames
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def _noise_gain(sigma: float) -> float:
    """Expected dx^2 + dy^2 per pixel for unit-variance white noise blurred by ``sigma``."""
    impulse = torch.zeros(1, 1, 17, 17)
    impulse[0, 0, 8, 8] = 1.0
    dx, _ = _gradients(impulse, sigma)
    return 2 * float((dx**2).sum())


def noise_level(frames: Tensor, keep: Tensor) -> Tensor:
    """Pixel-noise standard deviation per video from its flattest pixels.

    Args:
        frames: [B, F, C, H, W]; keep: [H, W-1] bool mask of horizontal pairs to use.

    Returns:
        [B]: the rms horizontal difference / sqrt(2) over the 30% of kept pixels whose
        coarse-scale (blurred) gradient is smallest, where no edge can be.
    """
    B, Fr, C, H, W = frames.shape
    flat_frames = frames.reshape(B * Fr, C, H, W)
    dx, _ = _gradients(flat_frames, 0.0)
    cx, cy = _gradients(flat_frames, SHARPNESS_COARSE_SIGMA)
    coarse = cx[..., :-1, :] ** 2 + cy[..., :, :-1] ** 2  # [N, C, H-1, W-1]
    coarse = F.pad(coarse, (0, 0, 0, 1), mode="replicate").sum(dim=1)  # [N, H, W-1]
    coarse = coarse.reshape(B, Fr, H, W - 1)[..., keep]  # [B, F, P]
    fine = (dx**2).mean(dim=1).reshape(B, Fr, H, W - 1)[..., keep]
    coarse, fine = coarse.flatten(1), fine.flatten(1)
    threshold = coarse.quantile(0.3, dim=1, keepdim=True)
    flat = coarse <= threshold
    return ((fine * flat).sum(dim=1) / flat.sum(dim=1) / 2).sqrt()


def sharpness_ratio(videos: Tensor) -> Tensor:
    """Uncalibrated sharpness per video [B]: (fine-scale edge energy - its expected noise
    energy) / coarse-scale edge energy, outside the watermark box (grown by the blur's
    reach). A blurred edge of width s gives ~sqrt(s^2 + coarse^2) / sqrt(s^2 + fine^2), whatever
    its contrast; divide by the clean-render mean to get ``sharpness``."""
    _check_videos(videos)
    B, C, Fr, H, W = videos.shape
    frames = videos.detach().float().cpu().permute(0, 2, 1, 3, 4)  # [B, F, C, H, W]
    keep = torch.ones(H, W, dtype=torch.bool)
    reach = math.ceil(2 * SHARPNESS_COARSE_SIGMA) + 1
    rows, cols = watermark_box(H, reach)
    keep[rows, cols] = False
    keep_dx, keep_dy = keep[:, 1:] & keep[:, :-1], keep[1:, :] & keep[:-1, :]
    sigma_noise = noise_level(frames, keep_dx)

    def energy(sigma: float) -> Tensor:
        dx, dy = _gradients(frames.reshape(B * Fr, C, H, W), sigma)
        ex = (dx**2).reshape(B, Fr, C, H, W - 1)[..., keep_dx].sum(dim=(1, 2, 3))
        ey = (dy**2).reshape(B, Fr, C, H - 1, W)[..., keep_dy].sum(dim=(1, 2, 3))
        return ex + ey

    pairs = Fr * C * 0.5 * (keep_dx.sum() + keep_dy.sum()).item()
    fine = energy(SHARPNESS_FINE_SIGMA) - sigma_noise**2 * _noise_gain(SHARPNESS_FINE_SIGMA) * pairs
    coarse = energy(SHARPNESS_COARSE_SIGMA)
    return fine.clamp(min=0) / coarse.clamp(min=1e-6)


# ---------------------------------------------------------------------------------------
# All together
# ---------------------------------------------------------------------------------------


def world_metrics(videos: Tensor, prompts: list[str], probes=None, details: bool = False) -> dict:
    """World metrics of generated videos against their prompts (see the module docstring).

    Args:
        videos: [B, 3, F, H, W] in [-1, 1], F and H = W as the probes were trained on
            (the world default: 8 frames of 32x32).
        prompts: B world prompts ("a red circle moving left"); a prompt without a direction
            is left out of ``motion_accuracy``.
        probes: a :class:`mcm.world.probes.WorldProbes`; default: the shipped ones.
        details: also return ``"per_video"``: a list of dicts (predictions, scores).

    Returns:
        {"prompt_accuracy", "shape_accuracy", "colour_accuracy", "motion_accuracy",
        "watermark_score", "sharpness", "frame_fd", "video_fd", "num_videos"} as floats
        (``motion_accuracy`` is NaN when no prompt names a direction; the Frechet
        distances are NaN for fewer than 2 videos).
    """
    _check_videos(videos)
    if len(prompts) != videos.shape[0]:
        raise InputError(
            f"Got {videos.shape[0]} videos but {len(prompts)} prompts; pass one prompt per video."
        )
    probes = probes or load_probes()
    _, _, Fr, H, _ = videos.shape
    if (Fr, H) != (probes.num_frames, probes.size):
        raise InputError(
            f"The probes were trained on {probes.num_frames} frames of {probes.size}x{probes.size}; "
            f"got {Fr} frames of {H}x{H}. Generate world videos at that size."
        )
    truth = [parse_prompt(p) for p in prompts]
    x = videos.detach().float().cpu().clamp(-1, 1)

    frame_out = probes.frame_outputs(x)  # per-frame logits averaged over frames + features
    # Shape and colour from the video probe: it sees all frames at once and reads shapes far
    # more reliably than the frame probe (held-out shape accuracy 0.94 vs 0.60 on clean clips).
    video_out = probes.video_outputs(x)
    shape_pred = [SHAPES[i] for i in video_out["shape"].argmax(dim=1).tolist()]
    colour_pred = [list(COLOURS)[i] for i in video_out["colour"].argmax(dim=1).tolist()]
    shape_ok = torch.tensor([p == t["shape"] for p, t in zip(shape_pred, truth)])
    colour_ok = torch.tensor([p == t["colour"] for p, t in zip(colour_pred, truth)])

    velocity = track_velocity(object_track(x)[0])
    direction_pred = track_direction(velocity)
    with_direction = [i for i, t in enumerate(truth) if t["direction"] is not None]
    motion_ok = torch.tensor([direction_pred[i] == truth[i]["direction"] for i in with_direction])

    watermark = watermark_strength(x)
    sharpness = sharpness_ratio(x) / probes.sharpness_reference
    video_features = video_out["features"]
    nan = float("nan")
    result = {
        "prompt_accuracy": (shape_ok & colour_ok).float().mean().item(),
        "shape_accuracy": shape_ok.float().mean().item(),
        "colour_accuracy": colour_ok.float().mean().item(),
        "motion_accuracy": motion_ok.float().mean().item() if with_direction else nan,
        "watermark_score": watermark.mean().item(),
        "sharpness": sharpness.mean().item(),
        "frame_fd": frechet_distance_to_stats(frame_out["frame_features"], *probes.frame_reference)
        if x.shape[0] >= 2
        else nan,
        "video_fd": frechet_distance_to_stats(video_features, *probes.video_reference)
        if x.shape[0] >= 2
        else nan,
        "num_videos": float(x.shape[0]),
    }
    if details:
        result["per_video"] = [
            {
                "prompt": prompts[i],
                "shape": shape_pred[i],
                "colour": colour_pred[i],
                "direction": direction_pred[i],
                "velocity": velocity[i].tolist(),
                "watermark_score": watermark[i].item(),
                "sharpness": sharpness[i].item(),
            }
            for i in range(x.shape[0])
        ]
    return result


def world_videos(domain: str, num_videos: int, seed: int) -> tuple[Tensor, list[str]]:
    """Seeded world videos [N, 3, F, H, W] and prompts of one look: ``clean_video``,
    ``lowq_video`` or ``cartoon_video`` (clean scenes drawn in the image-only style)."""
    g = torch.Generator().manual_seed(seed)
    if domain == "cartoon_video":
        scenes = [sample_scene(g) for _ in range(num_videos)]
        return torch.stack([render_video(s, style="cartoon") for s in scenes]), [
            s.prompt for s in scenes
        ]
    if domain not in ("clean_video", "lowq_video"):
        raise ValueError(f"Unknown look {domain!r}; use clean_video, lowq_video or cartoon_video.")
    samples = [render_sample(domain, g) for _ in range(num_videos)]
    return torch.stack([s[0] for s in samples]), [s[1] for s in samples]


def domain_table(num_videos: int = 256, seed: int = 0, probes=None) -> dict[str, dict]:
    """World metrics of each data look (the numbers the metrics are calibrated against)::

        python -c "from mcm.world.metrics import domain_table; import json; \\
                   print(json.dumps(domain_table(), indent=1))"
    """
    return {
        domain: world_metrics(*world_videos(domain, num_videos, seed + i), probes)
        for i, domain in enumerate(("clean_video", "lowq_video", "cartoon_video"))
    }
