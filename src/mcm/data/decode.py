"""Decoding with PyAV: frame sampling, random-resized-crop, tensors in [-1, 1].

Every failure of one file becomes ``BadSample(reason, detail)``; nothing here logs or
counts (the dataset and ``BadSampleLog`` do). Random draws (start frame, crop box) come
from the generator passed in.
"""

from __future__ import annotations

import io
import math
import os
import urllib.request

import av
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mcm.data.badlog import BadSample

# Sources: a path, a URL, or the bytes of a webdataset member.
MediaSource = str | bytes


def _uniform(generator: torch.Generator) -> float:
    return float(torch.rand((), generator=generator))


def _randint(high: int, generator: torch.Generator) -> int:
    """Uniform integer in [0, high]."""
    return int(torch.randint(0, high + 1, (), generator=generator))


def frame_indices(
    num_available: int,
    num_frames: int,
    stride: float,
    generator: torch.Generator,
    start: str = "random",
    policy: str = "lower_stride",
) -> list[int]:
    """Indices of the ``num_frames`` frames to take from a clip of ``num_available`` frames.

    Frames are ``start + i * stride`` (rounded), ``i = 0..num_frames-1``; ``stride`` may be
    fractional (fps-based sampling). The start is drawn uniformly among the positions where the
    whole span fits (``start="random"``) or is 0 (``"first"``).

    Raises:
        BadSample("too_short"): the clip cannot give ``num_frames`` frames under ``policy``
            (``skip``: the span ``(num_frames - 1) * stride + 1`` must fit; ``lower_stride``:
            the stride shrinks to fit, down to 1 frame apart).
    """
    span = (num_frames - 1) * stride + 1
    if num_available < math.ceil(span - 1e-9):
        if policy == "skip" or num_available < num_frames:
            need = math.ceil(span - 1e-9) if policy == "skip" else num_frames
            raise BadSample(
                "too_short",
                f"{num_available} frames, need {need} "
                f"(num_frames={num_frames}, stride={stride:g}, short_clip_policy={policy})",
            )
        stride = (num_available - 1) / (num_frames - 1)
        span = num_available
    last_start = num_available - math.ceil(span - 1e-9)
    first = _randint(last_start, generator) if start == "random" else 0
    return [min(num_available - 1, int(first + i * stride + 0.5)) for i in range(num_frames)]


def crop_box(
    height: int,
    width: int,
    out_size: tuple[int, int],
    scale: tuple[float, float] | list[float],
    generator: torch.Generator,
    mode: str = "random",
) -> tuple[int, int, int, int]:
    """``(top, left, box_h, box_w)`` of the region to resize to ``out_size``.

    The box has the output's aspect ratio. ``random``: its area is a fraction
    ``U[scale[0], scale[1]]`` of the largest such box that fits, at a uniform position.
    ``center``: the largest such box, centred.
    """
    out_h, out_w = out_size
    aspect = out_w / out_h
    max_h = min(height, width / aspect)
    if mode == "center":
        frac = 1.0
    else:
        lo, hi = scale
        frac = lo + (hi - lo) * _uniform(generator)
    box_h = max(1, min(height, round(max_h * math.sqrt(frac))))
    box_w = max(1, min(width, round(box_h * aspect)))
    if mode == "center":
        return (height - box_h) // 2, (width - box_w) // 2, box_h, box_w
    return _randint(height - box_h, generator), _randint(width - box_w, generator), box_h, box_w


def resize_to_unit(frames: Tensor, out_size: tuple[int, int]) -> Tensor:
    """uint8 ``[F, h, w, 3]`` -> float ``[3, F, H, W]`` in ``[-1, 1]`` (antialiased bilinear)."""
    x = frames.permute(0, 3, 1, 2).float()
    if tuple(x.shape[-2:]) != tuple(out_size):
        x = F.interpolate(x, size=out_size, mode="bilinear", antialias=True, align_corners=False)
    x = (x / 127.5 - 1.0).clamp_(-1.0, 1.0)
    return x.permute(1, 0, 2, 3).contiguous()


