"""`world:<domain>` data sources: the world's domains rendered once into a local cache.

A training config may name ``world:lowq_video`` (clips) or ``world:hq_image`` /
``world:style_image`` (images) as a source; they are rendered with a fixed seed into
``$MCM_CACHE`` (default ``~/.cache/mcm``) the first time and read from disk after that,
through the same loaders as any user's folder of clips or images.
"""

from __future__ import annotations

import os
from pathlib import Path

from mcm.errors import InputError
from mcm.world.domains import DOMAINS
from mcm.world.render import render_domain
from mcm.world.scenes import DEFAULT_FRAMES

WORLD_PREFIX = "world:"
DEFAULT_COUNTS = {"lowq_video": 2000, "clean_video": 500, "hq_image": 2000, "style_image": 2000}


def cache_dir() -> Path:
    return Path(os.environ.get("MCM_CACHE", Path.home() / ".cache" / "mcm"))


def parse_world_source(spec: str) -> tuple[str, int]:
    """``world:<domain>[:<count>]`` -> (domain, count); an InputError names the fix."""
    parts = spec[len(WORLD_PREFIX) :].split(":")
    domain = parts[0]
    usage = f"use world:<domain>[:<count>] with domain in {list(DOMAINS)} and count >= 1"
    if not spec.startswith(WORLD_PREFIX) or domain not in DOMAINS or len(parts) > 2:
        raise InputError(f"Unknown world source {spec!r}; {usage}.")
    if len(parts) == 1:
        return domain, DEFAULT_COUNTS[domain]
    if not parts[1].isdigit() or int(parts[1]) < 1:
        raise InputError(f"World source {spec!r}: the count must be an integer >= 1; {usage}.")
    return domain, int(parts[1])


def world_source(spec: str, seed: int = 0, num_frames: int = DEFAULT_FRAMES) -> str:
    """``world:<domain>[:<count>]`` -> a folder holding that many rendered samples, clips of
    ``num_frames`` frames (the world's 8 by default; Wan teachers take 4k + 1, e.g. 9)."""
    domain, count = parse_world_source(spec)
    frames = "" if num_frames == DEFAULT_FRAMES else f"-f{num_frames}"
    out = cache_dir() / "world-data" / f"{domain}-n{count}-seed{seed}{frames}"
    done = out / ".complete"
    if not done.exists():
        render_domain(domain, out, count=count, seed=seed, num_frames=num_frames)
        done.write_text("ok\n")
    return str(out)


def resolve_world_sources(cfg) -> None:
    """Replace ``world:...`` sources of a TrainConfig's data section by rendered folders
    (clips with more frames than the world's 8 when ``data.video.num_frames`` asks for them)."""
    for section in (cfg.data.video, cfg.data.images):
        if section is not None and section.source.startswith(WORLD_PREFIX):
            frames = getattr(section, "num_frames", DEFAULT_FRAMES)
            section.source = world_source(section.source, num_frames=max(frames, DEFAULT_FRAMES))
