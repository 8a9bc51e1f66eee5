"""Write the world's data domains to disk in the formats the real data loaders read.

Layout of ``render_world(out_dir, ...)`` (``mcm world render --out DIR``)::

    DIR/lowq_video/000000.mp4  000000.txt  000000.json   # training videos (WebVid analogue)
    DIR/clean_video/...        (same)                      # held-out reference, metrics only
    DIR/hq_image/000000.png    000000.txt  000000.json   # LAION-aesthetic analogue
    DIR/style_image/...        (same)                      # image-only cartoon style
    DIR/world.json                                         # what was rendered, and how

``.txt`` holds the caption (the prompt), ``.json`` the ground truth (the scene, object
positions per frame, the frame index of an image). Sample ``i`` of a domain is drawn from
its own generator seeded by (seed, domain, i), so it does not depend on how many samples
are rendered, and ``clean_video`` never shares a scene stream with ``lowq_video``.

Videos are H.264 in yuv444p at crf 0 (no chroma subsampling: at 32x32 a 4:2:0 chroma
plane is 16x16 and smears the object's colour, up to 120 of 255 levels at the edges);
see docs/WORLD.md for the measured round-trip error. Images are 8-bit RGB png (lossless up to 8-bit quantisation).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from mcm.errors import InputError
from mcm.media import write_image, write_video
from mcm.world.domains import DOMAINS, render_sample
from mcm.world.scenes import DEFAULT_FRAMES, DEFAULT_SIZE, sample_scene

VIDEO_DOMAINS = ("lowq_video", "clean_video")
IMAGE_DOMAINS = ("hq_image", "style_image")
FPS = 8
CRF = 0  # lossless H.264: only the RGB <-> YUV rounding remains (<= 2 levels of 255)
PIX_FMT = "yuv444p"


def sample_generator(seed: int, domain: str, index: int) -> torch.Generator:
    """The generator of sample ``index`` of ``domain`` (independent of the sample count)."""
    digest = hashlib.sha256(f"mcm-world/{seed}/{domain}/{index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def render_domain_sample(
    domain: str,
    index: int,
    seed: int = 0,
    size: int = DEFAULT_SIZE,
    num_frames: int = DEFAULT_FRAMES,
) -> tuple[Tensor, str, dict]:
    """Sample ``index`` of ``domain``: (pixels, caption, ground-truth dict)."""
    g = sample_generator(seed, domain, index)
    scene = sample_scene(g, size, num_frames)
    truth = {"domain": domain, "index": index, "seed": seed, "size": size, **scene.to_dict()}
    if domain in VIDEO_DOMAINS:
        pixels, caption, _ = render_sample(domain, g, size, num_frames, scene=scene)
        truth["num_frames"] = num_frames
        truth["positions"] = scene.positions(num_frames).tolist()
    else:
        frame = int(torch.randint(num_frames, (1,), generator=g))
        pixels, caption, _ = render_sample(domain, g, size, num_frames, scene=scene, frame=frame)
        truth["frame"] = frame
        truth["position"] = scene.positions(frame + 1)[frame].tolist()
        truth["style"] = "cartoon" if domain == "style_image" else "clean"
    truth["caption"] = caption
    return pixels, caption, truth


def render_domain(
    domain: str,
    out_dir: str | Path,
    count: int,
    seed: int = 0,
    size: int = DEFAULT_SIZE,
    num_frames: int = DEFAULT_FRAMES,
    progress: bool = False,
) -> Path:
    """Write samples 0..count-1 of ``domain`` into the folder ``out_dir`` (created):
    ``000000.mp4`` (or ``.png``) + ``000000.txt`` caption + ``000000.json`` ground truth."""
    if domain not in DOMAINS:
        raise InputError(f"Unknown world domain {domain!r}; allowed: {', '.join(DOMAINS)}.")
    if count < 0:
        raise InputError(f"The number of samples must be >= 0; got {count}.")
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    indices: Iterable[int] = range(count)
    if progress:
        indices = tqdm(indices, desc=domain, unit="file")
    for i in indices:
        pixels, caption, truth = render_domain_sample(domain, i, seed, size, num_frames)
        stem = folder / f"{i:06d}"
        if domain in VIDEO_DOMAINS:
            write_video(stem.with_suffix(".mp4"), pixels, fps=FPS, crf=CRF, pixel_format=PIX_FMT)
        else:
            write_image(stem.with_suffix(".png"), pixels)
        stem.with_suffix(".txt").write_text(caption + "\n")
        stem.with_suffix(".json").write_text(json.dumps(truth, indent=1) + "\n")
    return folder


def render_world(
    out_dir: str | Path,
    n_videos: int = 256,
    n_images: int = 256,
    seed: int = 0,
    size: int = DEFAULT_SIZE,
    num_frames: int = DEFAULT_FRAMES,
    domains: Iterable[str] = DOMAINS,
    progress: bool = False,
) -> dict:
    """Write the world's domains under ``out_dir``; returns (and writes) ``world.json``."""
    domains = list(domains)
    unknown = [d for d in domains if d not in DOMAINS]
    if unknown:
        raise InputError(f"Unknown world domain(s) {unknown}; allowed: {', '.join(DOMAINS)}.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for domain in domains:
        n = n_videos if domain in VIDEO_DOMAINS else n_images
        render_domain(domain, out_dir / domain, n, seed, size, num_frames, progress)
        counts[domain] = n
    info = {
        "seed": seed,
        "size": size,
        "num_frames": num_frames,
        "fps": FPS,
        "video_format": {"codec": "libx264", "pix_fmt": PIX_FMT, "crf": CRF, "container": "mp4"},
        "image_format": "png (8-bit RGB)",
        "domains": counts,
    }
    (out_dir / "world.json").write_text(json.dumps(info, indent=1) + "\n")
    return info
