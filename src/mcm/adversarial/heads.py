"""Trainable, text-conditioned discriminator heads on frozen backbone tokens.

Each tapped layer gets a :class:`DiscriminatorHead`: 1-D convs over the token sequence
with spectral norm, normalisation and LeakyReLU, a residual block, a projection to
``cmap_dim`` (64) channels, and projection conditioning on the caption:

    logit[n, l] = sum_c feat[n, c, l] * (W e_n)[c] / sqrt(cmap_dim)

with e_n the frozen pooled text embedding and W a trainable linear map (or, with
``conditional=False``, a trainable vector in place of W e_n: an unconditional head). The
unconditional form exists because projection conditioning can separate real from fake by
the captions alone when the image set's captions differ in form from the video prompts
(measured on the world: "a red circle" vs "a red circle moving left"). Normalisation
is GroupNorm with one group, i.e. per sample (never across the batch), so each frame's
logits depend on that frame alone - the per-sample gradient penalty relies on this.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from mcm.adversarial.augment import diff_augment, parse_policy
from mcm.adversarial.backbones import FrameBackbone
from mcm.adversarial.losses import gradient_penalty, hinge_d_loss
from mcm.adversarial.spectral import SpectralNormConv1d

HEAD_STYLES = ("mcm", "reference")


def _conv_block(c_in: int, c_out: int, kernel_size: int, padding_mode: str = "zeros"):
    return nn.Sequential(
        SpectralNormConv1d(c_in, c_out, kernel_size, padding_mode),
        nn.GroupNorm(1, c_out),
        nn.LeakyReLU(0.2),
    )


class DiscriminatorHead(nn.Module):
    """Per-token, text-conditioned logits for one tapped layer.

    Args:
        in_channels (int): C_i of the backbone tokens.
        text_dim (int): D of the pooled text embedding.
        hidden (int | None): conv width; None uses in_channels. Default: None.
        cmap_dim (int): projection width. Default: 64.
        kernel_size (int): odd kernel of the residual conv. Default: 9.
        conditional (bool): projection conditioning on the caption (the paper's); False
            replaces W e_n by a trainable vector and ignores the text. Default: True.
        style (str): "mcm": h + residual(h) with zero padding; "reference": the reference
            heads' (h + residual(h)) / sqrt(2) with circular padding. Default: "mcm".

    Raises:
        ValueError: non-positive sizes or an even kernel.
    """

    def __init__(
        self,
        in_channels: int,
        text_dim: int,
        hidden: int | None = None,
        cmap_dim: int = 64,
        kernel_size: int = 9,
        conditional: bool = True,
        style: str = "mcm",
    ):
        super().__init__()
        hidden = hidden or in_channels
        if style not in HEAD_STYLES:
            raise ValueError(f"style must be one of {HEAD_STYLES}; got {style!r}.")
        if min(in_channels, text_dim, hidden, cmap_dim, kernel_size) < 1 or kernel_size % 2 == 0:
            raise ValueError(
                "in_channels, text_dim, hidden, cmap_dim must be >= 1 and kernel_size odd; got "
                f"{in_channels}, {text_dim}, {hidden}, {cmap_dim}, {kernel_size}."
            )
        self.cmap_dim = cmap_dim
        self.stem = _conv_block(in_channels, hidden, 1)
        reference = style == "reference"
        self.residual_scale = 1 / math.sqrt(2) if reference else 1.0
        self.residual = _conv_block(
            hidden, hidden, kernel_size, "circular" if reference else "zeros"
        )
        self.to_cmap = SpectralNormConv1d(hidden, cmap_dim, 1)
        if conditional:
            self.text_proj = nn.Linear(text_dim, cmap_dim)  # W of the projection conditioning
        else:
            self.cond = nn.Parameter(torch.randn(cmap_dim) / math.sqrt(cmap_dim))

    def forward(self, tokens: Tensor, text_emb: Tensor) -> Tensor:
        """tokens [N, L, C_i], text_emb [N, D] -> logits [N, L]."""
        h = self.stem(tokens.transpose(1, 2))  # (N, hidden, L)
        h = (h + self.residual(h)) * self.residual_scale
        feat = self.to_cmap(h)  # (N, cmap, L)
        if hasattr(self, "text_proj"):
            cond = self.text_proj(text_emb.to(feat.dtype))  # (N, cmap)
        else:
            cond = self.cond.to(feat.dtype).expand(feat.shape[0], -1)
        return torch.einsum("ncl,nc->nl", feat, cond) / math.sqrt(self.cmap_dim)


class FrameDiscriminator(nn.Module):
    """Frozen backbone + one trainable head per tap.

    ``forward`` returns per-token logits of all heads concatenated, [N, sum_i L_i]; the
    hinge losses average over every element. Only the heads are trainable
    (:meth:`head_parameters`); the backbone is frozen.

    Use in a training step (signs: the D loss is minimised by the discriminator, the G
    loss by the student):

        fake = frames of the student's output (with gradient)
        D.requires_grad_heads(False)                             # L_G must not train D
        L_G = hinge_g_loss(D(fake, e_fake, g))                   # student's optimiser
        D.requires_grad_heads(True)
        with torch.no_grad():                                    # D step: backbone frozen,
            f_real, f_fake = D.features_of([real, fake.detach()], g)    # one backbone call
        L_D, _, _, gp = D.loss(f_real, f_fake, e_real, e_fake, g)      # heads: 2 calls
        (L_D + penalty_weight.update(gp.item(), step) * gp).backward()   # D's optimiser

    (:meth:`features_of` and :meth:`loss` compute what separate ``features``, ``logits`` and
    ``gradient_penalty`` calls compute, batched.)

    Args:
        backbone (FrameBackbone): the frozen feature extractor.
        text_dim (int): D of the pooled text embeddings.
        hidden (int | None): the heads' width, at most each tap's channels (the reference's
            heads are as wide as DINOv2-S, 384); None: each tap's channels. Default: None.
        cmap_dim (int): projection width. Default: 64.
        kernel_size (int): residual conv kernel. Default: 9.
        augment_policy (str): DiffAugment policy applied when ``augment=True``.
            Default: "color,translation,cutout".
        conditional (bool): text-conditioned heads (see :class:`DiscriminatorHead`).
            Default: True.
        head_style (str): see :class:`DiscriminatorHead`. Default: "mcm".
        gp_reduction (str): see :func:`mcm.adversarial.gradient_penalty`. Default: "mean".
    """

    def __init__(
        self,
        backbone: FrameBackbone,
        text_dim: int,
        hidden: int | None = None,
        cmap_dim: int = 64,
        kernel_size: int = 9,
        augment_policy: str = "color,translation,cutout",
        conditional: bool = True,
        head_style: str = "mcm",
        gp_reduction: str = "mean",
    ):
        super().__init__()
        parse_policy(augment_policy)
        self.backbone = backbone.requires_grad_(False)
        self.heads = nn.ModuleList(
            DiscriminatorHead(
                c, text_dim, min(hidden or c, c), cmap_dim, kernel_size, conditional, head_style
            )
            for c in backbone.channels
        )
        self.augment_policy = augment_policy
        self.gp_reduction = gp_reduction

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """The trainable parameters (give these, and only these, to D's optimiser)."""
        return self.heads.parameters()

    def requires_grad_heads(self, flag: bool) -> None:
        """Switch the heads' requires_grad, e.g. off during the student's step so that
        L_G leaves no gradient on D (the fakes still get theirs through the heads)."""
        self.heads.requires_grad_(flag)

    def head_state_dict(self) -> dict[str, Tensor]:
        """State of the heads only (the frozen backbone is not checkpointed)."""
        return self.heads.state_dict()

    def load_head_state_dict(self, state: dict[str, Tensor]) -> None:
        self.heads.load_state_dict(state)

    def features(
        self,
        frames: Tensor,
        generator: torch.Generator | None = None,
        augment: bool = True,
        text_emb: Tensor | None = None,
    ) -> list[Tensor]:
        """Augment (if asked) and run the backbone: frames [N, C, H, W] -> [[N, L_i, C_i]].

        ``text_emb`` [N, L, D] is the full text embedding, needed by the latent backbone.
        """
        frames = self._augment(frames, generator, augment)
        return self.backbone(frames, text_emb=text_emb, generator=generator)

    def features_of(
        self, groups: list[Tensor], generator: torch.Generator | None = None, augment: bool = True
    ) -> list[list[Tensor]]:
        """``[self.features(frames, generator, augment) for frames in groups]``, with the same
        draws (each batch's augmentation, then its backbone draws, batch after batch), in one
        call of the backbone network when the batches' frames have one size.

        groups: [[N_j, C, H, W]] -> per batch, per tap [N_j, L_i, C_i].
        """
        prepared = []
        for frames in groups:
            frames = self._augment(frames, generator, augment)
            prepared.append((frames, self.backbone.draw(frames, generator)))
        if len({f.shape[1:] for f, _ in prepared}) > 1:
            return [self.backbone.encode(f, d) for f, d in prepared]
        frames = torch.cat([f for f, _ in prepared])
        draws = tuple(torch.cat(parts) for parts in zip(*(d for _, d in prepared)))
        sizes = [f.shape[0] for f, _ in prepared]
        per_tap = [f.split(sizes) for f in self.backbone.encode(frames, draws)]
        return [list(batch) for batch in zip(*per_tap)]

    def _augment(self, frames: Tensor, generator: torch.Generator | None, augment: bool) -> Tensor:
        if not (augment and self.augment_policy):
            return frames
        if generator is None:
            raise ValueError("augment=True needs a torch.Generator (or pass augment=False).")
        return diff_augment(frames, generator, self.augment_policy)

    def logits(self, features: list[Tensor], text_emb_pooled: Tensor) -> Tensor:
        """Head logits: features [[N, L_i, C_i]], text_emb_pooled [N, D] -> [N, sum L_i]."""
        if len(features) != len(self.heads):
            raise ValueError(f"Expected {len(self.heads)} feature maps; got {len(features)}.")
        return torch.cat([h(f, text_emb_pooled) for h, f in zip(self.heads, features)], dim=1)

    def forward(
        self,
        frames: Tensor,
        text_emb_pooled: Tensor,
        generator: torch.Generator | None = None,
        augment: bool = True,
        text_emb: Tensor | None = None,
    ) -> Tensor:
        """frames [N, C, H, W], text_emb_pooled [N, D] -> per-token logits [N, sum L_i]."""
        return self.logits(self.features(frames, generator, augment, text_emb), text_emb_pooled)

    def gradient_penalty(
        self,
        real_features: list[Tensor],
        fake_features: list[Tensor],
        real_text: Tensor,
        fake_text: Tensor,
        generator: torch.Generator,
    ) -> Tensor:
        """:func:`mcm.adversarial.gradient_penalty` with this discriminator's heads."""
        return gradient_penalty(
            self.logits,
            real_features,
            fake_features,
            real_text,
            fake_text,
            generator,
            self.gp_reduction,
        )

    def loss(
        self,
        real_features: list[Tensor],
        fake_features: list[Tensor],
        real_text: Tensor,
        fake_text: Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """The discriminator's hinge loss, from one call of the heads on the real and fake
        features together, and, given a ``generator``, its gradient penalty
        (:meth:`gradient_penalty`, u drawn from ``generator``), a second call on the
        interpolates.

        Features [[N, L_i, C_i]], pooled texts [N, D] -> (hinge_d_loss, real logits, fake
        logits, penalty or None).

        The same values as separate :meth:`logits` calls (the heads are per sample), except
        in training mode, where the heads' spectral norms take one power-method step per
        call: two per discriminator step. The interpolates get their own call because the
        penalty's double backward runs over every row of the call that made its logits: on
        heads that read many tokens (DINOv2's 256 per frame) that would cost more than the
        extra pass over the heads' weights it saves on the latent discriminator's.
        """
        features, texts = [real_features, fake_features], [real_text, fake_text]
        if all(len({f.shape[1:] for f in tap}) == 1 for tap in zip(*features)):
            joined = [torch.cat(tap) for tap in zip(*features)]
            logits = self.logits(joined, torch.cat(texts)).split([t.shape[0] for t in texts])
        else:  # tokens of different sizes: one call each
            logits = [self.logits(f, t) for f, t in zip(features, texts)]
        hinge = hinge_d_loss(logits[0], logits[1])
        penalty = None
        if generator is not None:
            penalty = self.gradient_penalty(
                real_features, fake_features, real_text, fake_text, generator
            )
        return hinge, logits[0], logits[1], penalty