def _open(src: MediaSource):
    """Open a container; raises BadSample for missing, empty or non-media input."""
    if isinstance(src, bytes):
        if not src:
            raise BadSample("empty_file", "0 bytes")
        target = io.BytesIO(src)
    else:
        if not os.path.exists(src):
            raise BadSample("missing_file", "no such file")
        if os.path.getsize(src) == 0:
            raise BadSample("empty_file", "0 bytes")
        target = src
    try:
        return av.open(target, mode="r")
    except (av.error.FFmpegError, OSError, ValueError) as e:
        reason = "truncated" if _mp4_cut_short(src) else "undecodable"
        raise BadSample(reason, _message(e)) from e


def _message(e: Exception) -> str:
    """ffmpeg's message without the file name PyAV appends (the log already names it)."""
    return getattr(e, "strerror", None) or str(e)


def _mp4_cut_short(src: MediaSource) -> bool:
    """True for an ISO-media (mp4/mov) file whose top-level boxes run past its end or that
    has no index (``moov``): what an mp4 cut short looks like (the index is written last by
    default). A text file named .mp4 does not start with a box and gives False."""
    fh = io.BytesIO(src) if isinstance(src, bytes) else open(src, "rb")  # noqa: SIM115
    with fh:
        size = fh.seek(0, io.SEEK_END)
        pos, boxes = 0, []
        while pos + 8 <= size:
            fh.seek(pos)
            head = fh.read(16)
            n, kind = int.from_bytes(head[:4], "big"), head[4:8]
            if n == 1 and len(head) == 16:
                n = int.from_bytes(head[8:16], "big")
            elif n == 0:
                n = size - pos
            if n < 8 or not kind.isalnum() and kind not in (b"free", b"skip"):
                return False
            boxes.append(kind)
            pos += n
    if not boxes or boxes[0] not in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return False
    return pos > size or b"moov" not in boxes


def _frame_count(stream) -> tuple[int, bool]:
    """(frames, exact): the header's frame count, else an estimate from duration x rate."""
    if stream.frames and stream.frames > 0:
        return int(stream.frames), True
    rate = stream.average_rate or stream.guessed_rate
    if stream.duration and stream.time_base and rate:
        return max(1, int(round(float(stream.duration * stream.time_base * rate)))), False
    container = stream.container
    if container.duration and rate:
        return max(1, int(round(container.duration / 1e6 * float(rate)))), False
    return 0, False


def _to_rgb(frame, box: tuple[int, int, int, int], out_size: tuple[int, int]) -> np.ndarray:
    """The crop box of one frame as uint8 [h, w, 3], downscaled by swscale first when the box
    is much larger than the output (decoding 1080p for 256p training stays cheap)."""
    top, left, bh, bw = box
    factor = min(1.0, 2.0 * out_size[0] / bh)
    if factor < 1.0:
        sw, sh = max(1, round(frame.width * factor)), max(1, round(frame.height * factor))
        img = frame.to_ndarray(format="rgb24", width=sw, height=sh, interpolation="AREA")
        fy, fx = sh / frame.height, sw / frame.width
        top, left = int(top * fy), int(left * fx)
        bh, bw = max(1, round(bh * fy)), max(1, round(bw * fx))
        return img[top : top + bh, left : left + bw]
    img = frame.to_ndarray(format="rgb24")
    return img[top : top + bh, left : left + bw]


def decode_video(
    src: MediaSource,
    num_frames: int,
    out_size: tuple[int, int],
    generator: torch.Generator,
    frame_stride: int = 1,
    fps: float | None = None,
    start: str = "random",
    policy: str = "lower_stride",
    crop: str = "random",
    crop_scale: tuple[float, float] | list[float] = (1.0, 1.0),
    min_side: int = 1,
    timeout: float = 30.0,
) -> Tensor:
    """Decode ``num_frames`` frames of a clip into ``[3, F, H, W]`` in ``[-1, 1]``.

    One crop box is drawn per clip and applied to every frame. Draw order: start frame, then
    crop box (both from ``generator``).

    Raises:
        BadSample: missing/empty/undecodable file, no video stream, too small, too short,
            truncated or decode errors.
    """
    if isinstance(src, str) and src.startswith(("http://", "https://")):
        src = _fetch(src, timeout)  # once: a second pass below must not download again
    args = (num_frames, out_size, frame_stride, fps, start, policy, crop, crop_scale, min_side)
    state = generator.get_state()
    clip, total, decoded, exact = _decode_clip(src, generator, None, *args)
    if clip is not None:
        return clip
    if (exact and decoded < 0.9 * total) or decoded < num_frames:
        raise BadSample("truncated", f"the stream ends after {decoded} of {total} frames")
    # The header overestimated the length (common when it has no frame count): draw again,
    # with the same generator state, within the frames that exist.
    generator.set_state(state)
    clip, *_ = _decode_clip(src, generator, decoded, *args)
    if clip is None:
        raise BadSample("truncated", f"the stream ends after {decoded} of {total} frames")
    return clip


