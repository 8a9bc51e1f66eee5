"""Noise schedules: alpha(t), sigma(t) of x_t = alpha(t) x0 + sigma(t) eps.

Two families behind one interface (:class:`NoiseSchedule`):

* :class:`VPSchedule` - variance preserving, from a table of betas over integer DDPM
  timesteps 0..T-1: alpha(t) = sqrt(alpha_bar_t), sigma(t) = sqrt(1 - alpha_bar_t).
* :class:`FlowMatchingSchedule` - rectified flow, x_t = (1 - s) x0 + s eps with
  s = t / T, so alpha(t) = 1 - s, sigma(t) = s. Timesteps are floating (t = sigma T, as
  diffusers' flow schedulers make them); the ``shift`` of the sampling grids is a property
  of the schedule (:func:`shift_sigmas`), the interpolant does not depend on it.

Timesteps are always per sample, shape [B]. Timestep -1 means "past the end of the
trajectory" (the clean sample), which DDIM uses for its last step. alpha(t) and sigma(t)
come back on the schedule's device; the functions that apply them to samples
(add_noise, the conversions, ddim_step) move them to the samples' device and dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


def make_betas(
    beta_schedule: str = "scaled_linear",
    num_train_timesteps: int = 1000,
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The beta table [T] of a named schedule (diffusers' definitions).

    * linear: linspace(beta_start, beta_end, T)
    * scaled_linear: linspace(sqrt(beta_start), sqrt(beta_end), T) ** 2
    * squaredcos_cap_v2: beta_i = min(1 - abar((i+1)/T) / abar(i/T), 0.999) with
      abar(s) = cos((s + 0.008) / 1.008 * pi / 2) ** 2 (Nichol & Dhariwal 2021).

    Computed in float32 by default, exactly as diffusers does, so the tables agree bit for
    bit; pass dtype=torch.float64 for more precision.
    """
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=dtype)
    if beta_schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=dtype) ** 2
    if beta_schedule == "squaredcos_cap_v2":

        def abar(s: float) -> float:
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        T = num_train_timesteps
        betas = [min(1 - abar((i + 1) / T) / abar(i / T), 0.999) for i in range(T)]
        return torch.tensor(betas, dtype=dtype)
    raise ValueError(
        f"Unknown beta_schedule {beta_schedule!r}; allowed: {', '.join(BETA_SCHEDULES)}."
    )


def rescale_zero_terminal_snr(betas: Tensor) -> Tensor:
    """Rescale betas so the last timestep has zero SNR (Lin et al. 2024, Algorithm 1).

    sqrt(alpha_bar) is shifted and scaled so that its last value is 0 and its first is
    unchanged; betas are recomputed from the new alpha_bar. Shape [T] -> [T].
    """
    sqrt_abar = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = sqrt_abar[0].clone(), sqrt_abar[-1].clone()
    # Same order of operations as diffusers, so the float32 tables agree bit for bit.
    sqrt_abar = (sqrt_abar - last) * (first / (first - last))
    abar = sqrt_abar**2
    alphas = torch.cat([abar[:1], abar[1:] / abar[:-1]])
    return 1.0 - alphas


