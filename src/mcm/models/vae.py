"""The frozen VAE of a video model: an image VAE applied frame by frame
(:class:`VideoVAE`), or Wan's causal video VAE (:class:`WanVideoVAE`).

Pixels are [B, 3, F, H, W] in [-1, 1]; latents are [B, C, F', H/d, W/d] already normalised
as the model's pipeline expects (scaling and shift factors; Wan: per-channel mean and
std), so the diffusion layer never sees raw latents. F' = F for an image VAE; Wan
compresses time 4x causally: F' = 1 + (F - 1) / 4, the first latent frame encoding the
first frame alone and each later one four frames.
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
        return self._encode(video, generator)

    def encode_frames(self, frames: Tensor) -> Tensor:
        """Pixel frames [N, 3, H, W] -> latents [N, C, h, w], each frame encoded as an image
        (posterior mean), with gradient."""
        return self._encode(frames[:, :, None])[:, :, 0]

    def round_trip(self, frames: Tensor) -> Tensor:
        """Latent frames [N, C, h, w] -> the posterior mean of the image the decoder draws
        from them [N, C, h, w], with gradient: the latent frames without the directions the
        decoder ignores (a latent discriminator can be fooled along those)."""
        return self.encode_frames(self.decode(frames[:, :, None])[:, :, 0])

    def _encode(self, video: Tensor, generator: torch.Generator | None = None) -> Tensor:
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


class WanVideoVAE(VideoVAE):
    """``AutoencoderKLWan``: whole clips of F = 4k + 1 frames <-> latents [B, z, 1 + k, H/d,
    W/d], normalised as ``WanPipeline`` does ((z - latents_mean) / latents_std).

    ``chunk_size`` counts videos per VAE call. A single frame (F = 1) encodes to one latent
    frame: what an image becomes, and what the first latent frame of every video is.
    """

    temporal_compression = 4

    @property
    def scaling_factor(self) -> float:
        return 1.0

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.z_dim)

    @property
    def downsample(self) -> int:
        return int(self.vae.config.scale_factor_spatial)

    def _stats(self, ref: Tensor) -> tuple[Tensor, Tensor]:
        shape = (1, self.latent_channels, 1, 1, 1)
        mean = torch.tensor(self.vae.config.latents_mean).view(shape)
        std = torch.tensor(self.vae.config.latents_std).view(shape)
        return mean.to(ref.device, ref.dtype), std.to(ref.device, ref.dtype)

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames of a clip of ``num_frames`` = 4k + 1 frames.

        Raises:
            ValueError: num_frames is not 4k + 1 (Wan's VAE would silently drop frames).
        """
        if num_frames < 1 or (num_frames - 1) % self.temporal_compression:
            raise ValueError(
                f"Wan's VAE needs clips of 4k + 1 frames (1, 5, 9, ..., 81); got {num_frames}. "
                "Set data.video.num_frames to one of those."
            )
        return 1 + (num_frames - 1) // self.temporal_compression

    def _encode(self, video: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"video must be [B, 3, F, H, W]; got shape {tuple(video.shape)}.")
        self.latent_frames(video.shape[2])
        latents = []
        for chunk in video.to(self.vae.device, self.dtype).split(self.chunk_size):
            dist = self.vae.encode(chunk).latent_dist
            latents.append(dist.sample(generator) if generator is not None else dist.mode())
        z = torch.cat(latents).float()
        mean, std = self._stats(z)
        return (z - mean) / std

    def decode(self, latents: Tensor) -> Tensor:
        if latents.ndim != 5 or latents.shape[1] != self.latent_channels:
            raise ValueError(
                f"latents must be [B, {self.latent_channels}, F, h, w]; got {tuple(latents.shape)}."
            )
        mean, std = self._stats(latents)
        z = (latents * std + mean).to(self.dtype)
        videos = [self.vae.decode(chunk).sample for chunk in z.split(self.chunk_size)]
        return torch.cat(videos).float()
