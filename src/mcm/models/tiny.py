"""Tiny, complete text-to-video pipelines built offline from configs (tests, CPU debugging).

The builders return *stock* diffusers pipeline objects with random weights: a
``TextToVideoSDPipeline`` (ModelScope layout: UNet3DConditionModel), an
``AnimateDiffPipeline`` (UNet2DConditionModel + MotionAdapter -> UNetMotionModel) and a
``WanPipeline`` (WanTransformer3DModel, AutoencoderKLWan, UMT5 with the same offline
tokenizer, a flow UniPC scheduler set up as the released Wan2.1 folders ship it). Each
builds in well under a second and round-trips through ``save_pretrained`` /
``DiffusionPipeline.from_pretrained``.

Weights are drawn under a forked RNG seeded with ``seed``, so the same seed gives the same
pipeline and the caller's global RNG is left untouched.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AnimateDiffPipeline,
    AutoencoderKL,
    AutoencoderKLWan,
    DDIMScheduler,
    MotionAdapter,
    StableDiffusionPipeline,
    TextToVideoSDPipeline,
    UNet2DConditionModel,
    UNet3DConditionModel,
    UNetMotionModel,
    UniPCMultistepScheduler,
    WanPipeline,
    WanTransformer3DModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, UMT5Config, UMT5EncoderModel

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def byte_to_unicode() -> dict[int, str]:
    """The byte-level BPE alphabet: every byte -> one printable unicode character.

    Printable Latin-1 bytes map to themselves; the other bytes map to 256, 257, ... in
    order, so that no byte maps to whitespace or a control character (GPT-2's scheme, which
    CLIP's byte-level pre-tokenizer uses).
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("\xa1"), ord("\xac") + 1),
        *range(ord("\xae"), ord("\xff") + 1),
    ]
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def build_clip_tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    """A CLIP tokenizer with a byte-level vocabulary and no merges (offline, no files).

    Vocab: the 256 byte symbols, the same 256 with the end-of-word suffix ``</w>``, then
    ``<|startoftext|>`` (512) and ``<|endoftext|>`` (513, also the pad token): 514 ids.
    Every character of a prompt becomes one token.
    """
    symbols = list(byte_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": 256 + i for i, s in enumerate(symbols)})
    vocab[BOS], vocab[EOS] = 512, 513
    return CLIPTokenizer(
        vocab=vocab,
        merges=[],
        unk_token=EOS,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        model_max_length=model_max_length,
    )


def tiny_text_encoder(tokenizer: CLIPTokenizer, hidden_size: int = 32) -> CLIPTextModel:
    """A 2-layer CLIP text encoder matched to ``tokenizer`` (embedding width ``hidden_size``)."""
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=hidden_size,
    )
    return CLIPTextModel(config).eval()


def tiny_vae(latent_channels: int = 4) -> AutoencoderKL:
    """A 2-level AutoencoderKL: pixels [N, 3, H, W] <-> latents [N, 4, H/2, W/2]."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=8,
        sample_size=32,
    ).eval()


def _tiny_unet(cls, dims: str, cross_attention_dim: int, time_cond_proj_dim: int | None):
    """The two-level UNet of both families; ``dims`` ("2D" | "3D") picks its block types."""
    return cls(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=(f"CrossAttnDownBlock{dims}", f"DownBlock{dims}"),
        up_block_types=(f"UpBlock{dims}", f"CrossAttnUpBlock{dims}"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        norm_num_groups=32,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        time_cond_proj_dim=time_cond_proj_dim,
    )


def tiny_unet3d(cross_attention_dim: int = 32, time_cond_proj_dim: int | None = None):
    """A ModelScope-layout UNet3DConditionModel with two levels (~1.3M parameters)."""
    return _tiny_unet(UNet3DConditionModel, "3D", cross_attention_dim, time_cond_proj_dim)


def tiny_unet2d(cross_attention_dim: int = 32, time_cond_proj_dim: int | None = None):
    """An SD1.5-layout UNet2DConditionModel with two levels (the AnimateDiff base)."""
    return _tiny_unet(UNet2DConditionModel, "2D", cross_attention_dim, time_cond_proj_dim)


def tiny_motion_adapter() -> MotionAdapter:
    """A MotionAdapter matching :func:`tiny_unet2d` (one motion module per layer)."""
    return MotionAdapter(
        block_out_channels=(32, 64),
        motion_layers_per_block=1,
        motion_mid_block_layers_per_block=1,
        motion_num_attention_heads=2,
        motion_norm_num_groups=32,
        motion_max_seq_length=32,
        use_motion_mid_block=True,
    )


def tiny_unet_motion(cross_attention_dim: int = 32, time_cond_proj_dim: int | None = None):
    """:func:`tiny_unet2d` + :func:`tiny_motion_adapter` joined into a UNetMotionModel.

    Returns (unet_motion, motion_adapter).
    """
    unet2d = tiny_unet2d(cross_attention_dim, time_cond_proj_dim)
    adapter = tiny_motion_adapter()
    return UNetMotionModel.from_unet2d(unet2d, adapter), adapter


def modelscope_scheduler(beta_schedule: str = "scaled_linear") -> DDIMScheduler:
    """DDIM with ModelScopeT2V's training schedule and sampling settings (scaled_linear
    0.00085..0.012, epsilon, no clipping, leading spacing with offset 1); AnimateDiff
    trains with ``beta_schedule="linear"``."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule=beta_schedule,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type="epsilon",
    )


