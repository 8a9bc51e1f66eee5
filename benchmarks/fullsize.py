"""Configs of the full-size ModelScopeT2V architecture shared by the benchmarks (random
weights are built from these; nothing is downloaded)."""

from mcm.models.tiny import modelscope_scheduler

# ModelScopeT2V (damo-vilab/text-to-video-ms-1.7b): UNet, VAE, text encoder, scheduler.
MODELSCOPE_UNET = dict(
    sample_size=32,
    in_channels=4,
    out_channels=4,
    down_block_types=(
        "CrossAttnDownBlock3D",
        "CrossAttnDownBlock3D",
        "CrossAttnDownBlock3D",
        "DownBlock3D",
    ),
    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    norm_num_groups=32,
    cross_attention_dim=1024,
    attention_head_dim=64,
)
SD_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=256,
    scaling_factor=0.18215,
)
OPENCLIP_H_TEXT = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=23,
    num_attention_heads=16,
    hidden_act="gelu",
    projection_dim=512,
)
MODELSCOPE_SCHEDULER = {"_class_name": "DDIMScheduler", **modelscope_scheduler().config}
