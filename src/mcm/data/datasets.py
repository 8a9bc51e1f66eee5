"""Video and image datasets: sources -> decoded, cropped samples -> batches.

``MediaDataset`` is a torch ``IterableDataset`` that yields whole batches (the DataLoader
runs with ``batch_size=None``): batch ``b`` of a rank comes from stream ``b % num_streams``,
one stream per worker. Each batch also carries what its worker skipped since the previous
batch (``_events``), how many first visits it made (``_seen``) and where its stream stands
(``_stream``, ``_position``); ``mcm.data.loader.ResumableLoader`` strips these before the
training loop sees the batch.

Batches:
    video: ``{"video": [B, 3, F, H, W] in [-1, 1], "caption": list[str], "key": list[str]}``
    image: ``{"image": [B, 3, H, W] in [-1, 1], "caption": list[str], "key": list[str]}``
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from torch.utils.data import IterableDataset, get_worker_info

from mcm.data.badlog import BadDataError, BadSample
from mcm.data.config import ImageDataConfig, VideoDataConfig
from mcm.data.decode import decode_image, decode_video
from mcm.data.sources import IMAGE_EXTS, VIDEO_EXTS, Record, detect_format, list_records
from mcm.data.streams import generator_for, indexed_stream, webdataset_stream
from mcm.data.webdataset import expand_urls
from mcm.errors import InputError

AESTHETIC_KEYS = ("aesthetic", "aesthetic_score", "AESTHETIC_SCORE")
WATERMARK_KEYS = ("pwatermark", "watermark_prob", "watermark")
WIDTH_KEYS, HEIGHT_KEYS = (
    ("width", "WIDTH", "original_width"),
    ("height", "HEIGHT", "original_height"),
)
WDS_CAPTION_FIELDS = ("txt", "caption", "text")

# Consecutive skips after which a stream gives up: a source with no usable sample (or a
# stream that only ever meets bad ones) would otherwise loop forever without a batch.
MIN_RUNAWAY_SKIPS = 1000

logger = logging.getLogger("mcm.data")

CACHE_FORMAT = "mcm-latent-cache"  # the latent cache written by mcm.data.cache
CACHE_VERSION = 1


@dataclass
class StreamSpec:
    """How the DataLoader's workers map to streams (set by ``ResumableLoader``)."""

    seed: int = 0
    rank: int = 0
    world_size: int = 1
    batch_size: int = 1
    num_streams: int = 1
    positions: list[int] = field(default_factory=lambda: [0])
    first_stream: int = 0
    one_pass: bool = False


