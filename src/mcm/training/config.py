"""The training config: config dataclasses, one per section of the YAML file.

Each field's comment is its documentation, its type annotation its rule: pydantic checks
every type, range (``PositiveInt``: >= 1, ...) and choice (``Literal``) when a config is made,
and the ``model_validator``s below check what one field cannot say alone (mcm.schema says
why pydantic). YAML sets only what differs from these defaults; `--set section.key=value`
overrides.

Whose defaults: the reference recipe's (docs/RESULTS.md, "Deviations from the reference"),
except the fields whose comment says "ours": the latent discriminator backbone, the
discriminator heads' style, the gradient penalty's reduction, the discriminator's constant
learning rate and the learnable motion head's layers; each has a value that gives the
reference's behaviour. The heads are conditioned on the teacher's own pooled text
embedding, where the reference loads OpenCLIP ViT-g-14 (a second text encoder of ~1.4 GB).
"""

from __future__ import annotations

import re
import typing
from dataclasses import field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, TypeAdapter, ValidationError, field_validator, model_validator

from mcm.adversarial.augment import parse_policy
from mcm.data.config import ImageDataConfig, VideoDataConfig
from mcm.data.sources import is_url
from mcm.errors import ConfigError
from mcm.models.loading import detect_family, read_model_index
from mcm.motion import MOTION_REPRESENTATIONS
from mcm.paths import resolve_teacher
from mcm.schema import (
    Betas,
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    config_dataclass,
    read_yaml,
)
from mcm.training import checkpoint as ckpt
from mcm.training.config_io import load_config
from mcm.training.distiller import MCMConfig

FROZEN_DTYPES = ("auto", "fp32", "fp16", "bf16")
MIXED_PRECISION = ("no", "fp16", "bf16")


@config_dataclass
class ModelConfig:
    teacher: str = "world"  # diffusers directory, hub id, or "world" (the shipped world teacher)
    separate_teacher: bool = (
        False  # keep a frozen teacher copy instead of disabling the LoRA (2x UNet memory)
    )
    # "lora": train LoRA adapters (the teacher = the student with them disabled); "full":
    # train every weight of the network (fp32) against a frozen teacher copy (2x memory,
    # plus optimizer state for all weights); the lora_* keys are then unused
    finetune: Literal["lora", "full"] = "lora"
    lora_rank: PositiveInt = 64  # LoRA rank r
    lora_alpha: PositiveInt = 64  # LoRA alpha (scale = alpha / r)
    lora_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    lora_target_modules: Annotated[list[str], Field(min_length=1)] | None = (
        None  # None: the reference modules for the teacher's family
    )
    gradient_checkpointing: bool = False  # trade compute for activation memory in the UNet
    frozen_dtype: Literal[FROZEN_DTYPES] = (
        "auto"  # dtype of frozen parts: auto (bf16 on GPU, fp32 on CPU), fp32, fp16, bf16
    )
    vae_chunk_size: PositiveInt = 8  # frames per VAE encode/decode call (Wan: videos per call)
    max_sequence_length: PositiveInt = 512  # Wan: prompt tokens (its cross-attention has no mask)


@config_dataclass
class MethodConfig(MCMConfig):
    motion: Literal[MOTION_REPRESENTATIONS] = (
        "learnable"  # motion representation: raw, diff, lowfreq, highfreq, corr_local, corr_global, learnable, learnable_heavy
    )
    # the learnable head's layers: ours "mcm" (three convs), or "reference" (two, with a SiLU
    # on the input as well)
    motion_head: Literal["mcm", "reference"] = "mcm"
    motion_ema_decay: Fraction = 0.95  # EMA of the learnable head used on the target side
    motion_head_lr: PositiveFloat | None = (
        None  # lr of the learnable head (None: train.lr, the paper's)
    )
    target_ema_decay: Fraction = 0.95  # EMA of the LoRA when target or one_step_target is "ema"


