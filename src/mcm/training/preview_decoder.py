"""Distilling a preview decoder (:class:`mcm.models.PreviewDecoder`) from a teacher's VAE,
as a recipe of the one trainer (``mcm decoder``).

Each step takes the latents of a batch of frames - the frames of the training clips
(``data.video``, or its latent cache) and, when the config has them, the high-quality
images (``data.images``), whose look the distilled student takes on - and fits the
decoder's output to the teacher VAE's decode of the same latents (MSE in pixels): the
decoder learns the VAE's decode, not the data. The latents are the posterior mean, as the
distillation encodes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from mcm.data import build_image_loader, build_video_loader
from mcm.models import PreviewDecoder, load_teacher
from mcm.training import checkpoint as ckpt
from mcm.training.config import TrainConfig, TrainLoopConfig
from mcm.training.optim import Optimization, make_optimizer, make_scheduler
from mcm.training.trainer import Trainer


@dataclass(frozen=True)
class PreviewDecoderConfig:
    """What ``mcm decoder`` trains for how long (the teacher and data come from a
    train config)."""

    steps: int = 2000
    batch_size: int = 64  # frames per step
    lr: float = 1e-3
    warmup_steps: int = 100
    width: int = 64  # channels of every decoder stage (TAESD: 64)
    blocks: int = 3  # residual blocks per stage (TAESD: 3)
    seed: int = 0
    max_seconds: float | None = None
    checkpoint_every: int = 500
    progress: bool = True


class PreviewDecoderRecipe(Trainer):
    """Trains a :class:`PreviewDecoder` for ``train_cfg.model.teacher``'s VAE.

    Args:
        train_cfg: the teacher (``model``) and the frames (``data.video``, ``data.images``).
        cfg: steps, batch and decoder size.
        output_dir: where the decoder (``save_pretrained``), checkpoints and train.log go.
        resume: continue from the latest checkpoint in ``output_dir``.
    """

    name = "preview_decoder"

    def __init__(
        self,
        train_cfg: TrainConfig,
        cfg: PreviewDecoderConfig,
        output_dir: str | Path,
        resume: bool = False,
    ):
        loop = TrainLoopConfig(
            seed=cfg.seed,
            max_steps=cfg.steps,
            lr=cfg.lr,
            warmup_steps=cfg.warmup_steps,
            lr_schedule="cosine",
            max_grad_norm=1.0,
            checkpoint_every=cfg.checkpoint_every,
            keep_checkpoints=1,
            log_every=50,
            tracker="none",
            max_seconds=cfg.max_seconds,
            progress=cfg.progress,
            export=False,
        )
        out = Path(output_dir)
        resume_from = "latest" if resume and ckpt.list_checkpoints(out) else None
        super().__init__(loop, out, resume_from, config=None)
        self.train_cfg, self.cfg = train_cfg, cfg

    def setup(self) -> None:
        m, data = self.train_cfg.model, self.train_cfg.data
        acc = self.make_accelerator(cpu=not torch.cuda.is_available())
        self.generator = torch.Generator().manual_seed(self.cfg.seed)
        bundle = load_teacher(
            m.teacher,
            device=acc.device,
            dtype_policy=m.frozen_dtype,
            vae_chunk_size=m.vae_chunk_size,
        )
        self.vae = bundle.vae
        del bundle  # only the VAE is needed
        self.decoder = PreviewDecoder.for_vae(self.vae, self.cfg.width, self.cfg.blocks)
        self.decoder.to(acc.device).train()
        params = list(self.decoder.model.decoder.parameters())
        self.decoder.model.encoder.requires_grad_(False)
        optim = make_optimizer(params, self.cfg.lr, weight_decay=0.0)
        schedule = make_scheduler(optim, "cosine", self.cfg.warmup_steps, self.cfg.steps)
        self.optimizers["main"] = Optimization(optim, schedule, params, 1.0)

        images = data.images is not None
        frames = data.video.num_frames
        per_source = self.cfg.batch_size // 2 if images else self.cfg.batch_size
        clips = max(1, math.ceil(per_source / frames))
        self.video_loader = build_video_loader(data.video, clips, seed=self.cfg.seed)
        self.image_loader = (
            build_image_loader(data.images, self.cfg.batch_size - per_source, seed=self.cfg.seed)
            if images
            else None
        )
        self._iters: dict = {}
        super().setup()

    def _next(self, name: str, loader):
        if name not in self._iters:
            self._iters[name] = iter(loader)
        return next(self._iters[name])

    @torch.no_grad()
    def next_batch(self) -> torch.Tensor:
        """Latent frames [N, C, 1, h, w]: N = cfg.batch_size, from clips and images."""
        dev = self.accelerator.device
        raw = self._next("video", self.video_loader)
        latents = (
            raw["latents"].to(dev) if "latents" in raw else self.vae.encode(raw["video"].to(dev))
        )
        B, C, Fr, h, w = latents.shape
        frames = latents.permute(0, 2, 1, 3, 4).reshape(B * Fr, C, 1, h, w)
        n_video = self.cfg.batch_size - (self.image_loader.batch_size if self.image_loader else 0)
        pick = torch.randperm(frames.shape[0], generator=self.generator)[:n_video]
        out = [frames[pick.to(dev)]]
        if self.image_loader is not None:
            images = self._next("images", self.image_loader)["image"].to(dev)
            out.append(self.vae.encode(images[:, :, None]))
        return torch.cat(out)

    def _loss_step(self, latents: torch.Tensor) -> dict | None:
        with torch.no_grad():
            target = self.vae.decode(latents)
        loss = F.mse_loss(self.decoder.decode(latents), target)
        return {"loss": loss.detach()} if self.backward(loss) else None

    def _checkpoint_weights(self) -> dict:
        return {"decoder": self.decoder.model.state_dict()}

    def _load_weights(self, path: Path) -> None:
        self.decoder.model.load_state_dict(ckpt.load_weights(path / "decoder.safetensors"))

    def finish(self) -> None:
        """The decoder, ``save_pretrained`` into ``output_dir``."""
        if self.accelerator.is_main_process:
            self.decoder.model.eval()
            self.decoder.save_pretrained(self.out)
