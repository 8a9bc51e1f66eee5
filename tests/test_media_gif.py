"""GIFs written by `mcm.media`: adaptive palettes (one per clip, or per frame where one per clip
is too coarse) keep world clips within a few levels of 255, and the file keeps every frame and
the frame rate."""

import av
import numpy as np
import pytest
from PIL import Image, ImageSequence

from mcm.media import GIF_MAX_ERROR, gif_palette, gif_palettes, read_video, to_uint8, write_video
from mcm.world.render import FPS, render_domain_sample


def _max_abs_error(path, video) -> int:
    back = to_uint8(read_video(path)).astype(int)
    return int(np.abs(back - to_uint8(video).astype(int)).max())


@pytest.mark.parametrize("domain, bound", [("lowq_video", 16), ("clean_video", 0)])
def test_a_world_clip_survives_the_gif_round_trip(tmp_path, domain, bound):
    """lowq_video (blur, noise, watermark: ~1000 colours a frame) within 16 of 255 levels
    (measured 8); clean_video (< 256 colours a frame) exactly. The fixed rgb8 palette this
    replaced was 111 levels off on lowq_video."""
    video = render_domain_sample(domain, 3)[0]  # [3, 8, 32, 32]
    path = write_video(tmp_path / "clip.gif", video, fps=FPS)
    assert _max_abs_error(path, video) <= bound
    assert read_video(path).shape == video.shape


def test_the_gif_keeps_the_frame_count_and_rate_and_pillow_decodes_the_same_frames(tmp_path):
    video = render_domain_sample("lowq_video", 5)[0]
    video[:, 3] = video[:, 2]  # a repeated frame stays a frame of its own
    path = write_video(tmp_path / "clip.gif", video, fps=8)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        assert stream.guessed_rate == 8
    # GIF delays are whole centiseconds: 12.5 cs alternates 13 and 12.
    assert [f.pts for f in frames] == [round(i * 12.5 + 1e-9) for i in range(8)]
    ours = np.stack([f.to_ndarray(format="rgb24") for f in frames])
    pillow = np.stack(
        [np.array(f.convert("RGB")) for f in ImageSequence.Iterator(Image.open(path))]
    )
    np.testing.assert_array_equal(pillow, ours)


def test_a_large_frame_takes_its_palette_from_a_subsample_and_maps_to_the_nearest_colour():
    """A 136x136 frame (18496 pixels, above GIF_PALETTE_PIXELS) of many colours: every pixel
    gets the palette entry nearest to it."""
    frame = to_uint8(render_domain_sample("lowq_video", 0, size=136, num_frames=1)[0][:, 0])
    indices, palette = gif_palette(frame)
    assert indices.shape == (136, 136) and palette.shape == (256, 3)
    pixels = frame.reshape(-1, 1, 3).astype(np.int32)
    distance = ((pixels - palette.astype(np.int32)) ** 2).sum(-1)  # [pixels, 256]
    chosen = np.take_along_axis(distance, indices.reshape(-1, 1).astype(np.int64), 1)[:, 0]
    np.testing.assert_array_equal(chosen, distance.min(1))
    assert np.abs(palette[indices].astype(int) - frame).max() <= 32


def test_a_clip_shares_one_palette_unless_that_is_too_coarse():
    """A clean clip (under 256 colours) shares one exact palette; a low-quality one (noise:
    a clip palette ~13 levels off) gets one palette per frame."""
    clean = to_uint8(render_domain_sample("clean_video", 1)[0])
    palettes = [p for _, p in gif_palettes(clean)]
    assert all(p is palettes[0] for p in palettes)
    lowq = to_uint8(render_domain_sample("lowq_video", 1)[0])
    colours = gif_palettes(lowq)
    assert len({p.tobytes() for _, p in colours}) == len(lowq)
    assert (
        max(np.abs(p[i].astype(int) - f).max() for (i, p), f in zip(colours, lowq)) <= GIF_MAX_ERROR
    )
