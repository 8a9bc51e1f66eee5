"""A preview decoder: a tiny frame decoder distilled from a teacher's VAE (mcm-only).

The VAE decode is a fixed cost of every video, paid once whatever the step count: at one
or two student steps it is a large share of the call (docs/RESULTS.md, "Where a call's
time goes"). A preview decoder maps the same latents to frames at a fraction of that cost,
with a measured quality loss, for previews. It is a stock diffusers ``AutoencoderTiny``
whose decoder is trained by ``mcm decoder`` (:mod:`mcm.training.preview_decoder`)
to reproduce the teacher VAE's decode; its encoder is a minimal placeholder that is never
trained (``AutoencoderTiny`` needs one): use it to decode only.

It takes the VAE's raw latents and carries the teacher VAE's ``scaling_factor``, so a stock
``TextToVideoSDPipeline`` or ``AnimateDiffPipeline`` decodes with it as is
(``pipe.vae = AutoencoderTiny.from_pretrained(path)``). Exports keep the teacher's VAE:
stock diffusers loads them unchanged. Frame-wise (image) VAEs only: Wan's causal VAE
decodes four frames from each latent frame, which a frame decoder cannot.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderTiny
from torch import Tensor, nn

from mcm.models.vae import VideoVAE, WanVideoVAE, frames_back, frames_first

FRAME_WISE_ONLY = (
    "A preview decoder decodes frame by frame, and Wan's causal VAE decodes four frames from "
    "each latent frame: decode Wan latents with the teacher's VAE (no preview decoder)."
)


class PreviewDecoder(nn.Module):
    """Scaled latents [B, C, F, h, w] -> pixels [B, 3, F, h*d, w*d] with an ``AutoencoderTiny``
    decoder, frame by frame, as :meth:`VideoVAE.decode` takes and returns them.

    Args:
        model: the ``AutoencoderTiny`` (its config's ``scaling_factor`` is the teacher VAE's).
        chunk_size: frames per decoder call.
    """

    def __init__(self, model: AutoencoderTiny, chunk_size: int = 16):
        super().__init__()
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1; got {chunk_size}.")
        self.model = model
        self.chunk_size = chunk_size

    @classmethod
    def for_vae(cls, vae: VideoVAE, width: int = 64, blocks: int = 3) -> PreviewDecoder:
        """A fresh (untrained) decoder for ``vae``'s latents: one stage per 2x upsampling
        plus one, ``blocks`` residual blocks of ``width`` channels per stage (TAESD's
        layout; its defaults are width 64, 3 blocks).

        Raises:
            ValueError: ``vae`` is Wan's causal video VAE, or its downsampling is not a power of 2.
        """
        if isinstance(vae, WanVideoVAE):
            raise ValueError(FRAME_WISE_ONLY)
        d = vae.downsample
        if d < 1 or d & (d - 1):
            raise ValueError(f"the VAE's downsampling must be a power of 2; got {d}.")
        stages = d.bit_length()  # log2(d) upsamplings between log2(d) + 1 stages
        model = AutoencoderTiny(
            latent_channels=vae.latent_channels,
            decoder_block_out_channels=(width,) * stages,
            num_decoder_blocks=(blocks,) * (stages - 1) + (1,),
            encoder_block_out_channels=(8,) * stages,  # the untrained placeholder
            num_encoder_blocks=(1,) * stages,
            scaling_factor=vae.scaling_factor,
            shift_factor=vae.shift_factor,
        )
        return cls(model, vae.chunk_size)

    @classmethod
    def from_pretrained(cls, path: str | Path, chunk_size: int = 16) -> PreviewDecoder:
        """Load a decoder saved by :meth:`save_pretrained` (or ``mcm decoder``).

        Raises:
            FileNotFoundError: ``path`` holds no ``config.json`` of an ``AutoencoderTiny``.
        """
        if not (Path(path) / "config.json").is_file():
            raise FileNotFoundError(
                f"No preview decoder at {path}: the folder must hold config.json and the "
                "weights written by `mcm decoder --out DIR`."
            )
        return cls(AutoencoderTiny.from_pretrained(path).eval().requires_grad_(False), chunk_size)

    def save_pretrained(self, path: str | Path) -> None:
        self.model.save_pretrained(path)

    def check_vae(self, vae: VideoVAE) -> None:
        """Raise ValueError unless this decoder decodes ``vae``'s latents (a frame-wise VAE
        with the same latent channels, downsampling and scaling)."""
        if isinstance(vae, WanVideoVAE):
            raise ValueError(FRAME_WISE_ONLY)
        ups = 2 ** (len(self.model.config.decoder_block_out_channels) - 1)
        ours = (self.latent_channels, ups, self.scaling_factor)
        theirs = (vae.latent_channels, vae.downsample, vae.scaling_factor)
        if ours != theirs:
            raise ValueError(
                f"This preview decoder takes {ours[0]}-channel latents at x{ours[1]} with scaling "
                f"{ours[2]:g}; the teacher's VAE has {theirs[0]} channels at x{theirs[1]}, scaling "
                f"{theirs[2]:g}. Distil a decoder for this teacher: mcm decoder --config CFG --out DIR."
            )

    @property
    def latent_channels(self) -> int:
        return int(self.model.config.latent_channels)

    @property
    def scaling_factor(self) -> float:
        return float(self.model.config.scaling_factor)

    @property
    def shift_factor(self) -> float:
        return float(self.model.config.shift_factor or 0.0)

    def decode(self, latents: Tensor) -> Tensor:
        """Scaled latents [B, C, F, h, w] -> pixels [B, 3, F, h*d, w*d] (fp32, not clamped);
        with gradients when they are enabled (training)."""
        if latents.ndim != 5 or latents.shape[1] != self.latent_channels:
            raise ValueError(
                f"latents must be [B, {self.latent_channels}, F, h, w]; got {tuple(latents.shape)}."
            )
        param = next(self.model.parameters())
        z = frames_first(latents) / self.scaling_factor + self.shift_factor
        z = z.to(param.device, param.dtype)
        frames = [self.model.decode(chunk).sample for chunk in z.split(self.chunk_size)]
        return frames_back(torch.cat(frames).float(), latents.shape[0])
