"""The frozen image VAE applied to videos frame by frame, in chunks.

Pixels are [B, 3, F, H, W] in [-1, 1]; latents are [B, C, F, H/d, W/d] already multiplied
by the VAE's scaling factor (and shifted by its shift factor where it has one), so the
diffusion layer never sees unscaled latents.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def frames_first(video: Tensor) -> Tensor:
    """[B, C, F, H, W] -> [B*F, C, H, W] (frame-major within each video)."""
    B, C, F, H, W = video.shape
    return video.permute(0, 2, 1, 3, 4).reshape(B * F, C, H, W)


def frames_back(frames: Tensor, batch_size: int) -> Tensor:
    """[B*F, C, H, W] -> [B, C, F, H, W]; inverse of :func:`frames_first`."""
    N, C, H, W = frames.shape
    return frames.reshape(batch_size, N // batch_size, C, H, W).permute(0, 2, 1, 3, 4)


class VideoVAE(nn.Module):
    """Chunked, scaled encode/decode of videos with a diffusers ``AutoencoderKL``.

    Args:
        vae: the image VAE; frozen here (``requires_grad_(False)``, eval).
        chunk_size: frames per VAE call (bounds peak memory; results do not depend on it
            when encoding deterministically).
    """

    def __init__(self, vae: nn.Module, chunk_size: int = 16):
        super().__init__()
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1; got {chunk_size}.")
        self.vae = vae.eval().requires_grad_(False)
        self.chunk_size = chunk_size

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def shift_factor(self) -> float:
        return float(getattr(self.vae.config, "shift_factor", None) or 0.0)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def downsample(self) -> int:
        """Spatial downsampling factor d (pixels per latent along H and W)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @torch.no_grad()
    def encode(self, video: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Pixels [B, 3, F, H, W] in [-1, 1] -> scaled latents [B, C, F, H/d, W/d] (fp32).

        With ``generator`` the latent is a draw from the VAE posterior (as the reference
        trainer does); without it, the posterior mean (deterministic). No gradient.
        """
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"video must be [B, 3, F, H, W]; got shape {tuple(video.shape)}.")
        frames = frames_first(video).to(self.vae.device, self.dtype)
        latents = []
        for chunk in frames.split(self.chunk_size):
            dist = self.vae.encode(chunk).latent_dist
            latents.append(dist.sample(generator) if generator is not None else dist.mode())
        z = torch.cat(latents).float()
        z = (z - self.shift_factor) * self.scaling_factor
        return frames_back(z, video.shape[0])

    def decode(self, latents: Tensor) -> Tensor:
        """Scaled latents [B, C, F, h, w] -> pixels [B, 3, F, h*d, w*d] (fp32, not clamped).

        Keeps the autograd graph when called with gradients enabled (a pixel-space
        discriminator decodes the student's output with gradient).
        """
        if latents.ndim != 5 or latents.shape[1] != self.latent_channels:
            raise ValueError(
                f"latents must be [B, {self.latent_channels}, F, h, w]; got {tuple(latents.shape)}."
            )
        z = frames_first(latents) / self.scaling_factor + self.shift_factor
        z = z.to(self.dtype)
        frames = [self.vae.decode(chunk).sample for chunk in z.split(self.chunk_size)]
        return frames_back(torch.cat(frames).float(), latents.shape[0])
