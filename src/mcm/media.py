"""Writing and reading short video files with PyAV (no ffmpeg binary, no torchvision).

Videos are [3, F, H, W] float tensors in [-1, 1]. ``.mp4`` is H.264 in yuv444p at a low
CRF by default, so that the world's 32x32 colours survive the round trip (yuv420p halves
the chroma resolution); ``pixel_format="yuv420p"`` gives the most compatible files.
``.gif`` uses PyAV's gif encoder with a per-file palette.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from torch import Tensor

VIDEO_SUFFIXES = (".mp4", ".gif")


def to_uint8_frames(video: Tensor) -> np.ndarray:
    """[3, F, H, W] in [-1, 1] -> uint8 [F, H, W, 3]."""
    if video.ndim != 4 or video.shape[0] != 3:
        raise ValueError(f"video must be [3, F, H, W]; got {tuple(video.shape)}.")
    frames = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return frames.permute(1, 2, 3, 0).cpu().numpy()


def write_video(
    path: str | Path, video: Tensor, fps: int = 8, crf: int = 4, pixel_format: str = "yuv444p"
) -> Path:
    """Write a clip [3, F, H, W] in [-1, 1] as .mp4 or .gif. Returns the path."""
    path = Path(path)
    if path.suffix not in VIDEO_SUFFIXES:
        raise ValueError(
            f"Cannot write {path.name!r}: the file name must end in {' or '.join(VIDEO_SUFFIXES)}."
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(
            f"Cannot create the output folder {str(path.parent)!r}: {e}. Choose a writable path."
        ) from e
    frames = to_uint8_frames(video)
    F, H, W, _ = frames.shape
    with av.open(str(path), mode="w") as container:
        if path.suffix == ".gif":
            stream = container.add_stream("gif", rate=fps)
            stream.pix_fmt = "rgb8"
        else:
            if H % 2 or W % 2:
                raise ValueError(
                    f"mp4 needs even height and width; got {H}x{W}. Write a .gif instead."
                )
            stream = container.add_stream("libx264", rate=fps)
            stream.pix_fmt = pixel_format
            stream.options = {"crf": str(crf), "preset": "medium"}
        stream.width, stream.height = W, H
        stream.time_base = Fraction(1, fps)
        for i in range(F):
            frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def read_video(path: str | Path) -> Tensor:
    """Every frame of a video file -> [3, F, H, W] in [-1, 1]."""
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise ValueError(f"{str(path)!r} has no decodable video frames.")
    x = torch.from_numpy(np.stack(frames)).float() / 127.5 - 1
    return x.permute(3, 0, 1, 2)
