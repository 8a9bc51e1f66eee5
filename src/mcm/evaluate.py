"""Evaluate a folder of videos: the world metrics, FVD, CLIPSIM and frame FID, each number
stored with its protocol (what `mcm evaluate` runs).

The result (written as metrics.json by the command)::

    {"videos": DIR, "num_videos": B, "num_frames": F, "size": [H, W], "prompts": FILE,
     "metrics": {"fvd": {"value", "feature_network", "weights": {"path", "sha256", ...},
                         "num_videos", "num_frames", "resolution", "resize_policy", ...},
                 "clipsim": {...}, "frame_fid": {...}, "world/prompt_accuracy": {...}, ...}}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

from mcm.errors import InputError
from mcm.evaluation.clipsim import CLIPSimilarity
from mcm.evaluation.frame_fid import (
    ImageFeatures,
    frame_fid,
    image_folder_features,
    image_paths,
    video_frames,
)
from mcm.evaluation.fvd import I3DFeatureExtractor, frechet_video_distance
from mcm.evaluation.inputs import read_prompts, read_videos
from mcm.evaluation.protocol import metric_record, sha256_file
from mcm.paths import WORLD_PROBES
from mcm.world.metrics import world_metrics
from mcm.world.probes import FRAME_WEIGHTS, REFERENCE_STATS, VIDEO_WEIGHTS, load_probes

METRICS = ("world", "fvd", "clipsim", "frame_fid")


@dataclass
class EvaluationSettings:
    """What to compute and with which networks (every field is a `mcm evaluate` flag).

    Attributes:
        metrics: any of ``world``, ``fvd``, ``clipsim``, ``frame_fid``.
        prompts: prompt file (text, one per line in sorted file order, or JSON {file: prompt});
            needed by ``world`` and ``clipsim``.
        reference: folder of reference videos (``fvd``).
        reference_images: folder of reference images (``frame_fid``).
        i3d: I3D weights file (``fvd``): TF-Hub TorchScript port or VideoGPT state dict.
        i3d_format: ``auto``, ``torchscript`` or ``state_dict``.
        i3d_features: ``logits`` (400-d) or ``pool`` (1024-d; state-dict layout only).
        i3d_call: keyword arguments of a TorchScript I3D's call (None: the StyleGAN-V ones).
        fvd_resolution: I3D input size (224 standard; smaller only for quick checks).
        fvd_input_scale: pixels in [-1, 1] times this (0.5: VideoGPT's [-0.5, 0.5]).
        fvd_min_frames: clips shorter than this are lengthened (I3D's minimum is 9).
        fvd_temporal_policy: ``repeat`` (each frame) or ``loop`` (the clip).
        clip: CLIPModel directory or cached hub id (``clipsim``).
        fid_features: CLIPModel / CLIPVisionModel / Dinov2Model directory or cached hub id.
        fid_resolution: DINOv2 input size (CLIP uses its own).
        world_probes: world probe directory (None: the shipped probes).
        batch_size: videos per I3D pass (frames per pass are 8x this).
        device: ``cpu`` or ``cuda``.
    """

    metrics: tuple[str, ...] = ("world",)
    prompts: str | None = None
    reference: str | None = None
    reference_images: str | None = None
    i3d: str | None = None
    i3d_format: str = "auto"
    i3d_features: str = "logits"
    i3d_call: dict | None = field(default=None)
    fvd_resolution: int = 224
    fvd_input_scale: float = 1.0
    fvd_min_frames: int = 9
    fvd_temporal_policy: str = "repeat"
    clip: str | None = None
    fid_features: str | None = None
    fid_resolution: int = 224
    world_probes: str | None = None
    batch_size: int = 8
    device: str = "cpu"

    def validate(self) -> None:
        """Fail before any work when a metric lacks its inputs (the error names the flag)."""
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise InputError(
                f"Unknown metric(s) {unknown}; choose from {', '.join(METRICS)} (comma-separated)."
            )
        needs = {
            "world": [("prompts", "--prompts FILE")],
            "clipsim": [("prompts", "--prompts FILE"), ("clip", "--clip PATH_OR_ID")],
            "fvd": [("reference", "--reference DIR (reference videos)"), ("i3d", "--i3d WEIGHTS")],
            "frame_fid": [
                ("reference_images", "--reference-images DIR (reference images)"),
                ("fid_features", "--fid-features PATH_OR_ID (CLIP or DINOv2)"),
            ],
        }
        for metric in self.metrics:
            for attr, flag in needs[metric]:
                if getattr(self, attr) is None:
                    raise InputError(f"Metric {metric!r} needs {flag}.")


def evaluate_folder(videos_dir: str | Path, settings: EvaluationSettings) -> dict:
    """Read the videos (and prompts) and compute the chosen metrics with their protocols."""
    settings.validate()
    paths, videos = read_videos(videos_dir)
    prompts = read_prompts(settings.prompts, paths) if settings.prompts else None
    B, _, Fr, H, W = videos.shape
    if B < 2 and ("fvd" in settings.metrics or "frame_fid" in settings.metrics):
        raise InputError(f"FVD and frame FID need at least 2 videos; {str(videos_dir)!r} has {B}.")
    result = {
        "videos": str(Path(videos_dir).resolve()),
        "num_videos": B,
        "num_frames": Fr,
        "size": [H, W],
        "prompts": str(Path(settings.prompts).resolve()) if settings.prompts else None,
        "metrics": {},
    }
    if "world" in settings.metrics:
        result["metrics"].update(world_records(videos, prompts, settings.world_probes))
    if "fvd" in settings.metrics:
        result["metrics"]["fvd"] = fvd_record(videos, settings)
    if "clipsim" in settings.metrics:
        result["metrics"]["clipsim"] = clipsim_record(videos, prompts, paths, settings)
    if "frame_fid" in settings.metrics:
        result["metrics"]["frame_fid"] = frame_fid_record(videos, settings)
    return result


def fvd_record(videos: Tensor, settings: EvaluationSettings) -> dict:
    """FVD of ``videos`` [B, 3, F, H, W] against the reference folder, with its protocol."""
    _, reference = read_videos(settings.reference)
    if reference.shape[0] < 2:
        raise InputError(
            f"FVD needs at least 2 reference videos; {settings.reference!r} has {reference.shape[0]}."
        )
    extractor = I3DFeatureExtractor.from_pretrained(
        settings.i3d,
        format=settings.i3d_format,
        features=settings.i3d_features,
        call_kwargs=settings.i3d_call,
        resolution=settings.fvd_resolution,
        input_scale=settings.fvd_input_scale,
        min_frames=settings.fvd_min_frames,
        temporal_policy=settings.fvd_temporal_policy,
        batch_size=settings.batch_size,
        device=settings.device,
    )
    value = frechet_video_distance(extractor(videos), extractor(reference))
    fed = extractor.preprocess(videos[:1]).shape[2]
    protocol = extractor.describe()
    return metric_record(
        value,
        protocol.pop("feature_network"),
        protocol.pop("weights"),
        num_videos=videos.shape[0],
        num_frames=videos.shape[2],
        resolution=f"{settings.fvd_resolution}x{settings.fvd_resolution}x{fed}",
        resize_policy=protocol.pop("resize_policy"),
        **protocol,
        reference={
            "path": str(Path(settings.reference).resolve()),
            "num_videos": reference.shape[0],
            "num_frames": reference.shape[2],
            "size": list(reference.shape[3:]),
        },
    )


def clipsim_record(
    videos: Tensor, prompts: list[str], paths: list[Path], settings: EvaluationSettings
) -> dict:
    """Mean CLIPSIM of ``videos`` and their prompts, with its protocol and per-video scores."""
    scorer = CLIPSimilarity.from_pretrained(
        settings.clip, batch_size=8 * settings.batch_size, device=settings.device
    )
    per_video = scorer.per_video(videos, prompts)
    protocol = scorer.describe()
    return metric_record(
        per_video.mean().item(),
        protocol["feature_network"],
        protocol["weights"],
        num_videos=videos.shape[0],
        num_frames=videos.shape[2],
        resolution=protocol["resolution"],
        resize_policy=protocol["resize_policy"],
        per_video={p.name: round(s, 4) for p, s in zip(paths, per_video.tolist())},
    )


def frame_fid_record(videos: Tensor, settings: EvaluationSettings) -> dict:
    """Frechet distance of all frames' features to the reference images', with its protocol."""
    features = ImageFeatures.from_pretrained(
        settings.fid_features,
        resolution=settings.fid_resolution,
        batch_size=8 * settings.batch_size,
        device=settings.device,
    )
    generated = features(video_frames(videos))
    reference = image_folder_features(features, settings.reference_images)
    protocol = features.describe()
    return metric_record(
        frame_fid(generated, reference),
        protocol["feature_network"],
        protocol["weights"],
        num_videos=videos.shape[0],
        num_frames=videos.shape[2],
        resolution=protocol["resolution"],
        resize_policy=protocol["resize_policy"] + "; every frame of every video",
        num_generated_frames=generated.shape[0],
        reference={
            "path": str(Path(settings.reference_images).resolve()),
            "num_images": len(image_paths(settings.reference_images)),
        },
    )


# What each world metric is computed from (mcm.world.metrics); None: no network involved.
WORLD_SOURCES = {
    "prompt_accuracy": (
        "frame",
        "world frame probe: shape and colour logits averaged over frames, both right",
    ),
    "shape_accuracy": ("frame", "world frame probe: shape logits averaged over frames"),
    "colour_accuracy": ("frame", "world frame probe: colour logits averaged over frames"),
    "motion_accuracy": (
        None,
        "object track (no network): background-difference centroid, least-squares direction",
    ),
    "watermark_score": (
        None,
        "known watermark glyph opacity in the temporal-median frame (no network)",
    ),
    "sharpness": (None, "fine/coarse edge-energy ratio over the clean-render mean (no network)"),
    "frame_fd": (
        "frame",
        "world frame probe features of every frame vs the high-quality image reference stats",
    ),
    "video_fd": ("video", "world video probe features vs the held-out clean-video reference stats"),
}


def world_records(videos: Tensor, prompts: list[str], probes_dir: str | None) -> dict:
    """The world metrics (:func:`mcm.world.metrics.world_metrics`), one record per number."""
    directory = Path(probes_dir) if probes_dir else WORLD_PROBES
    values = world_metrics(videos, prompts, probes=load_probes(directory))
    _, _, Fr, H, W = videos.shape
    files = {"frame": FRAME_WEIGHTS, "video": VIDEO_WEIGHTS}
    records = {}
    for name, value in values.items():
        if name == "num_videos":
            continue
        probe, network = WORLD_SOURCES.get(name, (None, f"mcm.world.metrics: {name}"))
        if probe is None:
            weights = {"path": None, "sha256": None, "note": "no network"}
        else:
            weights = {
                "path": str((directory / files[probe]).resolve()),
                "sha256": sha256_file(directory / files[probe]),
            }
            if name.endswith("_fd"):
                weights["reference_stats_sha256"] = sha256_file(directory / REFERENCE_STATS)
        records[f"world/{name}"] = metric_record(
            value,
            network,
            weights,
            num_videos=videos.shape[0],
            num_frames=Fr,
            resolution=f"{H}x{W}x{Fr}",
            resize_policy="none: the world metrics read the world's native size",
        )
    return records