def _fetch(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read()
    except Exception as e:  # noqa: BLE001 - any network failure is one bad sample
        raise BadSample("download_error", str(e)) from e


def _decode_clip(
    src,
    generator,
    known_total,
    num_frames,
    out_size,
    frame_stride,
    fps,
    start,
    policy,
    crop,
    crop_scale,
    min_side,
):
    """(clip or None when the stream ended early, frames expected, frames decoded, exact)."""
    with _open(src) as container:
        if not container.streams.video:
            kinds = ",".join(sorted({s.type for s in container.streams})) or "no streams"
            raise BadSample("no_video_stream", f"streams: {kinds}")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if min(width, height) < min_side:
            raise BadSample("too_small", f"{width}x{height} < min_side={min_side}")
        total, exact = (known_total, True) if known_total else _frame_count(stream)
        stride = float(frame_stride)
        if fps is not None:
            rate = stream.average_rate or stream.guessed_rate
            if not rate:
                raise BadSample("undecodable", "unknown frame rate: cannot sample by fps")
            stride = float(rate) / fps
        if total == 0:  # unknown length (rare: raw streams): count by decoding
            total, exact = _count_frames(container, stream), True
            container.seek(0)
        indices = frame_indices(total, num_frames, stride, generator, start, policy)
        box = crop_box(height, width, out_size, crop_scale, generator, crop)
        try:
            frames, decoded = _decode_indices(container, stream, indices, box, out_size)
        except BadSample as e:
            if _mp4_cut_short(src):  # the data ends inside a box: cut short, not corrupt
                raise BadSample("truncated", e.detail) from e
            raise
    if len(frames) < len(set(indices)):
        return None, total, decoded, exact
    by_index = dict(frames)
    clip = np.stack([by_index[i] for i in indices])
    return resize_to_unit(torch.from_numpy(clip), out_size), total, decoded, exact


def _count_frames(container, stream) -> int:
    n = 0
    try:
        for _ in container.decode(stream):
            n += 1
    except av.error.FFmpegError:
        pass
    return n


def _decode_indices(container, stream, indices, box, out_size):
    """Decode from the start up to the last wanted index; ([(index, rgb)], frames decoded)."""
    wanted, last = set(indices), max(indices)
    stream.thread_type = "AUTO"
    out, i = [], -1
    try:
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                out.append((i, _to_rgb(frame, box, out_size)))
            if i >= last:
                break
    except (av.error.FFmpegError, OSError, ValueError) as e:
        if len(out) < len(wanted):
            raise BadSample("decode_error", f"after {i + 1} frames: {_message(e)}") from e
    return out, i + 1


def decode_image(
    src: MediaSource,
    out_size: tuple[int, int],
    generator: torch.Generator,
    crop: str = "random",
    crop_scale: tuple[float, float] | list[float] = (1.0, 1.0),
    min_side: int = 1,
    timeout: float = 30.0,
) -> Tensor:
    """Decode an image (png, jpeg, webp, ... via PyAV) into ``[3, H, W]`` in ``[-1, 1]``.

    Raises:
        BadSample: missing/empty/undecodable file, no image stream, too small.
    """
    if isinstance(src, str) and src.startswith(("http://", "https://")):
        src = _fetch(src, timeout)
    with _open(src) as container:
        if not container.streams.video:
            raise BadSample("no_video_stream", "no image stream")
        stream = container.streams.video[0]
        try:
            frame = next(container.decode(stream))
        except StopIteration as e:
            raise BadSample("decode_error", "no frame in the file") from e
        except (av.error.FFmpegError, OSError, ValueError) as e:
            raise BadSample("decode_error", _message(e)) from e
        if min(frame.width, frame.height) < min_side:
            raise BadSample("too_small", f"{frame.width}x{frame.height} < min_side={min_side}")
        box = crop_box(frame.height, frame.width, out_size, crop_scale, generator, crop)
        rgb = _to_rgb(frame, box, out_size)
    return resize_to_unit(torch.from_numpy(np.ascontiguousarray(rgb))[None], out_size)[:, 0]
