"""What `mcm evaluate` reads: a folder of videos and their prompts.

Videos are ``DIR/*.mp4`` and ``DIR/*.gif``, sorted by file name, read with
:func:`mcm.media.read_video`. Prompts are either a text file with one prompt per line in that
same order, or a JSON object ``{file name: prompt}`` (the name with or without its suffix).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from mcm.errors import InputError
from mcm.media import read_video

VIDEO_SUFFIXES = (".mp4", ".gif")


def video_paths(folder: str | Path) -> list[Path]:
    """The ``.mp4`` / ``.gif`` files directly in ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Video folder {str(folder)!r} does not exist; give a folder of .mp4/.gif files."
        )
    paths = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
    )
    if not paths:
        raise FileNotFoundError(
            f"No .mp4 or .gif files in {str(folder)!r}; write videos there with `mcm generate`."
        )
    return paths


def read_videos(folder: str | Path) -> tuple[list[Path], Tensor]:
    """Every video in ``folder`` -> (paths, videos [B, 3, F, H, W] in [-1, 1]).

    All videos must have one frame count and size (a batch is one tensor); the first file
    that differs is named in the error.
    """
    paths = video_paths(folder)
    videos = []
    for path in paths:
        try:
            video = read_video(path)
        except Exception as e:
            raise InputError(
                f"Cannot read the video {str(path)!r}: {e}. Remove or re-encode it."
            ) from e
        if videos and video.shape != videos[0].shape:
            raise InputError(
                f"{path.name} has shape [3, F, H, W] = {list(video.shape)} but {paths[0].name} has "
                f"{list(videos[0].shape)}; evaluate videos of one length and size together."
            )
        videos.append(video)
    return paths, torch.stack(videos)


def read_prompts(path: str | Path, video_files: list[Path]) -> list[str]:
    """One prompt per video, in the order of ``video_files``.

    Args:
        path: a text file (one prompt per line, empty lines ignored, same sorted order as the
            videos) or a ``.json`` file with an object ``{file name: prompt}``.
        video_files: the videos' paths (from :func:`read_videos`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Prompt file {str(path)!r} does not exist.")
    names = [p.name for p in video_files]
    if path.suffix.lower() == ".json":
        try:
            mapping = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise InputError(
                f"{str(path)!r} is not valid JSON ({e}); expected {{file name: prompt}}."
            ) from e
        if not isinstance(mapping, dict):
            raise InputError(f"{str(path)!r} must hold a JSON object {{file name: prompt}}.")
        prompts = []
        for p in video_files:
            prompt = mapping.get(p.name, mapping.get(p.stem))
            if not isinstance(prompt, str) or not prompt.strip():
                raise InputError(
                    f'{str(path)!r} has no prompt for {p.name!r}; add a "{p.name}": "..." entry.'
                )
            prompts.append(prompt.strip())
        extra = set(mapping) - set(names) - {p.stem for p in video_files}
        if extra:
            raise InputError(
                f"{str(path)!r} names {len(extra)} file(s) not in the video folder, e.g. {sorted(extra)[0]!r}; "
                "prompts and videos must match one to one."
            )
        return prompts
    prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(prompts) != len(names):
        raise InputError(
            f"{str(path)!r} has {len(prompts)} prompts but the folder has {len(names)} videos; give one "
            "prompt per line in the videos' sorted file-name order, or a JSON {file name: prompt}."
        )
    return prompts
