"""Layer 4: video and image datasets -> batches, decoded with PyAV, robust to bad files.

Sources: a folder of media with same-name ``.txt`` captions (or a captions file), CSV and
JSONL manifests (WebVid's columns work as-is), webdataset shards (local, http(s), pipe: with
``MCM_ALLOW_PIPE=1``; brace patterns; resampling). Batches:

* video: ``{"video": [B, 3, F, H, W] in [-1, 1], "caption": list[str], "key": list[str]}``,
  or ``{"latents": [B, C, F, h, w], "text_emb": [B, L, D], ...}`` from a latent cache;
* image: ``{"image": [B, 3, H, W] in [-1, 1], "caption": list[str], "key": list[str]}``.

Typical use::

    cfg = VideoDataConfig(source="clips/", num_frames=16, resolution=256)
    loader = make_dataloader(build_video_dataset(cfg), batch_size=4, num_workers=4,
                             seed=0, rank=rank, world_size=world_size)
    for batch in loader: ...            # infinite; loader.state_dict() saves the position
    print(loader.bad_log.summary())     # skipped files per reason
"""

from mcm.data.badlog import BAD_REASONS, FILTER_REASONS, BadDataError, BadSample, BadSampleLog
from mcm.data.config import ImageDataConfig, VideoDataConfig, config_from_dict
from mcm.data.datasets import (
    ImageDataset,
    MediaDataset,
    VideoDataset,
    build_image_dataset,
    build_video_dataset,
)
from mcm.data.decode import crop_box, decode_image, decode_video, frame_indices
from mcm.data.loader import (
    ResumableLoader,
    build_image_loader,
    build_video_loader,
    make_dataloader,
)

__all__ = [
    "BAD_REASONS",
    "FILTER_REASONS",
    "BadDataError",
    "BadSample",
    "BadSampleLog",
    "ImageDataConfig",
    "ImageDataset",
    "MediaDataset",
    "ResumableLoader",
    "VideoDataConfig",
    "VideoDataset",
    "build_image_dataset",
    "build_image_loader",
    "build_video_dataset",
    "build_video_loader",
    "config_from_dict",
    "crop_box",
    "decode_image",
    "decode_video",
    "frame_indices",
    "make_dataloader",
]
