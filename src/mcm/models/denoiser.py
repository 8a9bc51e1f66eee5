"""One denoiser interface over diffusers video UNets and video transformers.

The rest of the library sees only :class:`VideoDenoiser`: given x_t [B, C, F, H, W],
timesteps t [B] (integers on a VP schedule, floating t = sigma T on a flow-matching one)
and text embeddings [B, L, D], it returns the model output
[B, C, F, H, W] and knows its prediction type and noise schedule. Each adapter converts to
what its UNet wants at the edge and owns the precision boundary: inputs are cast to the
UNet's dtype and the output back to the caller's dtype (fp32 in practice).

Adapters:
* :class:`ModelScopeDenoiser` - ``UNet3DConditionModel`` (ModelScopeT2V; text [B, L, D]).
* :class:`AnimateDiffDenoiser` - ``UNetMotionModel`` (SD1.5 UNet + motion modules; it
  wants per-frame text embeddings [B*F, L, D], made here by repeating each prompt).
* :class:`WanDenoiser` - ``WanTransformer3DModel`` (Wan2.1's DiT, flow matching; predicts
  v = eps - x0). The network attribute keeps the name ``unet`` for every family.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mcm.diffusion import VPSchedule, schedule_from_config, to_x0_eps
from mcm.models.vae import frames_back, frames_first

FAMILIES = ("modelscope", "animatediff", "wan")


class _StopForward(Exception):
    """Raised by a hook to end a UNet forward early (after the mid block)."""


class VideoDenoiser(nn.Module):
    """A text-conditioned video UNet with its prediction type and noise schedule.

    Args:
        unet: the diffusers UNet.
        scheduler_config: the teacher's scheduler config (dict or scheduler); gives the
            schedule (betas) and ``prediction_type``.

    Attributes:
        unet, family ("modelscope" | "animatediff"), prediction_type, schedule,
        scheduler_config (a plain dict).
    """

    family: str = ""

    def __init__(self, unet: nn.Module, scheduler_config: Any):
        super().__init__()
        self.unet = unet
        self.scheduler_config = dict(getattr(scheduler_config, "config", scheduler_config))
        self.schedule = schedule_from_config(self.scheduler_config)
        # flow schedulers say "flow_prediction" (UniPC) or nothing (FlowMatchEuler)
        self.prediction_type = (
            "flow"
            if self.schedule.kind == "flow"
            else self.scheduler_config.get("prediction_type", "epsilon")
        )

    # -- what each adapter overrides -------------------------------------------------
    def _unet_forward(
        self, x_t: Tensor, t: Tensor, text_emb: Tensor, timestep_cond: Tensor | None
    ) -> Tensor:
        raise NotImplementedError

    def to_scheduler_layout(self, x: Tensor) -> Tensor:
        """The layout the stock pipeline hands to ``scheduler.step`` ([B, C, F, H, W] here)."""
        return x

    def from_scheduler_layout(self, x: Tensor, batch_size: int) -> Tensor:
        """Inverse of :meth:`to_scheduler_layout`."""
        return x

    # -- the interface ---------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        # The first weight's dtype, as diffusers' ModelMixin.dtype gives without
        # layerwise casting, but without its walk over every parameter (milliseconds per call).
        return next(self.unet.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def _apply(self, fn, recurse=True):
        # Keep the schedule's tables next to the weights, in fp32, whatever .to() is asked.
        super()._apply(fn, recurse)
        if isinstance(self.schedule, VPSchedule):
            table = self.schedule.alphas_cumprod.to(self.unet.device, torch.float32)
            self.schedule = VPSchedule(table, self.schedule.final_alpha_cumprod)
        return self

    def _check(self, x_t: Tensor, t: Tensor, text_emb: Tensor) -> None:
        if x_t.ndim != 5:
            raise ValueError(f"x_t must be [B, C, F, H, W]; got shape {tuple(x_t.shape)}.")
        B = x_t.shape[0]
        if t.shape != (B,):
            raise ValueError(f"t must be [B] = [{B}] timesteps; got {tuple(t.shape)}.")
        if text_emb.ndim != 3 or text_emb.shape[0] != B:
            raise ValueError(
                f"text_emb must be [B, L, D] with B = {B} (one prompt per video); got "
                f"{tuple(text_emb.shape)}."
            )

    def forward(
        self, x_t: Tensor, t: Tensor, text_emb: Tensor, timestep_cond: Tensor | None = None
    ) -> Tensor:
        """Model output [B, C, F, H, W] (of type ``prediction_type``), in x_t's dtype.

        Args:
            x_t: noisy latents [B, C, F, H, W]; t: integer timesteps [B];
            text_emb: [B, L, D]; timestep_cond: optional [B, time_cond_proj_dim]
                (e.g. a guidance-scale embedding), needs a UNet built with
                ``time_cond_proj_dim``.
        """
        self._check(x_t, t, text_emb)
        if timestep_cond is not None:
            if self.unet.config.get("time_cond_proj_dim") is None:
                raise ValueError(
                    "timestep_cond was given but the UNet has no time_cond_proj_dim; build "
                    "the UNet with time_cond_proj_dim set or pass timestep_cond=None."
                )
            timestep_cond = timestep_cond.to(self.dtype)
        out = self._unet_forward(
            x_t.to(self.dtype), t.to(x_t.device), text_emb.to(self.dtype), timestep_cond
        )
        return out.to(x_t.dtype)

    def predict_x0_eps(
        self, x_t: Tensor, t: Tensor, text_emb: Tensor, timestep_cond: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """(x0, eps) implied by the model output at (x_t, t); each [B, C, F, H, W]."""
        out = self(x_t, t, text_emb, timestep_cond)
        alpha, sigma = self.schedule.alpha(t), self.schedule.sigma(t)
        return to_x0_eps(out, x_t, alpha.to(x_t.device), sigma.to(x_t.device), self.prediction_type)

    def encoder_blocks(self) -> list[nn.Module]:
        """The blocks whose outputs :meth:`encoder_features` can return, in forward order:
        the down blocks, then the mid block."""
        blocks = list(self.unet.down_blocks)
        if self.unet.mid_block is not None:
            blocks.append(self.unet.mid_block)
        return blocks

    def encoder_features(
        self, x_t: Tensor, t: Tensor, text_emb: Tensor, num_blocks: int | None = None
    ) -> list[Tensor]:
        """Outputs of each down block and of the mid block, each [N, C_i, F, h_i, w_i]; with
        ``num_blocks``, of the first ``num_blocks`` of them (:meth:`encoder_blocks`).

        The up blocks are skipped (the forward stops after the last block read). Gradients
        flow to x_t. Run it under :func:`mcm.models.disable_adapters` for the frozen teacher.
        """
        self._check(x_t, t, text_emb)
        N = x_t.shape[0]
        blocks = _first_blocks(self.encoder_blocks(), num_blocks)
        feats: list[Tensor] = []

        def keep(module, args, output):
            feats.append(output[0] if isinstance(output, tuple) else output)
            if module is blocks[-1]:
                raise _StopForward

        handles = [b.register_forward_hook(keep) for b in blocks]
        try:
            with _without_checkpointing(self.unet):
                self._unet_forward(x_t.to(self.dtype), t, text_emb.to(self.dtype), None)
        except _StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        return [frames_back(f, N).to(x_t.dtype) for f in feats]

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each UNet block's activations in the backward pass."""
        if getattr(self.unet, "_supports_gradient_checkpointing", False):
            self.unet.enable_gradient_checkpointing()
            return
        # UNet3DConditionModel does not support it in diffusers 0.42: checkpoint whole
        # blocks ourselves by giving each block a subclass whose forward is checkpointed
        # (state-dict keys, save_pretrained and deepcopy are unaffected).
        blocks = [*self.unet.down_blocks, self.unet.mid_block, *self.unet.up_blocks]
        for block in blocks:
            if block is not None and not getattr(block, "_mcm_checkpointed", False):
                block.__class__ = _checkpointed_class(type(block))


