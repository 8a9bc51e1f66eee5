"""Evaluation-only probe networks of the built-in world (never used in any training loss).

* :class:`FrameProbe` - a small CNN on one frame [N, 3, H, W] -> shape and colour logits,
  and a feature vector (the input of both heads) for the frame Frechet distance.
* :class:`VideoProbe` - a small 3D CNN on a clip [N, 3, F, H, W] -> shape, colour and
  direction logits, and a feature vector for the video Frechet distance.

Both are trained on ground-truth labels with augmentation (:func:`augmented_clip`: clean,
low-quality, cartoon, and randomly blurred / noisy / contrast- and colour-shifted /
smudged / watermarked looks) so that they read every domain the metrics meet: teacher
samples, student samples, the style domain. :func:`build_probes` trains both, measures
their held-out accuracy per domain, caches the reference statistics the metrics compare
against and writes everything to one directory; :func:`load_probes` reads it back.

Directory layout (``mcm.paths.WORLD_PROBES`` ships one):
``manifest.json`` (configs, training recipe, held-out accuracies, reference protocol),
``frame_probe.safetensors``, ``video_probe.safetensors``, ``reference_stats.safetensors``
(float64 mean and covariance of frame-probe features of ``hq_image`` samples and of
video-probe features of ``clean_video`` samples).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from mcm.paths import WORLD_PROBES
from mcm.world.domains import (
    WATERMARK_OPACITY,
    add_watermark,
    degrade,
    gaussian_blur,
    render_sample,
    watermark_alpha,
)
from mcm.world.scenes import (
    COLOURS,
    DEFAULT_FRAMES,
    DEFAULT_SIZE,
    DIRECTIONS,
    SHAPES,
    Scene,
    render_video,
    sample_scene,
)

MANIFEST = "manifest.json"
FRAME_WEIGHTS = "frame_probe.safetensors"
VIDEO_WEIGHTS = "video_probe.safetensors"
REFERENCE_STATS = "reference_stats.safetensors"

# Fixed protocol of the cached reference statistics (documented in the manifest too).
REFERENCE_SAMPLES = 1000
FRAME_REFERENCE_SEED = 20_000  # hq_image samples for frame_fd
VIDEO_REFERENCE_SEED = 20_001  # clean_video samples for video_fd
HELDOUT_SEED = 30_000
HELDOUT_SAMPLES = 400


@dataclass(frozen=True)
class ProbeConfig:
    """Architecture of a probe.

    Args:
        channels: conv widths of the three stages; the last is the size of the feature
            vector (globally pooled) that the heads and the Frechet distances use.
        size: frame side the probe is trained on (pixels).
        num_frames: frames per clip (video probe; recorded for the frame probe too).
    """

    channels: tuple[int, int, int] = (32, 48, 64)
    size: int = DEFAULT_SIZE
    num_frames: int = DEFAULT_FRAMES

    @classmethod
    def from_dict(cls, d: dict) -> ProbeConfig:
        return cls(tuple(d["channels"]), d["size"], d["num_frames"])


def motion_channels(clips: Tensor) -> Tensor:
    """Normal-flow cues [N, 2, F, H, W] of clips [N, 3, F, H, W]: -sum_c I_t I_x and
    -sum_c I_t I_y (brightness constancy I_t = -v . grad I gives their sign = the
    motion's), between each frame and the next (the last pair repeated)."""
    dt = clips[:, :, 1:] - clips[:, :, :-1]
    mid = 0.5 * (clips[:, :, 1:] + clips[:, :, :-1])
    gy, gx = torch.gradient(mid, dim=(-2, -1))
    cues = torch.stack([-(dt * gx).sum(dim=1), -(dt * gy).sum(dim=1)], dim=1)  # [N, 2, F-1, H, W]
    return torch.cat([cues, cues[:, :, -1:]], dim=2)


def _block(conv, norm, c_in: int, c_out: int, stride) -> list[nn.Module]:
    # Batch norm makes these small probes learn shape in a few hundred steps (several
    # times faster than without it or with group norm, measured); in eval mode it is a
    # fixed affine map, so the probes are fixed functions at evaluation time.
    return [conv(c_in, c_out, 3, stride=stride, padding=1, bias=False), norm(c_out), nn.SiLU()]


class FrameProbe(nn.Module):
    """Frame [N, 3, H, W] in [-1, 1] -> {"features" [N, D], "shape" [N, 5], "colour" [N, 6]};
    the features are the globally pooled last conv stage (D = channels[-1])."""

    def __init__(self, config: ProbeConfig | None = None):
        super().__init__()
        self.config = config = config or ProbeConfig()
        c1, c2, c3 = config.channels
        self.body = nn.Sequential(
            *_block(nn.Conv2d, nn.BatchNorm2d, 3, c1, 1),
            *_block(nn.Conv2d, nn.BatchNorm2d, c1, c2, 2),
            *_block(nn.Conv2d, nn.BatchNorm2d, c2, c2, 1),
            *_block(nn.Conv2d, nn.BatchNorm2d, c2, c3, 2),
            *_block(nn.Conv2d, nn.BatchNorm2d, c3, c3, 1),
        )
        self.shape_head = nn.Linear(c3, len(SHAPES))
        self.colour_head = nn.Linear(c3, len(COLOURS))

    def forward(self, frames: Tensor) -> dict[str, Tensor]:
        features = self.body(frames).mean(dim=(2, 3))  # [N, D]
        return {
            "features": features,
            "shape": self.shape_head(features),
            "colour": self.colour_head(features),
        }


class VideoProbe(nn.Module):
    """Clip [N, 3, F, H, W] in [-1, 1] -> {"features" [N, D], "shape", "colour", "direction" [N, 4]};
    the input is extended by :func:`motion_channels`, the features are the globally pooled
    last conv stage (D = channels[-1])."""

    def __init__(self, config: ProbeConfig | None = None):
        super().__init__()
        self.config = config = config or ProbeConfig()
        c1, c2, c3 = config.channels
        self.body = nn.Sequential(
            *_block(nn.Conv3d, nn.BatchNorm3d, 5, c1, (1, 2, 2)),
            *_block(nn.Conv3d, nn.BatchNorm3d, c1, c2, 2),
            *_block(nn.Conv3d, nn.BatchNorm3d, c2, c3, 1),
            *_block(nn.Conv3d, nn.BatchNorm3d, c3, c3, 2),
        )
        self.shape_head = nn.Linear(c3, len(SHAPES))
        self.colour_head = nn.Linear(c3, len(COLOURS))
        self.direction_head = nn.Linear(c3, len(DIRECTIONS))

    def forward(self, clips: Tensor) -> dict[str, Tensor]:
        x = torch.cat([clips, motion_channels(clips)], dim=1)  # [N, 5, F, H, W]
        features = self.body(x).mean(dim=(2, 3, 4))  # [N, D]
        return {
            "features": features,
            "shape": self.shape_head(features),
            "colour": self.colour_head(features),
            "direction": self.direction_head(features),
        }


# ---------------------------------------------------------------------------------------
# Augmentation: every look the metrics may meet, with the ground truth unchanged
# ---------------------------------------------------------------------------------------


def _u(lo: float, hi: float, generator: torch.Generator) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=generator))


