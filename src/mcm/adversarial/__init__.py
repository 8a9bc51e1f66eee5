"""Layer 2: the frame discriminator (adversarial appearance learning).

Frozen backbone (DINOv2 on pixels, or the teacher UNet's encoder on noised latents) ->
token features of several layers -> trainable text-conditioned heads -> per-token
logits; hinge losses; feature-space gradient penalty with an adaptive weight;
differentiable augmentation; frame sampling from videos.
"""

from mcm.adversarial.augment import AUGMENTATIONS, diff_augment
from mcm.adversarial.backbones import DinoV2Backbone, FrameBackbone, LatentUNetBackbone
from mcm.adversarial.frames import real_frames_from_clips, sample_frames
from mcm.adversarial.heads import DiscriminatorHead, FrameDiscriminator
from mcm.adversarial.losses import (
    AdaptivePenaltyWeight,
    gradient_penalty,
    hinge_d_loss,
    hinge_g_loss,
)
from mcm.adversarial.spectral import SpectralNormConv1d

__all__ = [
    "AUGMENTATIONS",
    "AdaptivePenaltyWeight",
    "DinoV2Backbone",
    "DiscriminatorHead",
    "FrameBackbone",
    "FrameDiscriminator",
    "LatentUNetBackbone",
    "SpectralNormConv1d",
    "diff_augment",
    "gradient_penalty",
    "hinge_d_loss",
    "hinge_g_loss",
    "real_frames_from_clips",
    "sample_frames",
]
