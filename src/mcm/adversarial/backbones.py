"""Frozen feature backbones of the frame discriminator, behind one interface.

A :class:`FrameBackbone` maps frames [N, C, H, W] to a list of token sequences
[N, L_i, C_i], one per tapped layer; the discriminator puts a trainable head on each.
Backbones are frozen and stay in eval mode; gradients still flow through them to the
input frames (the generator's adversarial loss needs that).

* :class:`DinoV2Backbone` - pixel space: frames in [-1, 1] are resized to the
  backbone's size, ImageNet-normalised and fed to a transformers ``Dinov2Model``; the
  patch tokens (no CLS) of the tapped blocks are returned.
* :class:`LatentUNetBackbone` - latent space: latent frames are noised to a random
  timestep and fed to the frozen teacher UNet's encoder (``features_fn``); no VAE decode
  under gradient and no extra weights.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mcm.diffusion import NoiseSchedule, add_noise

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# x_t [N, C, 1, h, w], t [N], text_emb [N, L, D] -> [[N, C_i, 1, h_i, w_i], ...]
FeaturesFn = Callable[[Tensor, Tensor, Tensor], Sequence[Tensor]]


class FrameBackbone(nn.Module):
    """Interface: frozen frames -> token features.

    Subclasses set ``input_kind`` ("pixel" or "latent"), expose ``channels`` (C_i per
    tap, known before any forward so heads can be built) and implement
    ``encode(frames, draws, text_emb=None) -> list[[N, L_i, C_i]]`` and, if the backbone
    draws anything (the latent one: a noise level and noise per frame), ``draw(frames,
    generator) -> draws``, a tuple of tensors [N, ...] (by default none). A forward is
    ``encode(frames, draw(frames, generator), text_emb)``; the split lets the discriminator
    make the draws of several batches of frames one batch after the other, as successive
    forwards would, and encode them in one call of the network.
    """

    input_kind: str = ""

    @property
    def channels(self) -> list[int]:
        raise NotImplementedError

    def draw(self, frames: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, ...]:
        """The random inputs of a forward on ``frames`` [N, ...]: tensors [N, ...]."""
        return ()

    def encode(
        self, frames: Tensor, draws: tuple[Tensor, ...], text_emb: Tensor | None = None
    ) -> list[Tensor]:
        raise NotImplementedError

    def forward(
        self,
        frames: Tensor,
        text_emb: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> list[Tensor]:
        """frames [N, ...] -> per tap [N, L_i, C_i]."""
        return self.encode(frames, self.draw(frames, generator), text_emb)

    def train(self, mode: bool = True) -> FrameBackbone:
        # Frozen: always eval (no dropout, no running-stat updates), whatever the parent.
        return super().train(False)


class DinoV2Backbone(FrameBackbone):
    """Frozen DINOv2 (transformers ``Dinov2Model``) on pixel frames.

    Args:
        model: a local directory or hub id for ``Dinov2Model.from_pretrained``, a
            ``Dinov2Config`` (random weights: tests), or a ``Dinov2Model``. Default:
            "facebook/dinov2-small" (ViT-S/14, the reference backbone).
        taps (Sequence[int]): 0-based transformer blocks whose patch tokens are returned.
            Default: (2, 5, 8, 11).
        image_size (int): frames are resized to image_size x image_size; a multiple of
            the patch size. Default: 224.

    Raises:
        FileNotFoundError: the weights cannot be found at ``model``.
        ValueError: a tap outside the model's blocks, or a bad image_size.
    """

    input_kind = "pixel"

    def __init__(
        self,
        model="facebook/dinov2-small",
        taps: Sequence[int] = (2, 5, 8, 11),
        image_size: int = 224,
    ):
        super().__init__()
        from transformers import Dinov2Config, Dinov2Model

        if isinstance(model, Dinov2Model):
            net = model
        elif isinstance(model, Dinov2Config):
            net = Dinov2Model(model)
        else:
            try:
                net = Dinov2Model.from_pretrained(os.fspath(model))
            except OSError as e:
                raise FileNotFoundError(
                    f"Could not load DINOv2 weights from {model!r} ({e}). Pass a local "
                    "directory holding a transformers Dinov2Model (config.json + weights) "
                    "or a hub id reachable from this machine."
                ) from e
        n_blocks = len(net.encoder.layer)
        taps = tuple(int(t) for t in taps)
        if not taps or min(taps) < 0 or max(taps) >= n_blocks:
            raise ValueError(f"taps must be block indices in 0..{n_blocks - 1}; got {taps}.")
        patch = net.config.patch_size
        if image_size <= 0 or image_size % patch:
            raise ValueError(
                f"image_size must be a positive multiple of the patch size {patch}; got {image_size}."
            )
        # Blocks after the last tap are never needed.
        net.encoder.layer = net.encoder.layer[: max(taps) + 1]
        self.model = net.requires_grad_(False).eval()
        self.taps, self.image_size = taps, image_size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def channels(self) -> list[int]:
        return [self.model.config.hidden_size] * len(self.taps)

    def encode(
        self, frames: Tensor, draws: tuple[Tensor, ...] = (), text_emb: Tensor | None = None
    ) -> list[Tensor]:
        """frames [N, 3, H, W] in [-1, 1] -> per tap [N, (S/p)^2, hidden] (S = image_size).

        Draws nothing; ``draws`` and ``text_emb`` are unused (the common interface).
        """
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(
                f"DinoV2Backbone takes RGB frames [N, 3, H, W]; got {tuple(frames.shape)}."
            )
        x = (frames + 1) / 2
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(
                x,
                size=(self.image_size, self.image_size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        x = ((x - self.mean) / self.std).to(self.model.dtype)
        hidden = self.model(pixel_values=x, output_hidden_states=True).hidden_states
        # hidden[0] is the embedding output; hidden[i + 1] the output of block i. Token 0 is CLS.
        return [hidden[t + 1][:, 1:] for t in self.taps]


class LatentUNetBackbone(FrameBackbone):
    """The frozen teacher UNet's encoder on noised latent frames.

    Each call draws t ~ U{t_range} and eps ~ N(0, I) per frame from ``generator``, forms
    x_t = add_noise(schedule, frames, eps, t) and returns ``features_fn``'s maps
    flattened to tokens. The backbone does not own the UNet: its weights are neither
    parameters nor state of this module (the teacher belongs to the model layer, and in
    the LoRA recipe it is the student with adapters disabled).

    Args:
        features_fn: (x_t [N, C, 1, h, w], t [N], text_emb [N, L, D]) ->
            list of [N, C_i, 1, h_i, w_i] (e.g. ``VideoDenoiser.encoder_features``).
        schedule: the teacher's noise schedule (mcm.diffusion).
        t_range (tuple[int, int]): inclusive timestep range of the noise level.
            Default: (0, 500).
        channels (Sequence[int] | None): C_i of the feature maps; if None, call
            :meth:`probe_channels` once before building heads.
        null_text_emb (Tensor | None): [1, L, D] context used when ``forward`` gets no
            ``text_emb`` (e.g. the empty-prompt embedding: the UNet then extracts
            unconditional features and the caption enters only through the heads).

    Raises:
        ValueError: an empty or out-of-schedule t_range.
    """

    input_kind = "latent"

    def __init__(
        self,
        features_fn: FeaturesFn,
        schedule: NoiseSchedule,
        t_range: tuple[int, int] = (0, 500),
        channels: Sequence[int] | None = None,
        null_text_emb: Tensor | None = None,
    ):
        super().__init__()
        lo, hi = (int(t) for t in t_range)
        T = schedule.num_train_timesteps
        if not 0 <= lo <= hi < T:
            raise ValueError(f"t_range must satisfy 0 <= lo <= hi < {T}; got {t_range}.")
        # Plain attribute, not a submodule: the teacher's weights stay out of this module.
        self.__dict__["features_fn"] = features_fn
        self.schedule, self.t_range = schedule, (lo, hi)
        self._channels = list(channels) if channels is not None else None
        self.null_text_emb = null_text_emb

    @property
    def channels(self) -> list[int]:
        if self._channels is None:
            raise ValueError(
                "LatentUNetBackbone does not know its feature channels yet: pass "
                "channels=[...] or call probe_channels(frames, text_emb) first."
            )
        return self._channels

    @torch.no_grad()
    def probe_channels(self, frames: Tensor, text_emb: Tensor | None = None) -> list[int]:
        """Run ``features_fn`` once at t = 0 to learn (and store) C_i.

        frames [N, C, h, w]; text_emb [N, L, D] (default: ``null_text_emb``).
        """
        t = torch.zeros(frames.shape[0], dtype=torch.long, device=frames.device)
        if text_emb is None:
            if self.null_text_emb is None:
                raise ValueError(
                    "probe_channels needs text_emb (or null_text_emb at construction)."
                )
            text_emb = self.null_text_emb.to(frames.device).expand(frames.shape[0], -1, -1)
        feats = self.features_fn(frames.unsqueeze(2), t, text_emb)
        self._channels = [f.shape[1] for f in feats]
        return self._channels

    def draw(self, frames: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, ...]:
        """t ~ U{t_range} [N] and eps ~ N(0, I) [N, C, h, w] for latent frames [N, C, h, w]."""
        _check_latent_frames(frames)
        if generator is None:
            raise ValueError(
                "LatentUNetBackbone needs a torch.Generator (for the noise level and the noise)."
            )
        lo, hi = self.t_range
        N = frames.shape[0]
        t = torch.randint(lo, hi + 1, (N,), generator=generator, device=generator.device)
        eps = torch.randn(frames.shape, generator=generator, device=generator.device)
        return t.to(frames.device), eps.to(frames.device, frames.dtype)

    def encode(
        self, frames: Tensor, draws: tuple[Tensor, ...], text_emb: Tensor | None = None
    ) -> list[Tensor]:
        """latent frames [N, C, h, w], draws (t [N], eps [N, C, h, w]) from :meth:`draw`,
        text_emb [N, L, D] -> per tap [N, h_i*w_i, C_i].

        Without ``text_emb`` the ``null_text_emb`` given at construction is used.
        """
        _check_latent_frames(frames)
        N = frames.shape[0]
        if text_emb is None and self.null_text_emb is not None:
            text_emb = self.null_text_emb.to(frames.device).expand(N, -1, -1)
        if text_emb is None:
            raise ValueError(
                "LatentUNetBackbone needs text_emb [N, L, D] (the UNet's cross-attention "
                "context), or construct it with null_text_emb."
            )
        t, eps = draws
        x_t = add_noise(self.schedule, frames, eps, t)
        feats = self.features_fn(x_t.unsqueeze(2), t, text_emb)
        # [N, C_i, 1, h_i, w_i] -> [N, h_i*w_i, C_i]
        return [f.flatten(2).transpose(1, 2) for f in feats]


def _check_latent_frames(frames: Tensor) -> None:
    if frames.ndim != 4:
        raise ValueError(
            f"LatentUNetBackbone takes latent frames [N, C, h, w]; got {tuple(frames.shape)}."
        )
