"""The world teacher's model configs: the only place that knows its diffusers classes.

The world teacher is a stock diffusers ``TextToVideoSDPipeline`` (the ModelScope layout):

* ``AutoencoderKL`` with 3 blocks: 32x32 RGB frames <-> 4x8x8 latents (x4 downsampling).
* ``CLIPTextModel`` (2 layers, hidden 128) with an offline ``CLIPTokenizer`` whose BPE
  merges make every world word a single token (``model_max_length`` 16).
* ``UNet3DConditionModel`` on 8x8 latents, block_out_channels (32, 64).
* ``DDIMScheduler`` with the ModelScope settings (scaled_linear 0.00085-0.012, 1000
  steps, epsilon prediction, no clipping, ``set_alpha_to_one`` false).

Why these sizes: see docs/WORLD.md (measured CPU/GPU cost per training step).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    TextToVideoSDPipeline,
    UNet3DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from mcm.models.tiny import byte_to_unicode, modelscope_scheduler
from mcm.world.scenes import COLOURS, DEFAULT_FRAMES, DEFAULT_SIZE, DIRECTIONS, SHAPES

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# Every word of a world prompt ("a red circle moving left", "a red circle") becomes one token.
WORLD_WORDS = ("a", "moving", *SHAPES, *COLOURS, *DIRECTIONS)


@dataclass(frozen=True)
class WorldTeacherConfig:
    """Sizes of the world teacher. Defaults are the shipped teacher's."""

    size: int = DEFAULT_SIZE  # frame height = width in pixels
    num_frames: int = DEFAULT_FRAMES
    latent_channels: int = 4
    vae_channels: tuple[int, ...] = (32, 64, 64)  # 3 blocks: x4 downsampling
    text_hidden: int = 128
    text_layers: int = 2
    text_heads: int = 4
    max_tokens: int = 16
    unet_channels: tuple[int, ...] = (32, 64)
    unet_layers_per_block: int = 1
    unet_heads: int = 4  # UNet3D's `attention_head_dim` is really the number of heads
    unet_norm_groups: int = 32

    @property
    def latent_size(self) -> int:
        return self.size // 2 ** (len(self.vae_channels) - 1)


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE of one lower-case word (last symbol carries '</w>')."""
    parts = [*word[:-1], word[-1] + "</w>"]
    while len(parts) > 1:
        pairs = [(parts[i], parts[i + 1]) for i in range(len(parts) - 1)]
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(parts):
            if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                merged.append(parts[i] + parts[i + 1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return parts


def world_vocab_and_merges(words=WORLD_WORDS) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary (256 symbols + 256 word-final symbols) plus merges that
    turn each of ``words`` into one token. Any other text still tokenizes (byte-wise).

    New merges are appended with lower priority than all earlier ones, so adding a word
    never changes how an earlier word is split.
    """
    alphabet = list(byte_to_unicode().values())
    vocab_list = alphabet + [c + "</w>" for c in alphabet]
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        while len(parts := _bpe(word, ranks)) > 1:
            pair = (parts[0], parts[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            vocab_list.append(pair[0] + pair[1])
    vocab_list += [BOS, EOS]
    return {tok: i for i, tok in enumerate(vocab_list)}, merges


def world_tokenizer(max_tokens: int = 16) -> CLIPTokenizer:
    """The offline world tokenizer (no download): each world word is one token."""
    vocab, merges = world_vocab_and_merges()
    return CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=EOS,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        model_max_length=max_tokens,
    )


def world_text_encoder(config: WorldTeacherConfig, tokenizer: CLIPTokenizer) -> CLIPTextModel:
    """A tiny CLIP text transformer; its last hidden state is the UNet's cross-attention context."""
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.text_hidden,
        intermediate_size=4 * config.text_hidden,
        projection_dim=config.text_hidden,
        num_hidden_layers=config.text_layers,
        num_attention_heads=config.text_heads,
        max_position_embeddings=config.max_tokens,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(text_config)


def world_vae(config: WorldTeacherConfig) -> AutoencoderKL:
    """AutoencoderKL, len(vae_channels) blocks: frames [N, 3, H, W] <-> latents [N, 4, H/4, W/4]."""
    n = len(config.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=config.vae_channels,
        layers_per_block=1,
        latent_channels=config.latent_channels,
        norm_num_groups=16,
        sample_size=config.size,
        scaling_factor=1.0,  # set from the data after the VAE is trained
    )


def world_unet(config: WorldTeacherConfig) -> UNet3DConditionModel:
    """UNet3DConditionModel on latents [B, 4, F, 8, 8], cross-attending to the text encoder."""
    n = len(config.unet_channels)
    return UNet3DConditionModel(
        sample_size=config.latent_size,
        in_channels=config.latent_channels,
        out_channels=config.latent_channels,
        down_block_types=("CrossAttnDownBlock3D",) * (n - 1) + ("DownBlock3D",),
        up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * (n - 1),
        block_out_channels=config.unet_channels,
        layers_per_block=config.unet_layers_per_block,
        norm_num_groups=config.unet_norm_groups,
        cross_attention_dim=config.text_hidden,
        attention_head_dim=config.unet_heads,
    )


def world_scheduler() -> DDIMScheduler:
    """DDIM with ModelScope's training schedule and sampling settings."""
    return modelscope_scheduler()


def world_teacher_components(
    config: WorldTeacherConfig | None = None, seed: int = 0
) -> dict[str, object]:
    """Freshly initialised world teacher components, keyed as TextToVideoSDPipeline wants:
    {"vae", "text_encoder", "tokenizer", "unet", "scheduler"}. Same seed -> same weights."""
    config = config or WorldTeacherConfig()
    tokenizer = world_tokenizer(config.max_tokens)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # diffusers/transformers initialise from the global RNG
        vae = world_vae(config)
        text_encoder = world_text_encoder(config, tokenizer)
        unet = world_unet(config)
    return {
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "unet": unet,
        "scheduler": world_scheduler(),
    }


def world_pipeline(components: dict[str, object]) -> TextToVideoSDPipeline:
    """Assemble the stock diffusers text-to-video pipeline from world components."""
    return TextToVideoSDPipeline(**components)


def load_world_pipeline(path: str, device: str | torch.device = "cpu") -> TextToVideoSDPipeline:
    """Load a saved world teacher (e.g. ``mcm.paths.WORLD_TEACHER``) with stock diffusers."""
    pipe = TextToVideoSDPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
