"""The flow-matching world teacher's model configs: a small stock ``WanPipeline``.

The counterpart of :mod:`mcm.world.pipeline` (the UNet world teacher) for Wan-family
teachers, on the same world (prompts, clips, images), at 9 frames (Wan's VAE takes 4k + 1):

* ``AutoencoderKLWan`` (width 16): 9 frames of 32x32 RGB <-> latents [16, 3, 8, 8] (4x
  spatial, 4x causal temporal compression; the first latent frame encodes the first frame
  alone).
* ``UMT5EncoderModel`` (2 layers, d_model 128) with the world tokenizer (every world word
  one token, 16 tokens).
* ``WanTransformer3DModel``: width 192 (6 heads of 32), 8 blocks, feed-forward 768, patch
  (1, 1, 1): 192 tokens per clip, 5.1M parameters (10 MB in fp16).
* ``UniPCMultistepScheduler`` set up as the released Wan2.1 folders ship it (flow
  prediction on shifted flow sigmas).

Sizes should follow the cost shares of a real Wan call, where the transformer, not the VAE,
dominates: decoding one clip should cost at most about one transformer call
(:func:`call_costs` measures both; docs/WORLD.md, "A flow-matching world teacher", has the
numbers).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from diffusers import AutoencoderKLWan, WanPipeline, WanTransformer3DModel
from transformers import UMT5Config, UMT5EncoderModel

from mcm.models.tiny import wan_scheduler
from mcm.world.pipeline import world_tokenizer
from mcm.world.scenes import DEFAULT_SIZE

WAN_FRAMES = 9  # 4k + 1: the world's 8-frame motion plus one frame


@dataclass(frozen=True)
class WorldWanConfig:
    """Sizes of the flow-matching world teacher.

    The VAE is as wide as the world's colours and shapes need (width 8 with 4 channels
    kept 77 % of the shapes after 13,738 steps, docs/WORLD.md); the transformer reads every
    latent pixel as a token (patch 1: 192 tokens per clip, where patch 2 gives 48 covering
    8x8 pixels each), which also makes one of its calls cost more than one decode, as in a
    real Wan call (:func:`call_costs`)."""

    size: int = DEFAULT_SIZE
    num_frames: int = WAN_FRAMES
    latent_channels: int = 16  # Wan2.1's number
    vae_base_dim: int = 16
    vae_decoder_dim: int | None = None  # the decoder's base width (None: vae_base_dim)
    vae_dim_mult: tuple[int, ...] = (1, 2, 2)  # 2 downsamplings: 4x spatial
    text_hidden: int = 128
    text_layers: int = 2
    text_heads: int = 4
    max_tokens: int = 16
    patch_size: tuple[int, int, int] = (1, 1, 1)
    heads: int = 6
    head_dim: int = 32
    layers: int = 8
    ffn_dim: int = 768
    flow_shift: float = 3.0

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        """[C, F', h, w] of one clip's latents."""
        down = 2 ** (len(self.vae_dim_mult) - 1)
        frames = 1 + (self.num_frames - 1) // 4
        return (self.latent_channels, frames, self.size // down, self.size // down)


def world_wan_vae(config: WorldWanConfig) -> AutoencoderKLWan:
    """Causal video VAE: [N, 3, 9, 32, 32] <-> [N, 16, 3, 8, 8]. Its ``latents_mean`` /
    ``latents_std`` start at 0 / 1; the build sets them from its encoded clips."""
    steps = len(config.vae_dim_mult) - 1
    c = config.latent_channels
    return AutoencoderKLWan(
        base_dim=config.vae_base_dim,
        decoder_base_dim=config.vae_decoder_dim,
        z_dim=c,
        dim_mult=list(config.vae_dim_mult),
        num_res_blocks=1,
        temperal_downsample=[True] * steps,  # 4x in time over the two downsamplings
        scale_factor_spatial=2**steps,
        scale_factor_temporal=4,
        latents_mean=[0.0] * c,
        latents_std=[1.0] * c,
    )


def world_umt5(config: WorldWanConfig, tokenizer) -> UMT5EncoderModel:
    return UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer),
            d_model=config.text_hidden,
            d_kv=config.text_hidden // config.text_heads,
            num_heads=config.text_heads,
            d_ff=4 * config.text_hidden,
            num_layers=config.text_layers,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def world_wan_transformer(config: WorldWanConfig) -> WanTransformer3DModel:
    """A small Wan DiT on latents [B, 16, 3, 8, 8] (192 tokens at patch 1), cross-attending
    to UMT5."""
    return WanTransformer3DModel(
        patch_size=config.patch_size,
        num_attention_heads=config.heads,
        attention_head_dim=config.head_dim,
        in_channels=config.latent_channels,
        out_channels=config.latent_channels,
        text_dim=config.text_hidden,
        freq_dim=256,
        ffn_dim=config.ffn_dim,
        num_layers=config.layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )


def world_wan_components(config: WorldWanConfig | None = None, seed: int = 0) -> dict:
    """Freshly initialised components keyed as ``WanPipeline`` wants: {"vae",
    "text_encoder", "tokenizer", "transformer", "scheduler"}. Same seed -> same weights."""
    config = config or WorldWanConfig()
    tokenizer = world_tokenizer(config.max_tokens)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = world_wan_vae(config)
        text_encoder = world_umt5(config, tokenizer)
        transformer = world_wan_transformer(config)
    return {
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "transformer": transformer,
        "scheduler": wan_scheduler(config.flow_shift),
    }


@torch.no_grad()
def call_costs(
    components: dict, config: WorldWanConfig | None = None, repeats: int = 5, batch: int = 1
) -> dict:
    """Seconds per clip of one transformer call and of one VAE decode, at ``batch`` clips
    per call on the components' device: the median of ``repeats`` after a warm-up."""
    config = config or WorldWanConfig()
    transformer, vae = components["transformer"].eval(), components["vae"].eval()
    device = next(transformer.parameters()).device
    z = torch.randn(batch, *config.latent_shape, device=device)
    text = torch.randn(batch, config.max_tokens, config.text_hidden, device=device)
    t = torch.full((batch,), 500, device=device)

    def median_seconds(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return sorted(times)[len(times) // 2] / batch

    return {
        "transformer_call_s": median_seconds(
            lambda: transformer(z, timestep=t, encoder_hidden_states=text)
        ),
        "vae_decode_s": median_seconds(lambda: vae.decode(z)),
    }


def world_wan_pipeline(components: dict) -> WanPipeline:
    """Assemble the stock diffusers ``WanPipeline`` from world components."""
    return WanPipeline(**components)
