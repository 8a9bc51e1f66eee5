"""Settings of ``mcm world build`` (no heavy imports, so the CLI parser stays fast)."""

from __future__ import annotations

from dataclasses import dataclass

from mcm.errors import InputError

# How the shipped teacher is meant to be sampled (ModelScope-like: DDIM, 50 steps, CFG).
TEACHER_STEPS = 50
TEACHER_GUIDANCE = 2.5


@dataclass(frozen=True)
class BuildConfig:
    """Every knob of ``mcm world build``. Defaults are sized for one GPU (~8 minutes)."""

    vae_steps: int = 2000  # VAE optimiser steps
    unet_steps: int = 10000  # UNet + text encoder optimiser steps
    vae_batch_size: int = 256  # frames per VAE step
    batch_size: int = 256  # clips per UNet step
    vae_lr: float = 1e-3
    lr: float = 5e-4  # UNet + text encoder (AdamW, constant after warm-up)
    warmup_steps: int = 200
    kl_weight: float = 1e-6  # on the KL summed over latent elements, per frame
    prompt_dropout: float = 0.1  # fraction of prompts replaced by "" (CFG)
    ema_decay: float = 0.999  # of the UNet / text encoder weights that get saved
    grad_clip: float = 1.0
    pool_size: int = 20000  # low-quality clips rendered + encoded once for stage 2
    checkpoint_every: int = 500  # steps; also at the end of each stage
    seed: int = 0
    device: str = "cpu"
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU), fp32, bf16
    # Attention kernels for the UNet: "sdpa" (torch's default choice), "math" (plain
    # matmul + softmax), or "auto": on CUDA, time a few steps of both and keep the faster
    # (UNet3D's temporal attention has head dim 4 and 8 positions, which fused kernels
    # handle badly); on CPU, "sdpa".
    attention: str = "auto"
    # What the UNet predicts ("epsilon", ModelScope's, or "v_prediction": at high noise v ~ -x0,
    # so the mean clip the direction decides is learnt directly; experiments/direction_finetune.py).
    prediction_type: str = "v_prediction"
    # > 0: a hinge (weight 0.1) keeps prompts that differ only in the direction word at least this
    # far apart (mean token distance) in the text encoder's output, which eps training collapsed.
    direction_margin: float = 5.0
    # Zero terminal SNR (Lin et al. 2024; needs v_prediction; sampled with "trailing" steps):
    # ModelScope's schedule leaves alpha = 0.068 at t = 999, enough of the clip in x_T to read
    # its direction from, so a network trained on it reads one out of the sampler's noise too.
    zero_snr: bool = True
    # Fraction of each batch noised at the last timestep (pure noise at zero SNR), where the
    # text is all the network has: the direction word is learnt there within a few hundred
    # steps, and not within thousands when t is uniform (experiments/direction_finetune.py).
    top_noise_fraction: float = 0.5
    vae_max_seconds: float | None = None  # optional wall-time cap per stage
    unet_max_seconds: float | None = None
    progress: bool = True

    def __post_init__(self):
        for name in ("vae_steps", "unet_steps"):
            if getattr(self, name) < 0:
                raise InputError(f"{name} must be >= 0; got {getattr(self, name)}.")
        for name in ("vae_batch_size", "batch_size", "pool_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1; got {getattr(self, name)}.")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise InputError(f"precision must be auto, fp32 or bf16; got {self.precision!r}.")
        if self.attention not in ("auto", "sdpa", "math"):
            raise InputError(f"attention must be auto, sdpa or math; got {self.attention!r}.")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise InputError(
                f"prediction_type must be epsilon or v_prediction; got {self.prediction_type!r}."
            )
        if self.zero_snr and self.prediction_type != "v_prediction":
            raise InputError(
                "zero_snr needs prediction_type v_prediction: at zero SNR an epsilon "
                "prediction cannot give x0 (pass --prediction-type v_prediction)."
            )
        if not 0 <= self.top_noise_fraction <= 1:
            raise InputError(
                f"top_noise_fraction must be in [0, 1]; got {self.top_noise_fraction}."
            )
        if self.direction_margin < 0:
            raise InputError(f"direction_margin must be >= 0; got {self.direction_margin}.")
        if not 0 <= self.prompt_dropout < 1:
            raise InputError(f"prompt_dropout must be in [0, 1); got {self.prompt_dropout}.")