@config_dataclass
class DiscriminatorConfig:
    enabled: bool = True  # off: no adversarial loss (and no mixed trajectories)
    # ours: "latent" (the frozen teacher's UNet encoder on noised latents: no VAE decode with
    # gradient, no extra weights); the reference's: "dinov2" (pixel space)
    backbone: Literal["latent", "dinov2"] = "latent"
    dinov2: str = "facebook/dinov2-small"  # local path or hub id of a transformers Dinov2Model (backbone: dinov2)
    taps: Annotated[list[NonNegativeInt], Field(min_length=1)] = field(
        default_factory=lambda: [2, 5, 8, 11]
    )  # DINOv2 blocks whose patch tokens feed heads
    latent_t_min: NonNegativeInt = (
        0  # latent backbone: noise level drawn uniformly in [t_min, t_max]
    )
    latent_t_max: NonNegativeInt = 500
    # latent backbone: how many of the teacher's encoder blocks feed heads, from the first
    # (UNet: the down blocks, then the mid block; Wan: transformer blocks); null: every UNet
    # block (the reference's discriminator reads all of its backbone's taps), Wan's first 2.
    # Fewer is cheaper (the pass stops after the last block read, fewer heads) and judges
    # less abstract features
    latent_blocks: PositiveInt | None = None
    # latent backbone: judge the latent of the decoded frame (decode, then encode again,
    # with gradient) instead of the latent itself, real and fake alike. Without it the
    # student can fool the heads along latent directions the decoder ignores: on the flow
    # world teacher it then keeps the watermark (docs/RESULTS.md, "The flow world")
    latent_round_trip: bool = False
    head_channels: PositiveInt = 64  # width of the conditional projection of each head
    # each head's width, at most its tap's channels; null: the tap's channels. The
    # reference's heads are as wide as DINOv2-S (384); a head as wide as a full-size UNet's
    # 1280-channel block has 16M weights (docs/RESULTS.md, "Training step")
    head_width: PositiveInt | None = None
    # Projection conditioning of the heads on the caption (the paper's). Turn it off when the
    # image captions differ in form from the video prompts: D then separates real from fake
    # by the text alone (docs/RESULTS.md, "What the discriminator looks at").
    conditional: bool = True
    # Or bring the video captions to the images' form: this regex is removed from every
    # caption before it conditions D (the world: "\\s*moving \\w+$").
    caption_drop: str | None = None
    augment: str = "color,translation,cutout"  # differentiable augmentation policy ("" = none)
    lr: PositiveFloat = 1e-4
    # ours: "constant"; the reference's: "cosine" over the D warm-up + distillation steps
    lr_schedule: Literal["cosine", "constant"] = "constant"
    betas: Betas = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: NonNegativeFloat = 0.0
    # ours: "mcm", h + residual(h) with zero padding; "reference": (h + residual(h)) /
    # sqrt(2) with circular padding
    head_style: Literal["mcm", "reference"] = "mcm"
    gp_weight: NonNegativeFloat = (
        1e-5  # initial weight of the feature-space gradient penalty (0 = off)
    )
    # The penalty's D(f_hat_n): ours "mean" of sample n's logits, or the reference's "sum"
    # (a gradient L times larger, so that the weight's x5 above 100 comes into play)
    gp_reduction: Literal["mean", "sum"] = "mean"
    gp_every: PositiveInt = 1  # compute the penalty every n steps
    # D-only steps before distillation: real images against frames of the training clips,
    # which look like the student's first samples (it starts as the teacher). 0: the paper's.
    warmup_steps: NonNegativeInt = 0

    @field_validator("caption_drop")
    @classmethod
    def _caption_drop_is_a_regex(cls, value: str | None) -> str | None:
        try:
            re.compile(value or "")
        except re.error as e:
            raise ValueError(
                f"not a regular expression ({e}), got {value!r}; e.g. '\\s*moving \\w+$', "
                "or null for none"
            ) from None
        return value

    @field_validator("augment")
    @classmethod
    def _augment_is_a_policy(cls, value: str) -> str:
        parse_policy(value)  # a ValueError names the unknown augmentation and the allowed ones
        return value

    @model_validator(mode="after")
    def _noise_range(self) -> DiscriminatorConfig:
        if self.latent_t_min > self.latent_t_max:
            raise ValueError(
                f"latent_t_min ({self.latent_t_min}) must be <= latent_t_max "
                f"({self.latent_t_max}): the noise level is drawn from [t_min, t_max]."
            )
        return self