def _first_blocks(blocks: list[nn.Module], n: int | None) -> list[nn.Module]:
    if n is None:
        return blocks
    if not 1 <= n <= len(blocks):
        raise ValueError(f"num_blocks must be in 1..{len(blocks)} (the encoder's blocks); got {n}.")
    return blocks[:n]


@contextlib.contextmanager
def _without_checkpointing(net: nn.Module):
    """Activation checkpointing off inside (diffusers' flags and mcm's checkpointed blocks).

    For the latent discriminator's teacher features: their backward would recompute the
    checkpointed blocks after the caller's ``disable_adapters`` has ended, i.e. with the
    LoRA on - another network (torch raises a CheckpointError on the changed shapes).
    """
    flagged = [m for m in net.modules() if getattr(m, "gradient_checkpointing", False)]
    mcm_blocks = [m for m in net.modules() if getattr(m, "_mcm_checkpointed", False)]
    for m in flagged:
        m.gradient_checkpointing = False
    for m in mcm_blocks:
        m._mcm_checkpoint_off = True
    try:
        yield
    finally:
        for m in flagged:
            m.gradient_checkpointing = True
        for m in mcm_blocks:
            m._mcm_checkpoint_off = False


@functools.cache
def _checkpointed_class(cls: type) -> type:
    def forward(self, *args, **kwargs):
        if torch.is_grad_enabled() and not getattr(self, "_mcm_checkpoint_off", False):
            return checkpoint(super(sub, self).forward, *args, use_reentrant=False, **kwargs)
        return super(sub, self).forward(*args, **kwargs)

    sub = type(cls.__name__, (cls,), {"forward": forward, "_mcm_checkpointed": True})
    sub.__module__ = cls.__module__
    return sub


