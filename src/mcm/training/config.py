"""The training config: typed dataclasses, one per section of the YAML file.

Each field's comment is its documentation. YAML sets only what differs from these
defaults (the reference recipe at a small scale); `--set section.key=value` overrides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mcm.data.config import ImageDataConfig, VideoDataConfig
from mcm.motion import MOTION_REPRESENTATIONS
from mcm.training.config_io import ConfigError, load_config
from mcm.training.distiller import MCMConfig

FROZEN_DTYPES = ("auto", "fp32", "fp16", "bf16")
MIXED_PRECISION = ("no", "fp16", "bf16")


@dataclass
class ModelConfig:
    teacher: str = "world"  # diffusers directory, hub id, or "world" (the shipped world teacher)
    separate_teacher: bool = (
        False  # keep a frozen teacher copy instead of disabling the LoRA (2x UNet memory)
    )
    lora_rank: int = 64  # LoRA rank r
    lora_alpha: int = 64  # LoRA alpha (scale = alpha / r)
    lora_dropout: float = 0.0
    lora_target_modules: list[str] | None = (
        None  # None: the reference modules for the teacher's family
    )
    gradient_checkpointing: bool = False  # trade compute for activation memory in the UNet
    frozen_dtype: str = (
        "auto"  # dtype of frozen parts: auto (bf16 on GPU, fp32 on CPU), fp32, fp16, bf16
    )
    vae_chunk_size: int = 8  # frames per VAE encode/decode call


@dataclass
class MethodConfig(MCMConfig):
    motion: str = "learnable"  # motion representation: raw, diff, lowfreq, highfreq, corr_local, corr_global, learnable, learnable_heavy
    motion_ema_decay: float = 0.95  # EMA of the learnable head used on the target side
    motion_head_lr: float | None = None  # lr of the learnable head (None: train.lr, the paper's)
    target_ema_decay: float = 0.95  # EMA of the LoRA when target == "ema"


@dataclass
class DiscriminatorConfig:
    enabled: bool = True  # off: no adversarial loss (and no mixed trajectories)
    backbone: str = (
        "latent"  # "latent" (frozen teacher UNet encoder, no VAE decode) or "dinov2" (pixel space)
    )
    dinov2: str = "facebook/dinov2-small"  # local path or hub id of a transformers Dinov2Model (backbone: dinov2)
    taps: list[int] = field(
        default_factory=lambda: [2, 5, 8, 11]
    )  # DINOv2 blocks whose patch tokens feed heads
    latent_t_min: int = 0  # latent backbone: noise level drawn uniformly in [t_min, t_max]
    latent_t_max: int = 500
    head_channels: int = 64  # width of the conditional projection of each head
    # Projection conditioning of the heads on the caption (the paper's). Turn it off when the
    # image captions differ in form from the video prompts: D then separates real from fake
    # by the text alone (docs/RESULTS.md, "What the discriminator looks at").
    conditional: bool = True
    # Or bring the video captions to the images' form: this regex is removed from every
    # caption before it conditions D (the world: "\\s*moving \\w+$").
    caption_drop: str | None = None
    augment: str = "color,translation,cutout"  # differentiable augmentation policy ("" = none)
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    gp_weight: float = 1e-5  # initial weight of the feature-space gradient penalty (0 = off)
    gp_every: int = 1  # compute the penalty every n steps
    # D-only steps before distillation: real images against frames of the training clips,
    # which look like the student's first samples (it starts as the teacher). 0: the paper's.
    warmup_steps: int = 0


@dataclass
class DataSection:
    video: VideoDataConfig = field(default_factory=VideoDataConfig)  # training clips (captioned)
    images: ImageDataConfig | None = (
        None  # high-quality / style images for the discriminator; None: frames of the clips
    )


@dataclass
class TrainLoopConfig:
    seed: int = 0  # seeds weights, data order and every draw of the step (plus the rank)
    max_steps: int = 1000  # optimiser steps
    batch_size: int = 1  # clips per process per micro-batch
    grad_accum: int = 1  # micro-batches per optimiser step
    lr: float = 5e-6  # student (LoRA + motion head) learning rate
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    adam_eps: float = 1e-8
    optimizer: str = "adamw"  # "adamw" or "adamw8bit" (needs bitsandbytes)
    lr_schedule: str = "cosine"  # "cosine" or "constant" (both after linear warm-up)
    warmup_steps: int = 500
    max_grad_norm: float = (
        10.0  # student gradient clipping (0 = off); the discriminator is not clipped
    )
    mixed_precision: str = "no"  # "no", "fp16", "bf16" (accelerate autocast)
    checkpoint_every: int = 500  # steps between checkpoints (0 = only at the end)
    keep_checkpoints: int = 3  # keep the last K checkpoints
    log_every: int = 10  # steps between logged scalars
    tracker: str = "tensorboard"  # "tensorboard", "wandb" or "none"
    validate_every: int = 0  # steps between validation videos (0 = off)
    validation_prompts: list[str] = field(default_factory=list)
    validation_steps: list[int] = field(
        default_factory=lambda: [1, 2, 4]
    )  # student step counts sampled
    validation_seed: int = 1234
    validation_frames: int | None = (
        None  # frames per validation video (None: the pipeline default, 16)
    )
    max_nonfinite: int = 10  # stop after this many non-finite losses in a row
    max_seconds: float | None = None  # stop (with a checkpoint) after this much training time
    progress: bool = True  # show a progress bar
    export: bool = True  # write the diffusers LoRA + merged pipeline at the end


@dataclass
class TrainConfig:
    output_dir: str = "runs/mcm"  # checkpoints, logs, validation videos, the final export
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    data: DataSection = field(default_factory=DataSection)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)

    def __post_init__(self):
        def choice(key: str, value, allowed):
            if value not in allowed:
                raise ConfigError(
                    f"{key}: {value!r} is not allowed; choose one of {list(allowed)}."
                )

        choice("model.frozen_dtype", self.model.frozen_dtype, FROZEN_DTYPES)
        choice("train.mixed_precision", self.train.mixed_precision, MIXED_PRECISION)
        choice("train.optimizer", self.train.optimizer, ("adamw", "adamw8bit"))
        choice("train.lr_schedule", self.train.lr_schedule, ("cosine", "constant"))
        choice("train.tracker", self.train.tracker, ("tensorboard", "wandb", "none"))
        choice("discriminator.backbone", self.discriminator.backbone, ("latent", "dinov2"))

        choice("method.motion", self.method.motion, MOTION_REPRESENTATIONS)
        mixing = self.method.mixed_trajectories and self.method.lambda_real < 1.0
        if mixing and not self.discriminator.enabled:
            raise ConfigError(
                "method.mixed_trajectories needs the discriminator (the student's own samples are "
                "only useful with adversarial appearance learning): set discriminator.enabled=true, "
                "or method.mixed_trajectories=false, or method.lambda_real=1.0."
            )
        for key in ("max_steps", "batch_size", "grad_accum"):
            if getattr(self.train, key) < 1:
                raise ConfigError(f"train.{key} must be >= 1; got {getattr(self.train, key)}.")
        if self.discriminator.warmup_steps < 0:
            raise ConfigError(
                f"discriminator.warmup_steps must be >= 0; got {self.discriminator.warmup_steps}."
            )
        if self.discriminator.warmup_steps and self.data.images is None:
            raise ConfigError(
                "discriminator.warmup_steps needs data.images: without an image set the real "
                "frames are frames of the clips, the same look as the warm-up's fakes. Set "
                "data.images.source, or discriminator.warmup_steps=0."
            )
        if self.method.motion_head_lr is not None and self.method.motion_head_lr <= 0:
            raise ConfigError(
                f"method.motion_head_lr must be > 0 (or null: train.lr); got {self.method.motion_head_lr}."
            )
        if self.model.lora_rank < 1:
            raise ConfigError(f"model.lora_rank must be >= 1; got {self.model.lora_rank}.")
        if not self.data.video.source and self.data.video.latent_cache is None:
            raise ConfigError(
                "data.video.source is empty: set it to a folder/CSV/JSONL/shards of captioned clips "
                "(or data.video.latent_cache to a cache written by `mcm data cache-latents`)."
            )
        if any(s < 1 or s > self.method.num_ode_steps for s in self.train.validation_steps):
            raise ConfigError(
                f"train.validation_steps {self.train.validation_steps} must lie in 1..method.num_ode_steps "
                f"({self.method.num_ode_steps})."
            )
        try:
            re.compile(self.discriminator.caption_drop or "")
        except re.error as e:
            raise ConfigError(
                f"discriminator.caption_drop {self.discriminator.caption_drop!r} is not a regular "
                f"expression ({e}); e.g. '\\s*moving \\w+$', or null for none."
            ) from e


def load_train_config(path: str | None, overrides: list[str] = ()) -> TrainConfig:
    """Load and validate a training config (YAML + `section.key=value` overrides)."""
    return load_config(TrainConfig, path, overrides)
