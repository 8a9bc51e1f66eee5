"""Latent cache: VAE latents (and text embeddings) of a video source, computed once.

``write_latent_cache`` decodes every clip of a source once (no shuffle: clip ``i`` gets the
random view that global position ``i`` gets in an uncached run with the same seed and
``shuffle: false``), encodes it with the teacher's VAE (posterior mean) and text encoder,
and writes safetensors shards. ``CachedLatentDataset`` reads them back as batches
``{"latents": [B, C, F, h, w], "text_emb": [B, L, D], "caption": [...], "key": [...]}``, so
training skips the VAE (and text) encode.

Layout of a cache folder::

    cache.json                   what was cached: teacher, data config, shapes, dtype, count
    index.jsonl                  one line per clip: key, caption, shard, row
    latents-000000.safetensors   "latents" [n, C, F, h, w] and "text_emb" [n, L, D]
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from mcm.data.badlog import BadSampleLog
from mcm.data.config import VideoDataConfig
from mcm.data.datasets import CACHE_FORMAT, CACHE_VERSION, VideoDataset
from mcm.data.loader import ResumableLoader
from mcm.errors import InputError

logger = logging.getLogger("mcm.data")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def write_latent_cache(
    config: VideoDataConfig,
    encode_video: Callable[[Tensor], Tensor],
    out_dir: str | Path,
    encode_text: Callable[[list[str]], Tensor] | None = None,
    batch_size: int = 8,
    num_workers: int = 0,
    seed: int = 0,
    shard_size: int = 1024,
    dtype: str = "fp32",
    teacher: str = "",
) -> BadSampleLog:
    """Encode every clip of ``config``'s source once and write the cache to ``out_dir``.

    Args:
        config: the video source and decoding settings (``shuffle`` is ignored: one pass in
            source order; ``latent_cache`` must be unset).
        encode_video: pixels ``[B, 3, F, H, W]`` in ``[-1, 1]`` -> latents ``[B, C, F, h, w]``
            (e.g. ``bundle.vae.encode``, the posterior mean).
        out_dir: the cache folder (created; must not already hold a cache).
        encode_text: captions -> ``[B, L, D]`` (e.g. ``bundle.text_encoder``); None: no text
            embeddings are stored and training encodes captions itself.
        batch_size, num_workers: decoding/encoding batch and DataLoader workers.
        seed: the data seed (the random views drawn, see the module docstring).
        shard_size: clips per safetensors file.
        dtype: stored precision, ``fp32`` (exact), ``fp16`` or ``bf16``.
        teacher: recorded in ``cache.json``.

    Returns:
        The ``BadSampleLog`` of the pass (skipped clips are not cached; they are logged).

    Raises:
        FileExistsError: ``out_dir`` already holds a cache.
        BadDataError: more than ``max_bad_fraction`` of the clips were bad.
    """
    if dtype not in DTYPES:
        raise InputError(f"dtype={dtype!r}: use one of {list(DTYPES)}.")
    if config.latent_cache:
        raise InputError("config.latent_cache is set: cache from a config that decodes clips.")
    out = Path(out_dir)
    if (out / "cache.json").exists():
        raise FileExistsError(f"{out} already holds a latent cache: choose another --out.")
    out.mkdir(parents=True, exist_ok=True)
    cfg = dataclasses.replace(config, shuffle=False)
    loader = ResumableLoader(VideoDataset(cfg), batch_size, num_workers, seed, one_pass=True)
    loader.bad_log.max_bad_fraction = 1.0  # enforced once, at the end, on the whole pass
    store = DTYPES[dtype]
    pending: dict[str, list[Tensor]] = {"latents": [], "text_emb": []}
    index, shards, shapes = [], [], {}

    def flush() -> None:
        if not pending["latents"]:
            return
        name = f"latents-{len(shards):06d}.safetensors"
        tensors = {k: torch.cat(v).to(store).contiguous() for k, v in pending.items() if v}
        save_file(tensors, str(out / name), metadata={"format": CACHE_FORMAT})
        shards.append(name)
        for v in pending.values():
            v.clear()

    rows = 0
    for batch in loader:
        latents = encode_video(batch["video"]).detach().float().cpu()
        pending["latents"].append(latents)
        shapes["latents"] = list(latents.shape[1:])
        if encode_text is not None:
            emb = encode_text(list(batch["caption"])).detach().float().cpu()
            pending["text_emb"].append(emb)
            shapes["text_emb"] = list(emb.shape[1:])
        for key, caption in zip(batch["key"], batch["caption"]):
            index.append({"key": key, "caption": caption, "shard": len(shards), "row": rows})
            rows += 1
        if rows >= shard_size:
            flush()
            rows = 0
    flush()
    log = loader.bad_log
    log.max_bad_fraction = config.max_bad_fraction
    with open(out / "index.jsonl", "w", encoding="utf-8") as fh:
        for entry in index:
            entry["shard"] = shards[entry["shard"]]
            fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
    meta = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "teacher": teacher,
        "seed": seed,
        "count": len(index),
        "dtype": dtype,
        "shapes": shapes,
        "text_embeddings": encode_text is not None,
        "data": dataclasses.asdict(cfg),
        "skipped": log.bad_counts,
    }
    (out / "cache.json").write_text(json.dumps(meta, indent=2) + "\n")
    log.check()
    return log