class MediaDataset(IterableDataset):
    """Batches of decoded videos or images from any source (see the module docstring).

    Args:
        config (VideoDataConfig | ImageDataConfig): the source and the decoding settings.

    Raises:
        ValueError, FileNotFoundError: the source as a whole is unusable (names the fix).
    """

    kind = "video"
    media_exts = VIDEO_EXTS

    def __init__(self, config: VideoDataConfig | ImageDataConfig):
        self.config = config.validate()
        fmt = config.format if config.format != "auto" else detect_format(config.source)
        self.format = fmt
        if fmt == "webdataset":
            self.urls = expand_urls(config.source)
            self.records: list[Record] | None = None
        else:
            self.urls = []
            self.records = list_records(config, self.media_exts)
        self.spec = StreamSpec()

    @property
    def num_records(self) -> int | None:
        """Records of an indexable source (None for webdataset shards)."""
        return None if self.records is None else len(self.records)

    # -- the stream ---------------------------------------------------------------------
    def _items(self, stream: int, start: int):
        s, c = self.spec, self.config
        if self.records is not None:
            return indexed_stream(
                len(self.records), s.seed, c.shuffle, s.rank, s.world_size, stream,
                s.num_streams, start, s.one_pass,
            )  # fmt: skip
        return webdataset_stream(
            self.urls, s.seed, c.shuffle, c.resampled, c.shuffle_buffer, s.rank,
            s.world_size, stream, s.num_streams, start, s.one_pass, c.download_timeout,
        )  # fmt: skip

    def _runaway_limit(self) -> int:
        n = self.num_records or self.config.shuffle_buffer
        return max(MIN_RUNAWAY_SKIPS, 10 * n)

    def __iter__(self):
        info = get_worker_info()
        worker = info.id if info is not None else 0
        s = self.spec
        stream = (s.first_stream + worker) % s.num_streams
        position = s.positions[stream]
        batch, events, seen, consecutive_bad = [], [], 0, 0
        known_bad: dict[str, tuple[str, str]] = {}
        for item in self._items(stream, position):
            position = item.position + 1
            seen += item.first_pass
            name = self._name(item.payload)
            try:
                if name in known_bad:
                    raise BadSample(*known_bad[name])
                batch.append(self._load(item.payload, generator_for(item.sample_seed)))
                consecutive_bad = 0
            except BadSample as e:
                known_bad[name] = (e.reason, e.detail)
                events.append((name, e.reason, e.detail, item.first_pass))
                consecutive_bad += 1
                if not s.one_pass and consecutive_bad > self._runaway_limit():
                    raise BadDataError(
                        f"{consecutive_bad} samples in a row were skipped in {self.config.source} "
                        f"(last: {name}: {e}); no usable data. Run `mcm data check` on the source."
                    ) from None
            if len(batch) == s.batch_size:
                yield self._collate(batch, stream, position, events, seen)
                batch, events, seen = [], [], 0
        if batch or events or seen:  # the end of a one-pass read
            yield self._collate(batch, stream, position, events, seen)

    def _collate(self, samples, stream, position, events, seen) -> dict:
        out = {
            "caption": [x["caption"] for x in samples],
            "key": [x["key"] for x in samples],
            "_stream": stream,
            "_position": position,
            "_events": events,
            "_seen": seen,
        }
        if samples:
            for k in samples[0]:
                if k not in ("caption", "key"):
                    out[k] = torch.stack([x[k] for x in samples])
        return out

    # -- one sample -----------------------------------------------------------------------
    def _name(self, payload) -> str:
        if isinstance(payload, int):
            return self.records[payload].location
        url, key, _ = payload
        return url if key is None else f"{url}:{key}"

    def _load(self, payload, generator: torch.Generator) -> dict:
        if isinstance(payload, int):
            rec = self.records[payload]
            if rec.error is not None:
                raise BadSample(*rec.error)
            apply_filters(read_meta(rec) if needs_scores(self.config) else rec.meta, self.config)
            caption = rec.caption if rec.caption is not None else read_caption(rec.caption_path)
            media, key = rec.location, rec.key
        else:
            url, key, fields = payload
            if key is None:
                raise BadSample("bad_shard", fields)
            media, caption, meta = unpack_wds_sample(fields, self.media_exts, self.config)
            apply_filters(meta, self.config)
            key = str(meta.get("key") or key)  # `mcm data pack` keeps the original key here
        return {self.kind: self._decode(media, generator), "caption": caption, "key": key}

    def _decode(self, media, generator: torch.Generator):
        c: VideoDataConfig = self.config
        return decode_video(
            media, c.num_frames, c.output_size(), generator, c.frame_stride, c.fps, c.start,
            c.short_clip_policy, c.crop, c.crop_scale, c.min_side, c.download_timeout,
        )  # fmt: skip


class VideoDataset(MediaDataset):
    """Clips ``[3, F, H, W]`` with captions; see ``MediaDataset``."""


class ImageDataset(MediaDataset):
    """Images ``[3, H, W]`` with captions; see ``MediaDataset``."""

    kind = "image"
    media_exts = IMAGE_EXTS

    def _decode(self, media, generator: torch.Generator):
        c: ImageDataConfig = self.config
        return decode_image(
            media, c.output_size(), generator, c.crop, c.crop_scale, c.min_side, c.download_timeout
        )


def read_caption(path: str | None) -> str:
    """The stripped text of a caption file; BadSample when missing, not UTF-8 or empty."""
    if path is None:
        raise BadSample("missing_caption", "no caption for this file")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read().strip()
    except FileNotFoundError as e:
        raise BadSample("missing_caption", f"no {path}") from e
    except (UnicodeDecodeError, OSError) as e:
        raise BadSample("bad_caption", f"{path}: {e}") from e
    if not text:
        raise BadSample("bad_caption", f"{path} is empty")
    return text


def unpack_wds_sample(fields: dict[str, bytes], media_exts, config) -> tuple[bytes, str, dict]:
    """(media bytes, caption, metadata) of a webdataset sample."""
    ext = next((e for e in media_exts if e in fields), None)
    if ext is None:
        raise BadSample("no_media", f"fields {sorted(fields)}, want one of {list(media_exts)}")
    meta = {}
    if "json" in fields:
        try:
            meta = json.loads(fields["json"].decode("utf-8"))
            meta = meta if isinstance(meta, dict) else {}
        except (UnicodeDecodeError, ValueError):
            meta = {}
    caption = None
    for f in WDS_CAPTION_FIELDS:
        if f in fields:
            try:
                caption = fields[f].decode("utf-8").strip()
            except UnicodeDecodeError as e:
                raise BadSample("bad_caption", f".{f} is not UTF-8: {e}") from e
            break
    if caption is None:
        cols = (config.caption_column,) if config.caption_column else ("caption", "text", "prompt")
        caption = next((str(meta[c]) for c in cols if meta.get(c)), None)
    if caption is None:
        raise BadSample(
            "missing_caption", f"no .txt and no caption in .json (fields {sorted(fields)})"
        )
    if not caption:
        raise BadSample("bad_caption", "empty caption")
    return fields[ext], caption, meta


