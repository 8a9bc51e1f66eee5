"""Typed configs of the video and image data sources.

Config dataclasses (:func:`mcm.schema.config_dataclass`) with defaults: the training config
embeds them as-is, YAML sets only what differs. Types, ranges and choices are checked when a
config is made (a ``ValueError`` naming the field); ``validate()`` adds what depends on the
use (a source must be set unless a latent cache replaces it); the dataset builders call it.
"""

from __future__ import annotations

from dataclasses import field
from typing import Annotated, Literal

from pydantic import Field, model_validator

from mcm.errors import InputError
from mcm.schema import (
    Fraction,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    config_dataclass,
    from_dict,
)

SOURCE_FORMATS = ("auto", "folder", "csv", "jsonl", "webdataset")
SHORT_CLIP_POLICIES = ("skip", "lower_stride")
CROP_MODES = ("random", "center")
START_MODES = ("random", "first")

# ``S`` (S x S) or ``[H, W]``.
Resolution = PositiveInt | Annotated[list[PositiveInt], Field(min_length=2, max_length=2)]
# A random-resized-crop area fraction range [low, high] with 0 < low <= high <= 1.
CropScale = Annotated[list[Annotated[float, Field(gt=0, le=1)]], Field(min_length=2, max_length=2)]


def _check_crop_scale(config):
    lo, hi = config.crop_scale
    if lo > hi:
        raise ValueError(f"crop_scale: need low <= high, got {list(config.crop_scale)}.")
    return config


@config_dataclass
class _SourceFields:
    """Fields shared by video and image sources (see the subclasses for the full docs)."""

    source: str = ""
    """Where the data is. A folder of media files with same-name ``.txt`` captions (or a
    ``captions.{jsonl,csv,json}`` file in it); a ``.csv``/``.jsonl`` manifest; or webdataset
    shards: a ``.tar`` path, a folder of ``.tar`` files, a brace pattern such as
    ``shards/{000000..000099}.tar``, an ``http(s)://`` URL or a ``pipe:COMMAND`` (reads the
    stdout of COMMAND run by the shell; refused unless the environment sets
    ``MCM_ALLOW_PIPE=1``). Several patterns can be joined with ``::``."""

    format: Literal[SOURCE_FORMATS] = "auto"
    """One of ``auto``, ``folder``, ``csv``, ``jsonl``, ``webdataset``. ``auto`` decides from the
    source: ``.csv`` -> csv, ``.jsonl``/``.json`` -> jsonl, ``.tar``/braces/``pipe:`` or a folder
    holding only ``.tar`` files -> webdataset, any other folder -> folder."""

    captions_file: str | None = None
    """Folder sources: a CSV/JSONL manifest or a JSON ``{"relative/path.mp4": "caption"}`` file
    giving the captions instead of same-name ``.txt`` files. Default: same-name ``.txt`` files,
    or ``captions.jsonl``/``captions.csv``/``captions.json`` when the folder has one."""

    media_root: str | None = None
    """Manifests: the folder that relative paths are relative to (default: the manifest's own
    folder)."""

    path_column: str | None = None
    """Manifests: the column holding the file path or URL. Default: the first present of
    ``path, file, filepath, file_name, filename, video, video_path, image, image_path, url,
    contentUrl, URL``. A WebVid CSV (``videoid, contentUrl, duration, page_dir, name``) reads
    the local files ``{media_root}/{page_dir}/{videoid}.mp4`` when ``media_root`` is set, else
    streams ``contentUrl``."""

    caption_column: str | None = None
    """Manifests and webdataset ``.json``: the caption field. Default: the first present of
    ``caption, text, prompt, name, TEXT, title`` (``name`` is WebVid's caption column)."""

    min_side: NonNegativeInt = 16
    """Skip media whose shorter side (in pixels) is below this, as ``too_small`` (bad input).
    Applied to the decoded media, and before decoding when the metadata has width/height."""

    min_aesthetic: float | None = None
    """Filter: drop samples whose metadata aesthetic score (``aesthetic``, ``aesthetic_score``
    or ``AESTHETIC_SCORE``) is below this. Filtered samples are counted, not treated as bad.
    Samples without the score pass."""

    max_watermark_prob: Fraction | None = None
    """Filter: drop samples whose metadata watermark probability (``pwatermark``,
    ``watermark_prob``, ``watermark``) is above this. Samples without the score pass."""

    resolution: Resolution = 256
    """Output size: ``S`` for S x S or ``[H, W]``."""

    crop: Literal[CROP_MODES] = "random"
    """``random``: random-resized-crop (area fraction drawn from ``crop_scale`` of the largest
    box with the output aspect ratio, at a random position, same box for every frame of a clip).
    ``center``: the largest centred box with the output aspect ratio (deterministic)."""

    shuffle: bool = True
    """Shuffle the sample order each epoch (manifests/folders) or through a shuffle buffer and a
    shard shuffle (webdataset). The order is a function of the seed, rank and worker count."""

    shuffle_buffer: PositiveInt = 1000
    """Webdataset: size of the in-memory shuffle buffer of each worker (samples)."""

    resampled: bool = False
    """Webdataset: each rank and worker draws shards at random with replacement (infinite,
    no epochs) instead of splitting the shard list; use when shards are fewer than
    ``world_size * num_workers`` or unequal."""

    max_bad_fraction: Fraction = 0.05
    """Stop with an error once more than this fraction of the distinct samples seen were bad
    (undecodable, truncated, empty, too short, ...), after ``min_samples_before_abort``."""

    min_samples_before_abort: NonNegativeInt = 100
    """Distinct samples to see before ``max_bad_fraction`` is enforced."""

    num_workers: NonNegativeInt = 2
    """DataLoader worker processes (0: decode in the training process)."""

    download_timeout: PositiveFloat = 30.0
    """Seconds to wait for one remote file or shard (``http(s)://`` URLs)."""

    def output_size(self) -> tuple[int, int]:
        """The output (height, width)."""
        r = self.resolution
        return (r, r) if isinstance(r, int) else (int(r[0]), int(r[1]))

    def _validate_source(self) -> None:
        if not self.source:
            raise InputError("source is empty: set it to a folder, a CSV/JSONL manifest or shards.")