def corrupt(video: Tensor, generator: torch.Generator) -> Tensor:
    """A random imperfect look of a clip [3, F, H, W] in [-1, 1] (same shape): blur,
    contrast, brightness, per-channel gain (small: colour names stay true), smooth
    smudges (optionally flickering), a watermark of random opacity, pixel noise."""
    C, Fr, H, W = video.shape
    frames = video.permute(1, 0, 2, 3)  # [F, 3, H, W]
    blur = _u(0.0, 1.4, generator)
    if blur > 0.25:
        frames = gaussian_blur(frames, blur)
    mean = frames.mean(dim=(0, 2, 3), keepdim=True)
    frames = mean + _u(0.5, 1.1, generator) * (frames - mean) + _u(-0.15, 0.15, generator)
    gain = 1 + 0.15 * (2 * torch.rand(1, 3, 1, 1, generator=generator) - 1)
    frames = frames * gain
    if float(torch.rand((), generator=generator)) < 0.5:
        per_frame = float(torch.rand((), generator=generator)) < 0.5
        low = torch.randn(Fr if per_frame else 1, 3, 4, 4, generator=generator)
        smudge = F.interpolate(low, size=(H, W), mode="bicubic", align_corners=False)
        frames = frames + _u(0.0, 0.2, generator) * smudge
    if float(torch.rand((), generator=generator)) < 0.4:
        alpha = watermark_alpha(H) / WATERMARK_OPACITY * _u(0.1, 0.7, generator)
        alpha = gaussian_blur(alpha[None, None], _u(0.3, 1.2, generator))[0, 0]
        frames = add_watermark(frames, alpha)
    frames = frames + _u(0.0, 0.12, generator) * torch.randn(frames.shape, generator=generator)
    return frames.clamp(-1, 1).permute(1, 0, 2, 3)


