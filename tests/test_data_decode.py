"""Decoding real media files written by PyAV: frame sampling, crops, every kind of bad file."""

import numpy as np
import pytest
import torch

from mcm.data import BadSample, crop_box, decode_image, decode_video, frame_indices
from mcm.media import encode_image, write_image, write_video


def ramp_clip(num_frames: int, height: int = 32, width: int = 48) -> torch.Tensor:
    """[3, F, H, W]: frame i is a flat grey of level 16 + 12 i (so the index can be read back)."""
    levels = torch.tensor([16 + 12 * i for i in range(num_frames)], dtype=torch.float32)
    return (levels / 127.5 - 1).view(1, -1, 1, 1).expand(3, num_frames, height, width).clone()


def read_indices(clip: torch.Tensor) -> list[int]:
    """Frame indices of a decoded ramp clip [3, F, H, W]."""
    u8 = (clip.mean(dim=(0, 2, 3)) + 1) * 127.5
    return [round((v - 16) / 12) for v in u8.tolist()]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    write_video(d / "ramp.mp4", ramp_clip(18), fps=10)
    write_video(d / "ramp_faststart.mp4", ramp_clip(18), fps=10, faststart=True)
    write_video(d / "one.mp4", ramp_clip(1), fps=10)
    write_video(d / "tiny.mp4", ramp_clip(8, 8, 8), fps=10)
    write_video(d / "ramp.webm", ramp_clip(10), fps=10, codec="libvpx-vp9")
    data = (d / "ramp.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])
    data = (d / "ramp_faststart.mp4").read_bytes()
    (d / "truncated_faststart.mp4").write_bytes(data[: int(len(data) * 0.6)])
    (d / "empty.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("this is a caption, not a video\n" * 20)
    _write_audio_only(d / "audio.mp4")
    image = torch.linspace(-1, 1, 40).view(1, 1, 40).expand(3, 30, 40).clone()
    for ext in ("png", "jpg", "webp"):
        write_image(d / f"image.{ext}", image)
    return d


def _write_audio_only(path):
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# -- pure sampling functions -----------------------------------------------------------------


def test_frame_indices_stride_and_random_start_fit():
    for seed in range(20):
        idx = frame_indices(30, 4, 3, gen(seed))
        assert len(idx) == 4 and all(b - a == 3 for a, b in zip(idx, idx[1:]))
        assert idx[0] >= 0 and idx[-1] < 30
    starts = {frame_indices(30, 4, 3, gen(s))[0] for s in range(300)}
    assert starts == set(range(0, 30 - 9))  # every start where the span fits is reachable


def test_frame_indices_first_start_and_fractional_stride():
    assert frame_indices(30, 4, 3, gen(), start="first") == [0, 3, 6, 9]
    assert frame_indices(100, 4, 2.5, gen(), start="first") == [0, 3, 5, 8]


def test_short_clip_policies():
    with pytest.raises(BadSample) as e:
        frame_indices(10, 4, 8, gen(), policy="skip")
    assert e.value.reason == "too_short"
    idx = frame_indices(10, 4, 8, gen(), policy="lower_stride")
    assert idx == [0, 3, 6, 9]  # stride lowered to (10 - 1) / 3 = 3: the whole clip
    with pytest.raises(BadSample) as e:
        frame_indices(3, 4, 1, gen(), policy="lower_stride")
    assert e.value.reason == "too_short"


def test_crop_box_aspect_scale_and_bounds():
    for seed in range(20):
        top, left, h, w = crop_box(90, 160, (32, 64), (0.5, 1.0), gen(seed))
        assert 0 <= top <= 90 - h and 0 <= left <= 160 - w
        assert abs(w / h - 2.0) < 0.05
        assert 0.5 * 80 * 160 * 0.95 <= h * w <= 80 * 160 * 1.0001  # largest 2:1 box is 80x160
    assert crop_box(90, 160, (32, 32), (0.5, 1.0), gen(), mode="center") == (0, 35, 90, 90)


# -- real files ------------------------------------------------------------------------------


def test_decode_video_frames_shape_range_and_indices(media):
    clip = decode_video(media / "ramp.mp4", 4, (16, 24), gen(3), frame_stride=3, crop="center")
    assert clip.shape == (3, 4, 16, 24) and clip.dtype == torch.float32
    assert clip.min() >= -1 and clip.max() <= 1
    expected = frame_indices(18, 4, 3, gen(3))
    assert read_indices(clip) == expected


def test_decode_video_same_crop_for_every_frame(media):
    video = torch.rand(3, 1, 32, 48).expand(3, 6, 32, 48) * 2 - 1
    path = media / "still.mp4"
    write_video(path, video, crf=0)
    clip = decode_video(path, 6, (16, 16), gen(1), crop_scale=(0.3, 0.6))
    assert torch.allclose(clip[:, 0], clip[:, -1], atol=0.05)  # one box for the whole clip


def test_decode_video_fps_sampling(media):
    clip = decode_video(media / "ramp.mp4", 4, (16, 16), gen(), fps=5, start="first")
    assert read_indices(clip) == [0, 2, 4, 6]  # 10 fps file sampled at 5 fps


def test_decode_is_deterministic_per_generator(media):
    a = decode_video(media / "ramp.mp4", 4, (16, 16), gen(7), frame_stride=2, crop_scale=(0.5, 1))
    b = decode_video(media / "ramp.mp4", 4, (16, 16), gen(7), frame_stride=2, crop_scale=(0.5, 1))
    assert torch.equal(a, b)


def test_decode_from_bytes_and_other_containers(media):
    data = (media / "ramp.mp4").read_bytes()
    clip = decode_video(data, 3, (16, 16), gen(), start="first")
    assert read_indices(clip) == [0, 1, 2]
    webm = decode_video(media / "ramp.webm", 5, (16, 16), gen(), frame_stride=2, start="first")
    assert read_indices(webm) == [0, 2, 4, 6, 8]


@pytest.mark.parametrize(
    "name, reason",
    [
        ("truncated.mp4", "truncated"),  # index (moov, written last) cut off
        ("truncated_faststart.mp4", "truncated"),  # index first, data cut off
        ("empty.mp4", "empty_file"),
        ("text.mp4", "undecodable"),
        ("audio.mp4", "no_video_stream"),
        ("one.mp4", "too_short"),
        ("tiny.mp4", "too_small"),
        ("missing.mp4", "missing_file"),
    ],
)
def test_bad_video_files_raise_bad_sample_with_reason(media, name, reason):
    with pytest.raises(BadSample) as e:
        decode_video(media / name, 4, (16, 16), gen(), frame_stride=2, min_side=16)
    assert e.value.reason == reason


def test_bad_bytes(media):
    with pytest.raises(BadSample) as e:
        decode_video(b"", 4, (16, 16), gen())
    assert e.value.reason == "empty_file"
    data = (media / "ramp.mp4").read_bytes()
    with pytest.raises(BadSample) as e:
        decode_video(data[: len(data) // 2], 4, (16, 16), gen())
    assert e.value.reason == "truncated"


@pytest.mark.parametrize("ext, tol", [("png", 0.02), ("jpg", 0.06), ("webp", 0.08)])
def test_decode_image_formats(media, ext, tol):
    img = decode_image(media / f"image.{ext}", (15, 20), gen(), crop="center")
    assert img.shape == (3, 15, 20)
    ref = torch.linspace(-1, 1, 40).view(1, 1, 40).expand(3, 15, 40)
    ref = torch.nn.functional.interpolate(ref[None], (15, 20), mode="bilinear", antialias=True)[0]
    assert (img - ref).abs().mean() < tol


def test_decode_image_bad_inputs(media):
    for src, reason in [
        (media / "text.mp4", "undecodable"),
        (media / "empty.mp4", "empty_file"),
        (media / "audio.mp4", "no_video_stream"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "decode_error"),  # header, then garbage
    ]:
        with pytest.raises(BadSample) as e:
            decode_image(src, (8, 8), gen())
        assert e.value.reason == reason, src
    small = encode_image(torch.zeros(3, 4, 4), "png")
    with pytest.raises(BadSample) as e:
        decode_image(small, (8, 8), gen(), min_side=8)
    assert e.value.reason == "too_small"


def test_large_frames_are_downscaled_before_the_crop(media):
    big = ramp_clip(3, 240, 320)
    write_video(media / "big.mp4", big, fps=10)
    clip = decode_video(media / "big.mp4", 3, (24, 32), gen(), crop="center", start="first")
    assert clip.shape == (3, 3, 24, 32)
    assert read_indices(clip) == [0, 1, 2]