@config_dataclass
class VideoDataConfig(_SourceFields):
    """A video-clip source and how clips become ``[C, F, H, W]`` tensors in ``[-1, 1]``.

    Source fields (``source``, ``format``, ``captions_file``, ``media_root``, ``path_column``,
    ``caption_column``, filters, ``resolution``, ``crop``, shuffling, bad-input handling,
    ``num_workers``) are documented on each attribute. Video-specific fields:
    ``num_frames``, ``frame_stride``, ``fps``, ``start``, ``crop_scale``,
    ``short_clip_policy``, ``latent_cache``.
    """

    num_frames: PositiveInt = 16
    """Frames per clip (F)."""

    frame_stride: PositiveInt = 8
    """Take every ``frame_stride``-th decoded frame (reference MCM: 8). Ignored when ``fps``
    is set."""

    fps: PositiveFloat | None = None
    """Sample frames at this rate (frame times ``start + i / fps`` mapped to the nearest
    decoded frame) instead of a fixed stride."""

    start: Literal[START_MODES] = "random"
    """``random``: the first sampled frame is drawn uniformly among the positions where the
    whole clip fits; ``first``: always frame 0 (deterministic views, e.g. to compare runs)."""

    crop_scale: CropScale = field(default_factory=lambda: [0.75, 1.0])
    """Random-resized-crop area fraction range (reference MCM videos: 0.75-1.0)."""

    short_clip_policy: Literal[SHORT_CLIP_POLICIES] = "lower_stride"
    """When a clip has fewer frames than ``(num_frames - 1) * stride + 1``: ``skip`` it (counted
    as ``too_short``) or ``lower_stride`` (spread ``num_frames`` frames over the whole clip with
    a smaller stride; clips with fewer than ``num_frames`` frames are still skipped as
    ``too_short``)."""

    latent_cache: str | None = None
    """A folder written by ``mcm data cache-latents``. When set, batches carry ``latents``
    ``[B, C, F, h, w]`` and ``text_emb`` ``[B, L, D]`` read from it instead of ``video``, and
    training skips the VAE encode."""

    _crop_scale = model_validator(mode="after")(_check_crop_scale)

    def validate(self) -> VideoDataConfig:
        """Raise ``ValueError`` naming the field and the fix for a setting that cannot work
        (types, ranges and choices were checked when the config was made)."""
        if self.latent_cache is None:
            self._validate_source()
        return self


@config_dataclass
class ImageDataConfig(_SourceFields):
    """A still-image source (high-quality or style images for the frame discriminator).

    Images become ``[C, H, W]`` tensors in ``[-1, 1]``; decoding is done by PyAV (png, jpeg,
    webp, ...). See the attributes for every field.
    """

    crop_scale: CropScale = field(default_factory=lambda: [0.5, 1.0])
    """Random-resized-crop area fraction range (reference MCM images: 0.5-1.0)."""

    _crop_scale = model_validator(mode="after")(_check_crop_scale)

    def validate(self) -> ImageDataConfig:
        """Raise ``ValueError`` naming the field and the fix for a setting that cannot work."""
        self._validate_source()
        return self


def config_from_dict(cls, values: dict, prefix: str = ""):
    """Build ``cls`` (a data config class) from a dict: unknown keys, wrong types and values
    out of range are a :class:`~mcm.errors.ConfigError` naming each key (after ``prefix``)."""
    return from_dict(cls, values, prefix)