@config_dataclass
class DataSection:
    video: VideoDataConfig = field(default_factory=VideoDataConfig)  # training clips (captioned)
    images: ImageDataConfig | None = (
        None  # high-quality / style images for the discriminator; None: frames of the clips
    )


@config_dataclass
class TrainLoopConfig:
    seed: NonNegativeInt = 0  # seeds weights, data order and every draw of the step (plus the rank)
    max_steps: NonNegativeInt = 1000  # optimiser steps (distillation: >= 1)
    batch_size: PositiveInt = 1  # clips per process per micro-batch
    grad_accum: PositiveInt = 1  # micro-batches per optimiser step
    lr: PositiveFloat = 5e-6  # student (LoRA + motion head) learning rate
    betas: Betas = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: NonNegativeFloat = 0.0
    adam_eps: PositiveFloat = 1e-8
    optimizer: Literal["adamw", "adamw8bit"] = (
        "adamw"  # "adamw" or "adamw8bit" (needs bitsandbytes)
    )
    lr_schedule: Literal["cosine", "constant"] = (
        "cosine"  # "cosine" or "constant" (both after linear warm-up)
    )
    warmup_steps: NonNegativeInt = 500
    max_grad_norm: NonNegativeFloat = (
        10.0  # student gradient clipping (0 = off); the discriminator is not clipped
    )
    mixed_precision: Literal[MIXED_PRECISION] = "no"  # "no", "fp16", "bf16" (accelerate autocast)
    checkpoint_every: NonNegativeInt = 500  # steps between checkpoints (0 = only at the end)
    keep_checkpoints: PositiveInt = 3  # keep the last K checkpoints
    log_every: PositiveInt = 10  # steps between logged scalars
    tracker: Literal["tensorboard", "wandb", "none"] = (
        "tensorboard"  # "tensorboard", "wandb" or "none"
    )
    validate_every: NonNegativeInt = 0  # steps between validation videos (0 = off)
    validation_prompts: list[str] = field(default_factory=list)
    validation_steps: list[PositiveInt] = field(
        default_factory=lambda: [1, 2, 4]
    )  # student step counts sampled
    validation_seed: NonNegativeInt = 1234
    validation_frames: PositiveInt | None = (
        None  # frames per validation video (None: the pipeline default, 16)
    )
    validation_teacher_steps: PositiveInt = 50  # the teacher's reference video: DDIM steps ...
    validation_teacher_guidance: PositiveFloat = 7.5  # ... and CFG scale (world teacher: 2.5)
    max_nonfinite: PositiveInt = 10  # stop after this many non-finite losses in a row
    max_seconds: NonNegativeFloat | None = (
        None  # stop (with a checkpoint) after this much training time (0: after one step)
    )
    progress: bool = True  # show a progress bar
    export: bool = True  # write the diffusers LoRA + merged pipeline at the end


@config_dataclass
class OneStepConfig:
    """A one-step student distilled from the multi-step one after its training
    (mcm.training.one_step; docs/RESULTS.md, "One step"). Ours: the reference has none."""

    steps: NonNegativeInt = 0  # optimiser steps of the phase (0: no one-step student)
    target_steps: PositiveInt = 2  # the multi-step student's steps whose sample it learns
    batch_size: PositiveInt = 4  # captions (noise draws) per step
    lr: PositiveFloat = 2e-3  # its LoRA's learning rate (constant)