def tiny_modelscope_pipeline(seed: int = 0, time_cond_proj_dim: int | None = None):
    """A stock ``TextToVideoSDPipeline`` with tiny random weights (ModelScopeT2V layout).

    Scheduler: DDIM on scaled_linear betas 0.00085..0.012 (ModelScopeT2V's).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = build_clip_tokenizer()
        return TextToVideoSDPipeline(
            vae=tiny_vae(),
            text_encoder=tiny_text_encoder(tokenizer),
            tokenizer=tokenizer,
            unet=tiny_unet3d(time_cond_proj_dim=time_cond_proj_dim),
            scheduler=modelscope_scheduler("scaled_linear"),
        )


def tiny_animatediff_pipeline(seed: int = 0, time_cond_proj_dim: int | None = None):
    """A stock ``AnimateDiffPipeline`` with tiny random weights (SD1.5 UNet + MotionAdapter).

    Scheduler: DDIM on linear betas 0.00085..0.012 (what AnimateDiff trains with).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = build_clip_tokenizer()
        unet, adapter = tiny_unet_motion(time_cond_proj_dim=time_cond_proj_dim)
        return AnimateDiffPipeline(
            vae=tiny_vae(),
            text_encoder=tiny_text_encoder(tokenizer),
            tokenizer=tokenizer,
            unet=unet,
            motion_adapter=adapter,
            scheduler=modelscope_scheduler("linear"),
        )


def tiny_sd15_pipeline_and_adapter(seed: int = 0):
    """An SD1.5-layout ``StableDiffusionPipeline`` and a separate ``MotionAdapter``.

    The other way AnimateDiff teachers come: an image model plus a motion adapter
    (``load_teacher(sd_dir, motion_adapter=adapter_dir)``). Returns (pipeline, adapter).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = build_clip_tokenizer()
        pipe = StableDiffusionPipeline(
            vae=tiny_vae(),
            text_encoder=tiny_text_encoder(tokenizer),
            tokenizer=tokenizer,
            unet=tiny_unet2d(),
            scheduler=modelscope_scheduler("linear"),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        return pipe, tiny_motion_adapter()


def wan_scheduler(flow_shift: float = 3.0) -> UniPCMultistepScheduler:
    """The scheduler the released Wan2.1 T2V folders ship: UniPC on flow sigmas
    (``prediction_type="flow_prediction"``, ``use_flow_sigmas``), flow_shift 3.0 (480p)
    or 5.0 (720p)."""
    return UniPCMultistepScheduler(
        num_train_timesteps=1000,
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=flow_shift,
        solver_order=2,
        beta_schedule="linear",
    )


def tiny_wan_transformer(text_dim: int = 32, latent_channels: int = 4) -> WanTransformer3DModel:
    """A 2-block WanTransformer3DModel (patch (1, 2, 2), 2 heads of 12, ~30k parameters)."""
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=latent_channels,
        out_channels=latent_channels,
        text_dim=text_dim,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )


def tiny_wan_vae(latent_channels: int = 4) -> AutoencoderKLWan:
    """A tiny AutoencoderKLWan: 8x spatial, 4x causal temporal compression (9 frames of
    32x32 -> 3 latent frames of 4x4); latents_mean 0, latents_std 1."""
    return AutoencoderKLWan(
        base_dim=3,
        z_dim=latent_channels,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * latent_channels,
        latents_std=[1.0] * latent_channels,
    ).eval()


def tiny_umt5(tokenizer, d_model: int = 32) -> UMT5EncoderModel:
    config = UMT5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=8,
        num_heads=4,
        d_ff=2 * d_model,
        num_layers=2,
        pad_token_id=tokenizer.pad_token_id,
    )
    return UMT5EncoderModel(config).eval()


def tiny_wan_pipeline(seed: int = 0, flow_shift: float = 3.0) -> WanPipeline:
    """A stock ``WanPipeline`` with tiny random weights and Wan2.1's scheduler config.

    Sample it with ``max_sequence_length=16`` (its tokenizer's length), 4k + 1 frames and
    sizes that are multiples of 16.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = build_clip_tokenizer(model_max_length=16)
        return WanPipeline(
            tokenizer=tokenizer,
            text_encoder=tiny_umt5(tokenizer),
            transformer=tiny_wan_transformer(),
            vae=tiny_wan_vae(),
            scheduler=wan_scheduler(flow_shift),
        )


TINY_BUILDERS = {
    "modelscope": tiny_modelscope_pipeline,
    "animatediff": tiny_animatediff_pipeline,
    "wan": tiny_wan_pipeline,
}


def save_tiny_pipeline(family: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Build the tiny pipeline of ``family`` ("modelscope" | "animatediff" | "wan") and save it.

    Returns the directory, loadable by ``DiffusionPipeline.from_pretrained``.
    """
    if family not in TINY_BUILDERS:
        raise ValueError(f"Unknown family {family!r}; choose one of {', '.join(TINY_BUILDERS)}.")
    out_dir = Path(out_dir)
    TINY_BUILDERS[family](seed=seed).save_pretrained(out_dir, safe_serialization=True)
    return out_dir
