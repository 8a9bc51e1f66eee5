"""diffusers' own video writer works in the project's environment (imageio + imageio-ffmpeg
are pinned in requirements.txt), and `mcm.media` reads what it writes."""

import av
import numpy as np
import torch
from diffusers.utils import export_to_video

from mcm.media import read_video, to_uint8
from mcm.paths import resolve_teacher
from mcm.world.pipeline import load_world_pipeline


def test_export_to_video_writes_an_mp4_of_a_pipeline_output_that_mcm_reads(tmp_path):
    pipe = load_world_pipeline(resolve_teacher("world"))
    frames = pipe(
        "a red circle moving left",
        num_inference_steps=1,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).frames[0]  # [F, H, W, 3] float in [0, 1]
    path = export_to_video(list(frames), str(tmp_path / "clip.mp4"), fps=8)

    video = read_video(path)  # [3, F, H, W]
    assert video.shape == (3, *frames.shape[:3])
    with av.open(path) as container:
        assert container.streams.video[0].guessed_rate == 8
    # export_to_video truncates to uint8 and writes yuv420p H.264 at its default quality: the
    # chroma of a 32x32 clip is smeared, so only the mean is close.
    written = (frames * 255).astype(np.uint8).astype(int)
    assert np.abs(to_uint8(video).astype(int) - written).mean() < 8
