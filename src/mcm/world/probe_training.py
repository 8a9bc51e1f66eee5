"""Training the world's probes: augmented ground-truth batches, the probe recipe, held-out
accuracy per domain and the reference statistics the metrics compare against.

:func:`build_probes` trains the frame and the video probe jointly (the one trainer,
:class:`ProbeRecipe`), measures their held-out accuracy per domain, caches the reference
statistics and writes everything to one directory that :func:`mcm.world.probes.load_probes`
reads back.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from mcm.errors import InputError
from mcm.evaluation.frechet import gaussian_stats
from mcm.training import checkpoint as ckpt
from mcm.training.config import TrainLoopConfig
from mcm.training.optim import Optimization, make_optimizer, make_scheduler
from mcm.training.trainer import Trainer
from mcm.world.domains import (
    WATERMARK_OPACITY,
    add_watermark,
    degrade,
    gaussian_blur,
    render_sample,
    watermark_alpha,
)
from mcm.world.metrics import sharpness_ratio
from mcm.world.probes import (
    FRAME_REFERENCE_SEED,
    HELDOUT_SAMPLES,
    HELDOUT_SEED,
    REFERENCE_SAMPLES,
    VIDEO_REFERENCE_SEED,
    FrameProbe,
    ProbeConfig,
    VideoProbe,
    WorldProbes,
)
from mcm.world.scenes import COLOURS, DIRECTIONS, SHAPES, Scene, render_video, sample_scene

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
# Building: train, measure, cache the references
# ---------------------------------------------------------------------------------------


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
    own generator seeded by (seed, i), for i from ``start``: the same batches with any
    number of workers, and after a resume."""

    def __init__(self, start: int, steps: int, batch_size: int, seed: int, config, k: int):
        self.start, self.steps, self.batch_size = start, steps, batch_size
        self.seed, self.config, self.k = seed, config, k

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        offset, stride = (0, 1) if info is None else (info.id, info.num_workers)
        for step in range(self.start + offset, self.steps, stride):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
            clips, labels = training_batch(
                self.batch_size, g, self.config, _strength(step, self.steps)
            )
            idx = torch.randint(self.config.num_frames, (self.batch_size, self.k), generator=g)
            yield clips, idx, labels


class ProbeRecipe(Trainer):
    """Cross-entropy training of both probes on the same fresh augmented batches (rendering
    is the costly part, so ``num_workers`` processes may render them): the video probe on
    the clips, the frame probe on ``frames_per_clip`` random frames of each clip. AdamW
    (weight decay 1e-4) per probe, 50 warm-up steps then a cosine decay."""

    name = "probes"
    HEADS = {"frame": ("shape", "colour"), "video": ("shape", "colour", "direction")}

    def __init__(self, models: dict, steps, batch_size, lr, seed, device, out, num_workers=0):
        loop = TrainLoopConfig(
            seed=seed,
            max_steps=steps,
            lr_schedule="cosine",
            warmup_steps=min(50, steps),
            checkpoint_every=0,
            keep_checkpoints=1,
            log_every=max(1, steps // 20),
            tracker="none",
            progress=False,
            export=False,
        )
        super().__init__(loop, out)
        self.models, self.device = models, torch.device(device)
        self.batch_size, self.lr, self.num_workers = batch_size, lr, num_workers
        self.frames_per_clip = 4
        self.losses: dict[str, list[torch.Tensor]] = {"frame": [], "video": []}

    def setup(self) -> None:
        self.make_accelerator(cpu=self.device.type == "cpu")
        for name, model in self.models.items():
            params = list(model.to(self.device).train().parameters())
            optim = make_optimizer(params, self.lr, weight_decay=1e-4)
            schedule = make_scheduler(optim, "cosine", self.loop.warmup_steps, self.loop.max_steps)
            self.optimizers[name] = Optimization(optim, schedule, params)
        self._batches = None
        super().setup()

    def next_batch(self):
        if self._batches is None:  # built here: a resumed run starts at its step
            dataset = _ProbeBatches(
                self.step,
                self.loop.max_steps,
                self.batch_size,
                self.loop.seed,
                self.models["video"].config,
                self.frames_per_clip,
            )
            self._batches = iter(
                torch.utils.data.DataLoader(
                    dataset,
                    batch_size=None,
                    num_workers=self.num_workers,
                    prefetch_factor=4 if self.num_workers else None,
                )
            )
        return next(self._batches)

    def _loss_step(self, batch) -> dict | None:
        clips, idx, labels = batch
        k = self.frames_per_clip
        frames = clips[torch.arange(len(clips))[:, None], :, idx].flatten(0, 1)  # [B*k, 3, H, W]
        inputs = {"frame": frames, "video": clips}
        targets = {"frame": {h: v.repeat_interleave(k) for h, v in labels.items()}, "video": labels}
        terms = {}
        for name, model in self.models.items():
            out = model(inputs[name].to(self.device, non_blocking=True))
            loss = sum(
                F.cross_entropy(out[h], targets[name][h].to(self.device)) for h in self.HEADS[name]
            )
            if not self.backward(loss):
                return None
            self.losses[name].append(loss.detach())
            terms[f"loss_{name}"] = loss.detach()
        return terms

    def _checkpoint_weights(self) -> dict:
        return {name: model.state_dict() for name, model in self.models.items()}

    def _load_weights(self, path: Path) -> None:
        for name, model in self.models.items():
            model.load_state_dict(ckpt.load_weights(path / f"{name}.safetensors"))

    def final_loss(self, name: str) -> float:
        """The mean loss of ``name``'s probe over the last 5% of the steps."""
        tail = self.losses[name][-max(1, self.loop.max_steps // 20) :]
        return torch.stack(tail).float().mean().item()


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
        raise InputError(
            f"build_probes needs steps >= 1 and batch_size >= 2, got {steps}, {batch_size}."
        )
    device = torch.device(device)
    config = config or ProbeConfig()
    torch.manual_seed(seed)  # parameter initialisation
    frame, video = FrameProbe(config), VideoProbe(config)
    recipe = ProbeRecipe(
        {"frame": frame, "video": video},
        steps,
        batch_size,
        lr,
        seed,
        device,
        Path(str(out_dir) + ".checkpoints"),
        num_workers,
    )
    recipe.setup()
    recipe.train()
    train_seconds = recipe.stats["wall_s"]
    frame.cpu().eval()
    video.cpu().eval()
    manifest = {
        "frame_probe": {"config": asdict(config), "final_loss": recipe.final_loss("frame")},
        "video_probe": {"config": asdict(config), "final_loss": recipe.final_loss("video")},
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