def append_dims(x: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dims so a per-sample [B] tensor broadcasts over [B, ...]."""
    if x.ndim > ndim:
        raise ValueError(f"Tensor has {x.ndim} dims, more than the target {ndim}.")
    return x.reshape(*x.shape, *([1] * (ndim - x.ndim)))


class NoiseSchedule(Protocol):
    """What the rest of the library needs from a schedule."""

    kind: str  # "vp" or "flow"
    num_train_timesteps: int

    def alpha(self, t: Tensor) -> Tensor: ...  # [B] -> [B]

    def sigma(self, t: Tensor) -> Tensor: ...  # [B] -> [B]


def add_noise(schedule: NoiseSchedule, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """Forward process x_t = alpha(t) x0 + sigma(t) eps.

    Args:
        x0: clean sample [B, ...]; noise: eps, same shape; t: timesteps [B].
    Returns:
        x_t [B, ...] in x0's dtype.
    """
    a = append_dims(schedule.alpha(t), x0.ndim).to(x0.device, x0.dtype)
    s = append_dims(schedule.sigma(t), x0.ndim).to(x0.device, x0.dtype)
    return a * x0 + s * noise


@dataclass
class VPSchedule:
    """Variance-preserving schedule over integer timesteps 0..T-1.

    Args:
        alphas_cumprod: alpha_bar table [T].
        final_alpha_cumprod: alpha_bar used for timestep -1 (the clean end of a DDIM
            trajectory): 1.0 when diffusers' ``set_alpha_to_one`` is true, else
            alpha_bar[0].
    """

    alphas_cumprod: Tensor
    final_alpha_cumprod: float = 1.0
    kind: str = "vp"

    @property
    def num_train_timesteps(self) -> int:
        return self.alphas_cumprod.shape[0]

    @classmethod
    def from_betas(
        cls,
        beta_schedule: str = "scaled_linear",
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        rescale_betas_zero_snr: bool = False,
        set_alpha_to_one: bool = True,
        dtype: torch.dtype = torch.float32,
    ) -> VPSchedule:
        """Build from diffusers-style arguments (the defaults are ModelScopeT2V's).

        The table equals ``alphas_cumprod`` of diffusers' DDIMScheduler, DDPMScheduler and
        LCMScheduler built with the same arguments. With ``rescale_betas_zero_snr`` the last
        alpha_bar is exactly 0, as in those schedulers (the Euler/DPM-Solver/UniPC
        schedulers instead clamp it to 2**-24): an epsilon prediction cannot be turned into
        x0 at t = T-1 then, which is why zero-SNR models predict v.

        Raises:
            ValueError: unknown ``beta_schedule`` (the message lists BETA_SCHEDULES).
        """
        betas = make_betas(beta_schedule, num_train_timesteps, beta_start, beta_end, dtype)
        return cls._from_beta_table(betas, rescale_betas_zero_snr, set_alpha_to_one)

    @classmethod
    def _from_beta_table(
        cls, betas: Tensor, rescale_betas_zero_snr: bool, set_alpha_to_one: bool
    ) -> VPSchedule:
        if rescale_betas_zero_snr:
            betas = rescale_zero_terminal_snr(betas)
        abar = torch.cumprod(1.0 - betas, dim=0)
        final = 1.0 if set_alpha_to_one else float(abar[0])
        return cls(alphas_cumprod=abar, final_alpha_cumprod=final)

    @classmethod
    def from_config(cls, config: Any, dtype: torch.dtype = torch.float32) -> VPSchedule:
        """Build from a diffusers scheduler, its config, or a scheduler_config.json dict.

        Reads ``trained_betas`` (or ``beta_schedule``, ``num_train_timesteps``,
        ``beta_start``, ``beta_end``), ``rescale_betas_zero_snr`` and ``set_alpha_to_one``
        as diffusers' DDIMScheduler does; keys missing from a plain dict take
        DDIMScheduler's defaults (linear, 1000 steps, 0.0001 to 0.02, no rescale,
        set_alpha_to_one true).

        Raises:
            ValueError: unknown ``beta_schedule`` (the message lists BETA_SCHEDULES).
        """
        config = dict(getattr(config, "config", config))
        if config.get("trained_betas") is not None:
            return cls._from_beta_table(
                torch.tensor(config["trained_betas"], dtype=dtype),
                rescale_betas_zero_snr=config.get("rescale_betas_zero_snr", False),
                set_alpha_to_one=config.get("set_alpha_to_one", True),
            )
        return cls.from_betas(
            beta_schedule=config.get("beta_schedule", "linear"),
            num_train_timesteps=config.get("num_train_timesteps", 1000),
            beta_start=config.get("beta_start", 0.0001),
            beta_end=config.get("beta_end", 0.02),
            rescale_betas_zero_snr=config.get("rescale_betas_zero_snr", False),
            set_alpha_to_one=config.get("set_alpha_to_one", True),
            dtype=dtype,
        )

    def alpha_bar(self, t: Tensor) -> Tensor:
        """alpha_bar_t for integer timesteps [B] (-1 -> final_alpha_cumprod)."""
        t = torch.as_tensor(t, device=self.alphas_cumprod.device).long()
        if t.min() < -1 or t.max() >= self.num_train_timesteps:
            raise ValueError(
                f"Timesteps must lie in -1..{self.num_train_timesteps - 1}; got "
                f"{int(t.min())}..{int(t.max())}."
            )
        table = torch.cat(
            [self.alphas_cumprod.new_tensor([self.final_alpha_cumprod]), self.alphas_cumprod]
        )
        return table[t + 1]

    def alpha(self, t: Tensor) -> Tensor:
        return self.alpha_bar(t).sqrt()

    def sigma(self, t: Tensor) -> Tensor:
        return (1.0 - self.alpha_bar(t)).sqrt()


def shift_sigmas(sigmas: Tensor, shift: float) -> Tensor:
    """The timestep shift of flow-matching models (SD3, Wan): s -> shift s / (1 + (shift - 1) s).

    Moves grid points towards high noise for shift > 1; 0 and 1 are fixed. Same shape.
    """
    return shift * sigmas / (1 + (shift - 1) * sigmas)


@dataclass
class FlowMatchingSchedule:
    """Rectified-flow schedule: x_t = (1 - s) x0 + s eps, s = t / T for t in [0, T].

    Timesteps are floating (t = sigma T; float64 keeps a grid's sigmas exact); integer
    timesteps are read as float32. Timestep -1 (the end of a trajectory) is treated as
    s = 0. ``shift`` is the grid shift (``flow_shift`` / ``shift`` of diffusers' flow
    schedulers) that :func:`~mcm.diffusion.solvers.flow_sigmas` applies.
    """

    num_train_timesteps: int = 1000
    shift: float = 1.0
    kind: str = "flow"

    def _s(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t)
        if not t.is_floating_point():
            t = t.float()
        if t.min() < -1 or t.max() > self.num_train_timesteps:
            raise ValueError(
                f"Timesteps must lie in -1..{self.num_train_timesteps}; got "
                f"{float(t.min())}..{float(t.max())}."
            )
        return t.clamp(min=0) / self.num_train_timesteps

    def alpha(self, t: Tensor) -> Tensor:
        return 1.0 - self._s(t)

    def sigma(self, t: Tensor) -> Tensor:
        return self._s(t)


def is_flow_config(config: Any) -> bool:
    """Whether a diffusers scheduler (or its config) describes a flow-matching model: a
    FlowMatch* class, or a solver set up for flow (``prediction_type="flow_prediction"``
    or ``use_flow_sigmas``, as the released Wan2.1 folders' UniPCMultistepScheduler)."""
    cfg = dict(getattr(config, "config", config))
    class_name = cfg.get("_class_name", type(config).__name__)
    return (
        "FlowMatch" in class_name
        or cfg.get("prediction_type") == "flow_prediction"
        or bool(cfg.get("use_flow_sigmas"))
    )


def schedule_from_config(config: Any) -> NoiseSchedule:
    """A schedule for any diffusers scheduler (or its config dict).

    Flow matching (:func:`is_flow_config`) gives a :class:`FlowMatchingSchedule` whose
    shift is the config's ``flow_shift`` (UniPC/DPM-Solver) or ``shift``
    (FlowMatchEulerDiscreteScheduler); everything else is read as VP betas.
    """
    cfg = dict(getattr(config, "config", config))
    if is_flow_config(config):
        shift = cfg.get("flow_shift") if "flow_shift" in cfg else cfg.get("shift", 1.0)
        return FlowMatchingSchedule(cfg.get("num_train_timesteps", 1000), float(shift or 1.0))
    return VPSchedule.from_config(cfg)
