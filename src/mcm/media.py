"""Reading and writing videos and images with PyAV (no ffmpeg binary, no torchvision).

Videos are ``[3, F, H, W]`` and images ``[3, H, W]`` float tensors in ``[-1, 1]``. The
suffix picks the video codec: H.264 for ``.mp4`` / ``.mkv`` / ``.mov``, VP9 for ``.webm``,
PyAV's gif encoder for ``.gif``. H.264 is written in yuv444p at a low CRF by default, so
that the world's 32x32 colours survive the round trip (yuv420p halves the chroma
resolution; ``pixel_format="yuv420p"`` gives the most compatible files, odd sizes padded).
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from torch import Tensor

from mcm.errors import InputError

VIDEO_CODECS = {".mp4": "libx264", ".mkv": "libx264", ".mov": "libx264", ".webm": "libvpx-vp9"}
VIDEO_SUFFIXES = (*VIDEO_CODECS, ".gif")
IMAGE_FORMATS = {  # suffix -> (codec, pixel format, muxer)
    "png": ("png", "rgb24", "image2pipe"),
    "jpg": ("mjpeg", "yuvj444p", "image2pipe"),
    "jpeg": ("mjpeg", "yuvj444p", "image2pipe"),
    "webp": ("libwebp", "yuv420p", "webp"),
}


def to_uint8(x: Tensor) -> np.ndarray:
    """``[3, ..., H, W]`` in ``[-1, 1]`` -> uint8 ``[..., H, W, 3]``."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(0, -1).cpu().numpy()


def from_uint8(a: np.ndarray) -> Tensor:
    """uint8 ``[..., H, W, 3]`` -> ``[3, ..., H, W]`` float in ``[-1, 1]``."""
    return torch.from_numpy(np.array(a, copy=True)).float().movedim(-1, 0) / 127.5 - 1


def write_video(
    path: str | Path,
    video: Tensor,
    fps: float = 8,
    crf: int = 4,
    pixel_format: str | None = None,
    codec: str | None = None,
    faststart: bool = False,
) -> Path:
    """Encode a clip ``[3, F, H, W]`` in ``[-1, 1]``; returns the path.

    Args:
        path: ``.mp4``, ``.mkv``, ``.mov``, ``.webm`` or ``.gif``.
        video: the frames.
        fps: frame rate written in the header.
        crf: H.264 quality (0 lossless up to the RGB <-> YUV rounding).
        pixel_format: default yuv444p for H.264, yuv420p for other codecs; 4:2:0 formats
            pad odd sizes by repeating the last row / column.
        codec: a PyAV encoder name instead of the suffix's.
        faststart: mp4: put the index (moov atom) before the data.
    """
    if video.ndim != 4 or video.shape[0] != 3:
        raise ValueError(f"video must be [3, F, H, W]; got {tuple(video.shape)}.")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise InputError(
            f"Cannot write {path.name!r}: the file name must end in one of {', '.join(VIDEO_SUFFIXES)}."
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(
            f"Cannot create the output folder {str(path.parent)!r}: {e}. Choose a writable path."
        ) from e
    frames = to_uint8(video)
    rate = Fraction(fps).limit_denominator(1000)
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=options) as container:
        if suffix == ".gif":
            stream = container.add_stream("gif", rate=rate)
            stream.pix_fmt = "rgb8"
        else:
            codec = codec or VIDEO_CODECS[suffix]
            stream = container.add_stream(codec, rate=rate)
            stream.pix_fmt = pixel_format or ("yuv444p" if codec == "libx264" else "yuv420p")
            if stream.pix_fmt.endswith("420p"):
                h, w = frames.shape[1:3]
                frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            if codec == "libx264":
                stream.options = {"crf": str(crf), "preset": "medium"}
        stream.height, stream.width = frames.shape[1:3]
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def read_video(path: str | Path) -> Tensor:
    """Every frame of a video file -> ``[3, F, H, W]`` in ``[-1, 1]``."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"No video at {str(path)!r}.")
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise InputError(f"{str(path)!r} has no decodable video frames.")
    return from_uint8(np.stack(frames))


def encode_image(image: Tensor, fmt: str = "png") -> bytes:
    """``[3, H, W]`` in ``[-1, 1]`` -> the bytes of a ``png``, ``jpg`` or ``webp`` file."""
    if fmt not in IMAGE_FORMATS:
        raise InputError(f"Cannot encode {fmt!r} images; use one of {', '.join(IMAGE_FORMATS)}.")
    codec, pix_fmt, muxer = IMAGE_FORMATS[fmt]
    frame = av.VideoFrame.from_ndarray(to_uint8(image), format="rgb24")
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=muxer) as container:
        stream = container.add_stream(codec, rate=1)
        stream.width, stream.height, stream.pix_fmt = frame.width, frame.height, pix_fmt
        container.mux(stream.encode(frame.reformat(format=pix_fmt)))
        container.mux(stream.encode())
    return buf.getvalue()


def write_image(path: str | Path, image: Tensor) -> Path:
    """Write ``[3, H, W]`` in ``[-1, 1]`` as png / jpg / webp (from the suffix)."""
    path = Path(path)
    path.write_bytes(encode_image(image, path.suffix.lstrip(".").lower()))
    return path


def read_image(path: str | Path) -> Tensor:
    """An image file -> ``[3, H, W]`` in ``[-1, 1]``."""
    return read_video(path)[:, 0]