def augmented_clip(
    scene: Scene, generator: torch.Generator, num_frames: int, size: int, strength: float = 1.0
) -> Tensor:
    """A clip [3, F, H, W] of ``scene`` in a random look: at full ``strength`` 20% clean,
    30% low-quality (the teacher's domain), 50% corrupted; the base render is
    cartoon-styled 20% of the time. Lower strength gives more clean clips (curriculum)."""
    style = "cartoon" if float(torch.rand((), generator=generator)) < 0.2 else "clean"
    video = render_video(scene, num_frames, size, style)
    look = float(torch.rand((), generator=generator))
    if look < 1 - 0.8 * strength:
        return video
    if look < 1 - 0.5 * strength:
        return degrade(video, generator)
    return corrupt(video, generator)


def _labels(scenes: list[Scene]) -> dict[str, Tensor]:
    colours = list(COLOURS)
    directions = list(DIRECTIONS)
    return {
        "shape": torch.tensor([SHAPES.index(s.shape) for s in scenes]),
        "colour": torch.tensor([colours.index(s.colour) for s in scenes]),
        "direction": torch.tensor([directions.index(s.direction) for s in scenes]),
    }


def training_batch(
    batch_size: int, generator: torch.Generator, config: ProbeConfig, strength: float = 1.0
):
    """(clips [B, 3, F, H, W], labels {"shape", "colour", "direction"} [B]) of augmented scenes."""
    scenes = [sample_scene(generator, config.size, config.num_frames) for _ in range(batch_size)]
    clips = torch.stack(
        [augmented_clip(s, generator, config.num_frames, config.size, strength) for s in scenes]
    )
    return clips, _labels(scenes)


# ---------------------------------------------------------------------------------------
# The probes together: what the metrics load
# ---------------------------------------------------------------------------------------