def needs_scores(config) -> bool:
    return config.min_aesthetic is not None or config.max_watermark_prob is not None


def read_meta(rec: Record) -> dict:
    """A record's metadata, merged with its same-name ``.json`` (an unreadable one is ignored:
    metadata only feeds the optional filters)."""
    if rec.meta_path is None:
        return rec.meta
    try:
        with open(rec.meta_path, encoding="utf-8") as fh:
            extra = json.load(fh)
    except (OSError, ValueError):
        return rec.meta
    return {**extra, **rec.meta} if isinstance(extra, dict) else rec.meta


def _number(meta: dict, keys) -> float | None:
    for k in keys:
        if k in meta and meta[k] not in (None, ""):
            try:
                return float(meta[k])
            except (TypeError, ValueError):
                return None
    return None


def apply_filters(meta: dict, config) -> None:
    """Raise BadSample for a sample the metadata filters (scores, size) drop."""
    if not meta:
        return
    if config.min_aesthetic is not None:
        score = _number(meta, AESTHETIC_KEYS)
        if score is not None and score < config.min_aesthetic:
            raise BadSample("filtered_aesthetic", f"{score:g} < {config.min_aesthetic:g}")
    if config.max_watermark_prob is not None:
        p = _number(meta, WATERMARK_KEYS)
        if p is not None and p > config.max_watermark_prob:
            raise BadSample("filtered_watermark", f"{p:g} > {config.max_watermark_prob:g}")
    w, h = _number(meta, WIDTH_KEYS), _number(meta, HEIGHT_KEYS)
    if w is not None and h is not None and min(w, h) < config.min_side:
        raise BadSample("too_small", f"{w:g}x{h:g} < min_side={config.min_side} (metadata)")


def read_cache_info(cache_dir: str | Path) -> dict:
    """The ``cache.json`` of a cache folder; FileNotFoundError/ValueError naming the fix."""
    path = Path(cache_dir) / "cache.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{cache_dir} is not a latent cache (no cache.json): write one with "
            f"`mcm data cache-latents --source ... --teacher ... --out {cache_dir}`."
        )
    info = json.loads(path.read_text())
    if info.get("format") != CACHE_FORMAT or info.get("version") != CACHE_VERSION:
        raise InputError(f"{path} is not a version-{CACHE_VERSION} {CACHE_FORMAT}: rewrite it.")
    return info


class CachedLatentDataset(MediaDataset):
    """Batches of cached latents (and text embeddings) in the same stream order rules as
    ``MediaDataset`` (one record per cached clip, in cache order).

    Args:
        config (VideoDataConfig): ``latent_cache`` names the cache folder; the shuffle and
            bad-input fields apply, the decoding fields were fixed when the cache was written.
    """

    kind = "latents"

    def __init__(self, config: VideoDataConfig):
        self.config = config.validate()
        self.root = Path(config.latent_cache)
        self.info = read_cache_info(self.root)
        self.format = "latent_cache"
        self.urls = []
        with open(self.root / "index.jsonl", encoding="utf-8") as fh:
            self.records = [json.loads(line) for line in fh if line.strip()]
        if not self.records:
            raise InputError(f"latent cache {self.root} holds no clips.")
        cached = self.info["data"]
        for name in ("num_frames", "resolution"):
            if cached.get(name) != getattr(config, name):
                logger.warning(
                    "latent cache %s was written with %s=%s, the config says %s: the cache wins",
                    self.root,
                    name,
                    cached.get(name),
                    getattr(config, name),
                )
        self.spec = StreamSpec()

    def _name(self, payload) -> str:
        return f"{self.root}:{self.records[payload]['key']}"

    def _load(self, payload, generator: torch.Generator) -> dict:
        rec = self.records[payload]
        out = {"caption": rec["caption"], "key": rec["key"]}
        with safe_open(str(self.root / rec["shard"]), framework="pt") as f:
            row = rec["row"]
            for name in ("latents", "text_emb"):
                if name in f.keys():  # noqa: SIM118 - safe_open handles have no __contains__
                    out[name] = f.get_slice(name)[row : row + 1][0].float()
        return out


def build_video_dataset(config: VideoDataConfig) -> MediaDataset:
    """The dataset a video config describes: decoded clips, or cached latents when
    ``config.latent_cache`` is set (``mcm.data.cache.CachedLatentDataset``)."""
    if config.latent_cache:
        return CachedLatentDataset(config)
    return VideoDataset(config)


def build_image_dataset(config: ImageDataConfig) -> ImageDataset:
    """The dataset an image config describes."""
    return ImageDataset(config)