@config_dataclass
class TrainConfig:
    output_dir: Annotated[str, Field(min_length=1)] = (
        "runs/mcm"  # checkpoints, logs, validation videos, the final export
    )
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    data: DataSection = field(default_factory=DataSection)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    one_step: OneStepConfig = field(default_factory=OneStepConfig)

    @model_validator(mode="after")
    def _rules_across_sections(self) -> TrainConfig:
        """What one field cannot say alone (types, ranges and choices are in the annotations)."""
        problems = []
        mixing = self.method.mixed_trajectories and self.method.lambda_real < 1.0
        if mixing and not self.discriminator.enabled:
            problems.append(
                "method.mixed_trajectories needs the discriminator (the student's own samples "
                "are only useful with adversarial appearance learning): set "
                "discriminator.enabled=true, or method.mixed_trajectories=false, or "
                "method.lambda_real=1.0."
            )
        if self.train.max_steps < 1:
            problems.append(f"train.max_steps: must be >= 1, got {self.train.max_steps}")
        if self.discriminator.warmup_steps and self.data.images is None:
            problems.append(
                "discriminator.warmup_steps needs data.images: without an image set the real "
                "frames are frames of the clips, the same look as the warm-up's fakes. Set "
                "data.images.source, or discriminator.warmup_steps=0."
            )
        if (
            self.method.fake_frames == "clip"
            and self.discriminator.enabled
            and not self.data.images
        ):
            problems.append(
                "method.fake_frames 'clip' needs data.images: its fakes are decoded frames, "
                "judged against images. Set data.images.source, or method.fake_frames=auto."
            )
        if not self.data.video.source and self.data.video.latent_cache is None:
            problems.append(
                "data.video.source is empty: set it to a folder/CSV/JSONL/shards of captioned "
                "clips (or data.video.latent_cache to a cache written by `mcm data "
                "cache-latents`)."
            )
        if self.data.images is not None and not self.data.images.source:
            problems.append(
                "data.images.source is empty: set it to a folder/CSV/JSONL/shards of captioned "
                "images, or data.images=null to use frames of the clips."
            )
        bad_steps = [s for s in self.train.validation_steps if s > self.method.num_ode_steps]
        if bad_steps:
            problems.append(
                f"train.validation_steps: {bad_steps} exceed method.num_ode_steps "
                f"({self.method.num_ode_steps}); each must lie in 1..{self.method.num_ode_steps}."
            )
        if self.one_step.steps and not self.train.export:
            problems.append(
                "one_step.steps needs train.export=true: the one-step student starts from the "
                "exported multi-step student. Set train.export=true or one_step.steps=0."
            )
        if self.one_step.target_steps > self.method.num_ode_steps:
            problems.append(
                f"one_step.target_steps: {self.one_step.target_steps} exceeds "
                f"method.num_ode_steps ({self.method.num_ode_steps}); use 2 or 4."
            )
        if problems:
            raise ValueError("\n".join(problems))
        return self


# What a checkpoint holds depends on these keys (DistillRecipe._checkpoint_weights, its
# optimisers and EMAs): the LoRA's shapes (teacher, rank, target modules) and scale, the
# motion head, the lora_ema of target or one_step_target "ema", the discriminator's heads
# (their number and widths) and the optimiser's state layout. A key with a condition is
# compared only where the condition holds in both configs (a DINOv2 tap list means nothing
# to a latent discriminator).
CHECKPOINT_KEYS: dict[str, tuple[str, object] | None] = {
    "model.teacher": None,
    "model.finetune": None,
    "model.lora_rank": None,
    "model.lora_alpha": None,
    "model.lora_target_modules": None,
    "method.motion": None,
    "method.target": None,
    "method.one_step_target": None,
    "train.optimizer": None,
    "discriminator.enabled": None,
    "discriminator.backbone": ("discriminator.enabled", True),
    "discriminator.head_channels": ("discriminator.enabled", True),
    "discriminator.head_width": ("discriminator.enabled", True),
    "discriminator.conditional": ("discriminator.enabled", True),
    "discriminator.dinov2": ("discriminator.backbone", "dinov2"),
    "discriminator.taps": ("discriminator.backbone", "dinov2"),
    "discriminator.latent_blocks": ("discriminator.backbone", "latent"),
}