class WorldProbes:
    """The two probes, their reference statistics and the manifest, as loaded by the metrics."""

    def __init__(
        self, frame: FrameProbe, video: VideoProbe, reference: dict[str, Tensor], manifest: dict
    ):
        self.frame = frame.eval().requires_grad_(False)
        self.video = video.eval().requires_grad_(False)
        self.reference = reference
        self.manifest = manifest

    @property
    def size(self) -> int:
        return self.video.config.size

    @property
    def num_frames(self) -> int:
        return self.video.config.num_frames

    @property
    def frame_reference(self) -> tuple[Tensor, Tensor]:
        return self.reference["frame_mu"], self.reference["frame_sigma"]

    @property
    def video_reference(self) -> tuple[Tensor, Tensor]:
        return self.reference["video_mu"], self.reference["video_sigma"]

    @property
    def sharpness_reference(self) -> float:
        return float(self.manifest["reference"]["sharpness_ratio_clean"])

    @torch.no_grad()
    def frame_outputs(self, videos: Tensor, chunk: int = 512) -> dict[str, Tensor]:
        """Frame probe on every frame of videos [B, 3, F, H, W]: per-video logits averaged
        over frames ("shape_logits" [B, 5], "colour_logits" [B, 6]) and per-frame
        "frame_features" [B*F, D]."""
        B, C, Fr, H, W = videos.shape
        frames = videos.permute(0, 2, 1, 3, 4).reshape(B * Fr, C, H, W)
        outs = [self.frame(frames[i : i + chunk]) for i in range(0, B * Fr, chunk)]
        out = {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
        return {
            "shape_logits": out["shape"].reshape(B, Fr, -1).mean(dim=1),
            "colour_logits": out["colour"].reshape(B, Fr, -1).mean(dim=1),
            "frame_features": out["features"],
        }

    @torch.no_grad()
    def video_outputs(self, videos: Tensor, chunk: int = 128) -> dict[str, Tensor]:
        """Video probe on videos [B, 3, F, H, W]: "shape" [B, 5], "colour" [B, 6] logits and
        "features" [B, D]."""
        outs = [self.video(videos[i : i + chunk]) for i in range(0, len(videos), chunk)]
        return {k: torch.cat([o[k] for o in outs]) for k in ("shape", "colour", "features")}

    @torch.no_grad()
    def video_features(self, videos: Tensor, chunk: int = 128) -> Tensor:
        """Video-probe features [B, D] of videos [B, 3, F, H, W]."""
        return torch.cat(
            [self.video(videos[i : i + chunk])["features"] for i in range(0, len(videos), chunk)]
        )

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.contiguous() for k, v in self.frame.state_dict().items()},
            directory / FRAME_WEIGHTS,
        )
        save_file(
            {k: v.contiguous() for k, v in self.video.state_dict().items()},
            directory / VIDEO_WEIGHTS,
        )
        save_file(
            {k: v.to(torch.float64).contiguous() for k, v in self.reference.items()},
            directory / REFERENCE_STATS,
        )
        (directory / MANIFEST).write_text(json.dumps(self.manifest, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | Path = WORLD_PROBES) -> WorldProbes:
        directory = Path(directory)
        missing = [
            n
            for n in (MANIFEST, FRAME_WEIGHTS, VIDEO_WEIGHTS, REFERENCE_STATS)
            if not (directory / n).is_file()
        ]
        if missing:
            raise FileNotFoundError(
                f"World probes not found in {directory} (missing {', '.join(missing)}). "
                "Build them with mcm.world.probes.build_probes(out_dir) or use the shipped ones."
            )
        manifest = json.loads((directory / MANIFEST).read_text())
        frame = FrameProbe(ProbeConfig.from_dict(manifest["frame_probe"]["config"]))
        video = VideoProbe(ProbeConfig.from_dict(manifest["video_probe"]["config"]))
        frame.load_state_dict(load_file(directory / FRAME_WEIGHTS))
        video.load_state_dict(load_file(directory / VIDEO_WEIGHTS))
        return cls(frame, video, load_file(directory / REFERENCE_STATS), manifest)


_CACHE: dict[str, WorldProbes] = {}


def load_probes(directory: str | Path = WORLD_PROBES) -> WorldProbes:
    """The probes in ``directory`` (default: the shipped ones), loaded once per process."""
    key = str(Path(directory).resolve())
    if key not in _CACHE:
        _CACHE[key] = WorldProbes.from_pretrained(directory)
    return _CACHE[key]


# ---------------------------------------------------------------------------------------
# Building: train, measure, cache the references
# ---------------------------------------------------------------------------------------


def _cosine_lr(step: int, steps: int, peak: float, warmup: int = 50) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _domain_batch(domain: str, n: int, seed: int, config: ProbeConfig):
    """n samples of a world domain (videos [n, 3, F, H, W] or images [n, 3, H, W]) and labels."""
    g = torch.Generator().manual_seed(seed)
    samples = [render_sample(domain, g, config.size, config.num_frames) for _ in range(n)]
    return torch.stack([s[0] for s in samples]), _labels([s[2] for s in samples])


@torch.no_grad()
def heldout_accuracy(
    probes: WorldProbes, n: int = HELDOUT_SAMPLES, seed: int = HELDOUT_SEED
) -> dict:
    """Accuracy of each probe head per world domain on n fresh samples (seeded)."""
    config = probes.video.config
    result: dict[str, dict[str, float]] = {"frame_probe": {}, "video_probe": {}}
    for i, domain in enumerate(("clean_video", "lowq_video", "hq_image", "style_image")):
        x, labels = _domain_batch(domain, n, seed + i, config)
        frame_x = x if x.ndim == 4 else x[:, :, 0]  # first frame of each clip
        out = probes.frame(frame_x)
        result["frame_probe"][domain] = {
            k: (out[k].argmax(dim=1) == labels[k]).float().mean().item()
            for k in ("shape", "colour")
        }
        if x.ndim == 5:
            out = probes.video(x)
            result["video_probe"][domain] = {
                k: (out[k].argmax(dim=1) == labels[k]).float().mean().item()
                for k in ("shape", "colour", "direction")
            }
    return result


@torch.no_grad()
def reference_statistics(
    probes: WorldProbes, n: int = REFERENCE_SAMPLES
) -> tuple[dict[str, Tensor], float]:
    """Float64 (mu, sigma) of frame-probe features on n hq_image samples and of video-probe
    features on n clean_video samples (fixed seeds), and the mean uncalibrated sharpness
    ratio of those clean videos."""
    from mcm.evaluation.frechet import gaussian_stats
    from mcm.world.metrics import sharpness_ratio

    config = probes.video.config
    images, _ = _domain_batch("hq_image", n, FRAME_REFERENCE_SEED, config)
    videos, _ = _domain_batch("clean_video", n, VIDEO_REFERENCE_SEED, config)
    frame_mu, frame_sigma = gaussian_stats(
        torch.cat([probes.frame(c)["features"] for c in images.split(256)])
    )
    video_mu, video_sigma = gaussian_stats(probes.video_features(videos))
    stats = {
        "frame_mu": frame_mu,
        "frame_sigma": frame_sigma,
        "video_mu": video_mu,
        "video_sigma": video_sigma,
    }
    return stats, sharpness_ratio(videos).mean().item()


def _strength(step: int, steps: int) -> float:
    # Curriculum: clean (and cartoon) clips for the first 30% of the steps, where shape is
    # learnt fastest (measured), then augmentation ramps up to full strength at 70%.
    return min(1.0, max(0.0, (step - 0.3 * steps) / (0.4 * steps)))


class _ProbeBatches(torch.utils.data.IterableDataset):
    """Step i's batch (clips [B, 3, F, H, W], frame indices [B, k], labels) drawn from its
    own generator seeded by (seed, i): the same batches with any number of workers."""

    def __init__(self, steps: int, batch_size: int, seed: int, config: ProbeConfig, k: int):
        self.steps, self.batch_size, self.seed, self.config, self.k = steps, batch_size, seed, config, k  # fmt: skip

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        start, stride = (0, 1) if info is None else (info.id, info.num_workers)
        for step in range(start, self.steps, stride):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
            clips, labels = training_batch(
                self.batch_size, g, self.config, _strength(step, self.steps)
            )
            idx = torch.randint(self.config.num_frames, (self.batch_size, self.k), generator=g)
            yield clips, idx, labels


def _train_jointly(frame: FrameProbe, video: VideoProbe, steps: int, batch_size: int, lr: float,
                   seed: int, device: torch.device, frames_per_clip: int = 4, num_workers: int = 0) -> dict:  # fmt: skip
    """Cross-entropy training of both probes on the same fresh augmented batches (rendering
    is the costly part, so ``num_workers`` processes may render them): the video probe on
    the clips, the frame probe on ``frames_per_clip`` random frames of each clip."""
    config = video.config
    models = {"frame": frame.to(device).train(), "video": video.to(device).train()}
    heads = {"frame": ("shape", "colour"), "video": ("shape", "colour", "direction")}
    optimisers = {
        k: torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=1e-4) for k, m in models.items()
    }
    losses: dict[str, list[float]] = {"frame": [], "video": []}
    batches = torch.utils.data.DataLoader(
        _ProbeBatches(steps, batch_size, seed, config, frames_per_clip),
        batch_size=None,
        num_workers=num_workers,
        prefetch_factor=4 if num_workers else None,
    )
    for step, (clips, idx, labels) in enumerate(batches):
        frames = clips[torch.arange(batch_size)[:, None], :, idx].flatten(0, 1)  # [B*k, 3, H, W]
        inputs = {"frame": frames, "video": clips}
        targets = {
            "frame": {k: v.repeat_interleave(frames_per_clip) for k, v in labels.items()},
            "video": labels,
        }
        for name, model in models.items():
            for group in optimisers[name].param_groups:
                group["lr"] = _cosine_lr(step, steps, lr)
            out = model(inputs[name].to(device, non_blocking=True))
            loss = sum(F.cross_entropy(out[h], targets[name][h].to(device)) for h in heads[name])
            optimisers[name].zero_grad(set_to_none=True)
            loss.backward()
            optimisers[name].step()
            losses[name].append(loss.detach())
    return {k: torch.stack(v).float().cpu().tolist() for k, v in losses.items()}


