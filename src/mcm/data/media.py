"""Writing media with PyAV: videos ``[3, F, H, W]`` and images ``[3, H, W]`` in ``[-1, 1]``."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from torch import Tensor


def to_uint8(x: Tensor) -> np.ndarray:
    """``[3, ..., H, W]`` in ``[-1, 1]`` -> uint8 ``[..., H, W, 3]``."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(0, -1).cpu().numpy()


def write_video(
    path: str | Path,
    video: Tensor,
    fps: float = 8.0,
    codec: str = "libx264",
    crf: int = 18,
    faststart: bool = False,
) -> None:
    """Encode ``video`` ``[3, F, H, W]`` in ``[-1, 1]`` to a file (format from the suffix).

    Args:
        path: output file (``.mp4``, ``.webm``, ``.mkv``, ...).
        video: the frames; H and W are padded to even sizes for yuv420p codecs.
        fps: frame rate written in the header.
        codec: PyAV encoder name. Default ``libx264``.
        crf: x264 quality (lower is better, 0 lossless).
        faststart: mp4 only: put the index (moov atom) before the data.
    """
    frames = to_uint8(video)
    h, w = frames.shape[1:3]
    if codec in ("libx264", "mpeg4", "libvpx-vp9") and (h % 2 or w % 2):
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        h, w = frames.shape[1:3]
    options = {"movflags": "+faststart"} if faststart else {}
    rate = int(round(fps)) if float(fps).is_integer() else fps
    with av.open(str(path), mode="w", options=options) as container:
        stream = container.add_stream(codec, rate=Fraction(rate).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": "veryfast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def encode_image(image: Tensor, fmt: str = "png") -> bytes:
    """``[3, H, W]`` in ``[-1, 1]`` -> the bytes of a ``png``, ``jpg`` or ``webp`` file."""
    codec, pix_fmt, muxer = {
        "png": ("png", "rgb24", "image2pipe"),
        "jpg": ("mjpeg", "yuvj444p", "image2pipe"),
        "jpeg": ("mjpeg", "yuvj444p", "image2pipe"),
        "webp": ("libwebp", "yuv420p", "webp"),
    }[fmt]
    frame = av.VideoFrame.from_ndarray(to_uint8(image), format="rgb24")
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=muxer) as container:
        stream = container.add_stream(codec, rate=1)
        stream.width, stream.height, stream.pix_fmt = frame.width, frame.height, pix_fmt
        for packet in stream.encode(frame.reformat(format=pix_fmt)):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def write_image(path: str | Path, image: Tensor) -> None:
    """Write ``[3, H, W]`` in ``[-1, 1]`` as png/jpg/webp (from the suffix)."""
    fmt = Path(path).suffix.lstrip(".").lower()
    Path(path).write_bytes(encode_image(image, fmt))