def _value(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return resolve_teacher(cfg) if key == "model.teacher" else cfg


def _saved_value(saved: dict, key: str):
    """``key`` of a checkpoint's config.yaml typed as its field (KeyError: not in the file)."""
    section, name = key.split(".")
    raw = saved[section][name]
    field_type = typing.get_type_hints(
        typing.get_type_hints(TrainConfig)[section], include_extras=True
    )[name]
    try:
        value = TypeAdapter(field_type).validate_python(raw)
    except ValidationError:
        return raw
    return resolve_teacher(value) if key == "model.teacher" else value


def checkpoint_config_differences(cfg: TrainConfig, checkpoint: str | Path) -> list[str]:
    """The :data:`CHECKPOINT_KEYS` whose value in ``cfg`` differs from the one the checkpoint
    was written with (its ``config.yaml``), as ``"key: VALUE in the checkpoint, now VALUE"``.
    A checkpoint without config.yaml, or a key its file lacks, is not compared."""
    path = Path(checkpoint) / "config.yaml"
    saved = read_yaml(path) if path.is_file() else None
    if not isinstance(saved, dict):
        return []
    was = {}
    for key in CHECKPOINT_KEYS:
        try:
            was[key] = _saved_value(saved, key)
        except (KeyError, TypeError):
            continue
    out = []
    for key, condition in CHECKPOINT_KEYS.items():
        if key not in was:
            continue
        if condition is not None:
            on, value = condition
            if was.get(on, value) != value or _value(cfg, on) != value:
                continue
        now = _value(cfg, key)
        if was[key] != now:
            out.append(f"{key}: {was[key]!r} in the checkpoint, now {now!r}")
    return out


def check_resume_config(cfg: TrainConfig, checkpoint: str | Path) -> None:
    """Raise :class:`ConfigError` when ``cfg`` changes what ``checkpoint`` holds."""
    differences = checkpoint_config_differences(cfg, checkpoint)
    if differences:
        raise ConfigError(
            f"Cannot resume from {checkpoint} with this config, which changes what the "
            f"checkpoint holds: {'; '.join(differences)}. Resume with the checkpoint's values "
            "(its config.yaml), or train into a new output_dir."
        )


def check_train_inputs(cfg: TrainConfig, resume: str | None = None) -> None:
    """Fail before anything is written when a path the config names is missing: the teacher
    (a diffusers text-to-video pipeline folder, a cached or reachable hub id, or "world"),
    the latent cache and local data sources (URLs, ``pipe:`` commands, brace patterns and
    ``world:`` sources are checked where they are opened); and, with ``resume``, when the
    checkpoint to continue from does not exist or this config changes what it holds."""
    if resume and (resume != "latest" or ckpt.list_checkpoints(cfg.output_dir)):
        check_resume_config(cfg, ckpt.resume_candidates(cfg.output_dir, resume)[0])
    try:
        family = detect_family(read_model_index(resolve_teacher(cfg.model.teacher)))
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"model.teacher: {e}") from None
    frames = cfg.data.video.num_frames
    if family == "wan" and (frames - 1) % 4:
        raise ConfigError(
            f"data.video.num_frames: {frames} frames do not fit Wan's causal VAE, which takes "
            "4k + 1 frames; use 9, 17, ..., 81 (Wan2.1's default)."
        )
    cache = cfg.data.video.latent_cache
    if cache is not None and not Path(cache).is_dir():
        raise ConfigError(
            f"data.video.latent_cache: {cache!r} does not exist; write it with `mcm data "
            "cache-latents`, or set data.video.latent_cache=null to decode the clips."
        )
    for key, section in (("data.video", cfg.data.video), ("data.images", cfg.data.images)):
        if section is None or (section is cfg.data.video and cache is not None):
            continue
        source = section.source
        remote = is_url(source) or source.startswith(("pipe:", "world:"))
        if remote or "{" in source or "::" in source:
            continue
        if not Path(source).exists():
            raise ConfigError(
                f"{key}.source: {source!r} does not exist; give a folder, a CSV/JSONL manifest "
                "or webdataset shards."
            )


def load_train_config(path: str | None, overrides: list[str] = ()) -> TrainConfig:
    """Load and validate a training config (YAML + `section.key=value` overrides)."""
    return load_config(TrainConfig, path, overrides)