def build_probes(
    out_dir: str | Path,
    steps: int = 1500,
    device: str | torch.device = "cpu",
    seed: int = 0,
    batch_size: int = 16,
    lr: float = 3e-3,
    config: ProbeConfig | None = None,
    reference_samples: int = REFERENCE_SAMPLES,
    heldout_samples: int = HELDOUT_SAMPLES,
    num_workers: int = 0,
) -> WorldProbes:
    """Train the frame and video probes on augmented ground truth, measure their held-out
    accuracy per domain, cache the reference statistics and save everything to ``out_dir``.

    Args:
        out_dir: directory to write (see the module docstring for its layout).
        steps: optimiser steps per probe.
        device: where to train (data is rendered on CPU).
        seed: seeds the one generator all training draws come from.
        batch_size: clips per step (the frame probe sees 4 random frames of each).
        lr: peak AdamW learning rate.
        config: the probes' architecture (default ``ProbeConfig()``).
        reference_samples: samples behind each cached reference statistic.
        heldout_samples: fresh samples per domain for the recorded held-out accuracies.
        num_workers: processes rendering the training batches (the result does not
            depend on it: step i's batch comes from a generator seeded by (seed, i)).
    """
    if steps < 1 or batch_size < 2:
        raise ValueError(
            f"build_probes needs steps >= 1 and batch_size >= 2, got {steps}, {batch_size}."
        )
    device = torch.device(device)
    config = config or ProbeConfig()
    torch.manual_seed(seed)  # parameter initialisation
    frame, video = FrameProbe(config), VideoProbe(config)
    start = time.perf_counter()
    losses = _train_jointly(
        frame, video, steps, batch_size, lr, seed, device, num_workers=num_workers
    )
    train_seconds = time.perf_counter() - start
    frame.cpu()
    video.cpu()
    tail = max(1, steps // 20)
    manifest = {
        "frame_probe": {"config": asdict(config), "final_loss": sum(losses["frame"][-tail:]) / tail},
        "video_probe": {"config": asdict(config), "final_loss": sum(losses["video"][-tail:]) / tail},
        "training": {
            "steps": steps, "batch_size": batch_size, "frames_per_clip": 4, "seed": seed, "lr": lr,
            "batches": "step i's batch from torch.Generator seeded by seed * 1000003 + i",
            "optimiser": "AdamW (weight decay 1e-4), warm-up 50 steps then cosine",
            "augmentation": "augmented_clip: 20% clean, 30% degrade(), 50% corrupt(); 20% cartoon base; "
            "strength 0 for 30% of the steps, then ramps to 1 at 70%",
            "device": str(device), "torch": torch.__version__, "train_seconds": round(train_seconds, 1),
        },
    }  # fmt: skip
    probes = WorldProbes(frame, video, {}, manifest)
    reference, sharpness_clean = reference_statistics(probes, reference_samples)
    probes.reference = reference
    manifest["reference"] = {
        "samples": reference_samples,
        "frame": f"frame-probe features of hq_image samples, torch.Generator seed {FRAME_REFERENCE_SEED}",
        "video": f"video-probe features of clean_video samples, torch.Generator seed {VIDEO_REFERENCE_SEED}",
        "sharpness_ratio_clean": sharpness_clean,
    }
    manifest["heldout_accuracy"] = {
        "samples_per_domain": heldout_samples,
        "seed": HELDOUT_SEED,
        **heldout_accuracy(probes, heldout_samples),
    }
    probes.save_pretrained(out_dir)
    return probes
