"""Evaluation-only probe networks of the built-in world (never used in any training loss).

* :class:`FrameProbe` - a small CNN on one frame [N, 3, H, W] -> shape and colour logits,
  and a feature vector (the input of both heads) for the frame Frechet distance.
* :class:`VideoProbe` - a small 3D CNN on a clip [N, 3, F, H, W] -> shape, colour and
  direction logits, and a feature vector for the video Frechet distance.

Both are trained on ground-truth labels with augmentation so that they read every domain
the metrics meet: teacher samples, student samples, the style domain
(:mod:`mcm.world.probe_training`). :func:`load_probes` reads a probe directory back.

Directory layout (``mcm.paths.WORLD_PROBES`` ships one):
``manifest.json`` (configs, training recipe, held-out accuracies, reference protocol),
``frame_probe.safetensors``, ``video_probe.safetensors``, ``reference_stats.safetensors``
(float64 mean and covariance of frame-probe features of ``hq_image`` samples and of
video-probe features of ``clean_video`` samples).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from mcm.paths import WORLD_PROBES
from mcm.world.scenes import (
    COLOURS,
    DEFAULT_FRAMES,
    DEFAULT_SIZE,
    DIRECTIONS,
    SHAPES,
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


class _Probe(nn.Module):
    """A conv body (stages of :func:`_block`), globally average-pooled to features [N, D]
    (D = channels[-1]), and one linear head per label: ``<label>_head``."""

    def __init__(self, config: ProbeConfig, conv, norm, stages, labels: dict[str, tuple]):
        super().__init__()
        self.config = config
        self.body = nn.Sequential(*(m for stage in stages for m in _block(conv, norm, *stage)))
        self.labels = tuple(labels)
        for label, classes in labels.items():
            self.add_module(f"{label}_head", nn.Linear(config.channels[-1], len(classes)))

    def _outputs(self, features: Tensor) -> dict[str, Tensor]:
        heads = {label: getattr(self, f"{label}_head")(features) for label in self.labels}
        return {"features": features, **heads}


class FrameProbe(_Probe):
    """Frame [N, 3, H, W] in [-1, 1] -> {"features" [N, D], "shape" [N, 5], "colour" [N, 6]};
    the features are the globally pooled last conv stage (D = channels[-1])."""

    def __init__(self, config: ProbeConfig | None = None):
        config = config or ProbeConfig()
        c1, c2, c3 = config.channels
        stages = [(3, c1, 1), (c1, c2, 2), (c2, c2, 1), (c2, c3, 2), (c3, c3, 1)]
        labels = {"shape": SHAPES, "colour": COLOURS}
        super().__init__(config, nn.Conv2d, nn.BatchNorm2d, stages, labels)

    def forward(self, frames: Tensor) -> dict[str, Tensor]:
        return self._outputs(self.body(frames).mean(dim=(2, 3)))


class VideoProbe(_Probe):
    """Clip [N, 3, F, H, W] in [-1, 1] -> {"features" [N, D], "shape", "colour", "direction" [N, 4]};
    the input is extended by :func:`motion_channels`, the features are the globally pooled
    last conv stage (D = channels[-1])."""

    def __init__(self, config: ProbeConfig | None = None):
        config = config or ProbeConfig()
        c1, c2, c3 = config.channels
        stages = [(5, c1, (1, 2, 2)), (c1, c2, 2), (c2, c3, 1), (c3, c3, 2)]
        labels = {"shape": SHAPES, "colour": COLOURS, "direction": DIRECTIONS}
        super().__init__(config, nn.Conv3d, nn.BatchNorm3d, stages, labels)

    def forward(self, clips: Tensor) -> dict[str, Tensor]:
        x = torch.cat([clips, motion_channels(clips)], dim=1)  # [N, 5, F, H, W]
        return self._outputs(self.body(x).mean(dim=(2, 3, 4)))


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
                "Build them with mcm.world.probe_training.build_probes(out_dir) (`mcm world "
                "build-probes`) or use the shipped ones."
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