class ModelScopeDenoiser(VideoDenoiser):
    """ModelScopeT2V: ``UNet3DConditionModel``, text embeddings [B, L, D]."""

    family = "modelscope"

    def _unet_forward(self, x_t, t, text_emb, timestep_cond):
        return self.unet(
            x_t, t, encoder_hidden_states=text_emb, timestep_cond=timestep_cond, return_dict=False
        )[0]

    def to_scheduler_layout(self, x: Tensor) -> Tensor:
        # TextToVideoSDPipeline reshapes latents to [B*F, C, H, W] before scheduler.step,
        # so a stochastic scheduler draws its noise in that order.
        return frames_first(x)

    def from_scheduler_layout(self, x: Tensor, batch_size: int) -> Tensor:
        return frames_back(x, batch_size)


class AnimateDiffDenoiser(VideoDenoiser):
    """AnimateDiff: ``UNetMotionModel``, which wants per-frame text embeddings [B*F, L, D]."""

    family = "animatediff"

    def _unet_forward(self, x_t, t, text_emb, timestep_cond):
        frames = x_t.shape[2]
        per_frame = text_emb.repeat_interleave(frames, dim=0)  # [B*F, L, D], video-major
        return self.unet(
            x_t, t, encoder_hidden_states=per_frame, timestep_cond=timestep_cond, return_dict=False
        )[0]


class WanDenoiser(VideoDenoiser):
    """Wan2.1: ``WanTransformer3DModel`` on latents [B, C, F, h, w] (F = 1 + (frames - 1) / 4
    for Wan's causal VAE), text embeddings [B, L, D] from UMT5, output v = eps - x0.

    The transformer sees t truncated to an integer, as in a stock ``WanPipeline`` with
    ``UniPCMultistepScheduler`` (whose timesteps are int64 while its sigmas stay exact).
    """

    family = "wan"
    num_feature_blocks: int = 2  # the transformer's first blocks the latent discriminator reads

    def _unet_forward(self, x_t, t, text_emb, timestep_cond):
        if timestep_cond is not None:
            raise ValueError("Wan has no guidance embedding: pass timestep_cond=None.")
        t = t.long() if t.is_floating_point() else t
        return self.unet(x_t, timestep=t, encoder_hidden_states=text_emb, return_dict=False)[0]

    def encoder_blocks(self) -> list[nn.Module]:
        """The transformer blocks, in forward order."""
        return list(self.unet.blocks)

    def encoder_features(
        self, x_t: Tensor, t: Tensor, text_emb: Tensor, num_blocks: int | None = None
    ) -> list[Tensor]:
        """Token features after each of the first ``num_blocks`` (default
        ``num_feature_blocks``) transformer blocks, each [B, C', F', h', w'] (C' the model
        width, F' h' w' the patch grid). Gradients flow to x_t. Run it under
        :func:`mcm.models.disable_adapters` for the teacher."""
        self._check(x_t, t, text_emb)
        net = self.unet
        blocks = _first_blocks(self.encoder_blocks(), num_blocks or self.num_feature_blocks)
        p_t, p_h, p_w = net.config.patch_size
        B, _, F, H, W = x_t.shape
        grid = (F // p_t, H // p_h, W // p_w)
        feats: list[Tensor] = []

        def keep(module, args, output):
            tokens = output[0] if isinstance(output, tuple) else output  # [B, N, C']
            feats.append(tokens.transpose(1, 2).reshape(B, -1, *grid))
            if module is blocks[-1]:
                raise _StopForward

        handles = [b.register_forward_hook(keep) for b in blocks]
        try:
            with _without_checkpointing(net):
                self._unet_forward(x_t.to(self.dtype), t, text_emb.to(self.dtype), None)
        except _StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        return [f.to(x_t.dtype) for f in feats]


DENOISERS: dict[str, type[VideoDenoiser]] = {
    "modelscope": ModelScopeDenoiser,
    "animatediff": AnimateDiffDenoiser,
    "wan": WanDenoiser,
}


def make_denoiser(family: str, unet: nn.Module, scheduler_config: Any) -> VideoDenoiser:
    """The adapter for ``family`` around ``unet``."""
    if family not in DENOISERS:
        raise ValueError(f"Unknown model family {family!r}; choose one of {', '.join(FAMILIES)}.")
    return DENOISERS[family](unet, scheduler_config)
