"""Reading and writing videos and images with PyAV (no ffmpeg binary, no torchvision).

Videos are ``[3, F, H, W]`` and images ``[3, H, W]`` float tensors in ``[-1, 1]``. The
suffix picks the video codec: H.264 for ``.mp4`` / ``.mkv`` / ``.mov``, VP9 for ``.webm``,
PyAV's gif encoder for ``.gif``. H.264 is written in yuv444p at a low CRF by default, so
that the world's 32x32 colours survive the round trip (yuv420p halves the chroma
resolution; ``pixel_format="yuv420p"`` gives the most compatible files, odd sizes padded).

A GIF frame holds at most 256 colours. Pillow's maximum-coverage quantizer picks them, without
dithering: one palette for the whole clip when it keeps every pixel within ``GIF_MAX_ERROR``
levels of 255 (small files, one quantizer call), else one per frame (GIF local colour tables).
On world clips every pixel stays within 8 levels (ffmpeg's fixed rgb8 palette: up to 111).
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image
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
# Maximum coverage takes ~1 s per 65536 pixels of a photo-like frame: the palette of more
# pixels is computed from an even subsample of this many of them.
GIF_PALETTE_PIXELS = 1 << 14
GIF_MAX_ERROR = 8  # levels of 255 a clip-wide GIF palette may be off, else one per frame


def to_uint8(x: Tensor) -> np.ndarray:
    """``[3, ..., H, W]`` in ``[-1, 1]`` -> uint8 ``[..., H, W, 3]``."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(0, -1).cpu().numpy()


def from_uint8(a: np.ndarray) -> Tensor:
    """uint8 ``[..., H, W, 3]`` -> ``[3, ..., H, W]`` float in ``[-1, 1]``."""
    return torch.from_numpy(np.array(a, copy=True)).float().movedim(-1, 0) / 127.5 - 1


def _nearest(colours: np.ndarray, palette: np.ndarray, chunk: int = 1 << 14) -> np.ndarray:
    """Index of the nearest palette entry (squared RGB distance): ``[U, 3]``, ``[K, 3]`` -> ``[U]``."""
    # |c - p|^2 = |c|^2 - 2 c.p + |p|^2, and |c|^2 is the same for every p. Integers below 2^24:
    # exact in float32.
    p = palette.astype(np.float32)
    norms = (p**2).sum(1)
    out = []
    for c in np.split(colours.astype(np.float32), range(chunk, len(colours), chunk)):
        dot = sum(c[:, i, None] * p[:, i] for i in range(3))  # a 3-deep matmul is slower
        out.append((norms - 2 * dot).argmin(1))
    return np.concatenate(out)


def gif_palette(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """256 colours for uint8 ``[..., 3]`` pixels -> (palette indices uint8 ``[...]``, palette
    uint8 ``[256, 3]``).

    At most 256 distinct colours are kept exactly. Otherwise Pillow's maximum-coverage
    quantizer picks 256 colours (from an even subsample of ``GIF_PALETTE_PIXELS`` pixels of
    more) and each pixel takes the nearest one, without dithering.
    """
    flat = pixels.reshape(-1, 3)
    rgb = flat.astype(np.uint32)
    codes, inverse = np.unique(rgb[:, 0] << 16 | rgb[:, 1] << 8 | rgb[:, 2], return_inverse=True)
    colours = ((codes[:, None] >> np.array([16, 8, 0], np.uint32)) & 255).astype(np.uint8)
    if len(colours) <= 256:
        palette, lookup = colours, np.arange(len(colours))
    else:
        step = -(-len(flat) // GIF_PALETTE_PIXELS)
        sample = Image.fromarray(np.ascontiguousarray(flat[None, ::step]))
        indexed = sample.quantize(256, method=Image.Quantize.MAXCOVERAGE, dither=Image.Dither.NONE)
        palette = np.array(indexed.getpalette(), np.uint8).reshape(-1, 3)[:256]
        lookup = _nearest(colours, palette)
    padded = np.zeros((256, 3), np.uint8)
    padded[: len(palette)] = palette
    return lookup[inverse].astype(np.uint8).reshape(pixels.shape[:-1]), padded


def gif_palettes(frames: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """A clip's GIF frames: uint8 ``[F, H, W, 3]`` -> per frame (indices uint8 ``[H, W]``,
    palette uint8 ``[256, 3]``): one palette for the clip if it keeps every pixel within
    ``GIF_MAX_ERROR`` levels, else each frame's own."""
    indices, palette = gif_palette(frames)
    if np.abs(palette[indices].astype(np.int16) - frames).max() <= GIF_MAX_ERROR:
        return [(frame_indices, palette) for frame_indices in indices]
    return [gif_palette(frame) for frame in frames]


def _gif_frame(indices: np.ndarray, palette: np.ndarray) -> av.VideoFrame:
    argb = np.concatenate([np.full((256, 1), 255, np.uint8), palette], axis=1)
    return av.VideoFrame.from_ndarray((indices, argb), format="pal8")


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
            stream.pix_fmt = "pal8"
            # ffmpeg's default transdiff/offsetting reuse the previous frame's pixels by
            # palette index, which shows wrong colours when the palettes differ.
            stream.options = {"gifflags": "0"}
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
        if suffix == ".gif":
            video_frames = (_gif_frame(*colours) for colours in gif_palettes(frames))
        else:
            video_frames = (av.VideoFrame.from_ndarray(a, format="rgb24") for a in frames)
        for i, frame in enumerate(video_frames):
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
