"""World metrics on real world data: they behave as defined on every domain.

All data are rendered here with fixed seeds; the probes are the shipped ones
(mcm/world/assets/probes, built by mcm.world.probes.build_probes).
"""

import json

import pytest
import torch

from mcm.paths import WORLD_PROBES
from mcm.world.domains import degrade, gaussian_blur, render_sample, watermark_alpha
from mcm.world.metrics import (
    object_track,
    sharpness_ratio,
    track_direction,
    track_velocity,
    watermark_strength,
    world_metrics,
)
from mcm.world.probes import load_probes
from mcm.world.scenes import render_video, sample_scene

N = 64


def _videos(domain: str, seed: int, n: int = N):
    g = torch.Generator().manual_seed(seed)
    samples = [render_sample(domain, g) for _ in range(n)]
    return torch.stack([s[0] for s in samples]), [s[1] for s in samples], [s[2] for s in samples]


@pytest.fixture(scope="module")
def clean():
    return _videos("clean_video", 101)


@pytest.fixture(scope="module")
def lowq():
    return _videos("lowq_video", 102)


@pytest.fixture(scope="module")
def probes():
    return load_probes()


@pytest.fixture(scope="module")
def clean_metrics(clean, probes):
    return world_metrics(clean[0], clean[1], probes)


@pytest.fixture(scope="module")
def lowq_metrics(lowq, probes):
    return world_metrics(lowq[0], lowq[1], probes)


def test_prompt_accuracy_on_clean_and_low_quality(clean_metrics, lowq_metrics):
    assert clean_metrics["prompt_accuracy"] >= 0.98
    # The low-quality look keeps the content: prompts are still readable.
    assert lowq_metrics["prompt_accuracy"] >= 0.9


def test_clean_reference_videos_score_as_defined(clean_metrics):
    m = clean_metrics
    assert m["colour_accuracy"] >= 0.98
    assert m["motion_accuracy"] >= 0.98
    assert abs(m["watermark_score"]) < 0.05
    assert m["sharpness"] == pytest.approx(1.0, abs=0.1)
    assert m["num_videos"] == N


def test_low_quality_clips_show_the_watermark_and_lower_sharpness(lowq_metrics, clean_metrics):
    m = lowq_metrics
    assert m["watermark_score"] == pytest.approx(1.0, abs=0.1)
    assert m["sharpness"] < 0.7 * clean_metrics["sharpness"]
    # The low-quality look keeps the content: motion and colour are still readable.
    assert m["motion_accuracy"] >= 0.98
    assert m["colour_accuracy"] >= 0.98


def test_frechet_distances_separate_clean_from_low_quality(clean_metrics, lowq_metrics):
    assert 0 <= clean_metrics["frame_fd"] < lowq_metrics["frame_fd"]
    assert 0 <= clean_metrics["video_fd"] < lowq_metrics["video_fd"]


def test_high_quality_images_and_style_frames(probes):
    # Frames of hq_image are exactly the reference domain of frame_fd; cartoon clips keep
    # prompt and motion readable and carry no watermark.
    g = torch.Generator().manual_seed(103)
    scenes = [sample_scene(g) for _ in range(32)]
    cartoon = torch.stack([render_video(s, style="cartoon") for s in scenes])
    prompts = [s.prompt for s in scenes]
    m = world_metrics(cartoon, prompts, probes)
    assert m["colour_accuracy"] >= 0.95
    assert m["motion_accuracy"] >= 0.98
    assert abs(m["watermark_score"]) < 0.15
    images, captions, _ = _videos("hq_image", 104, n=N * 8)
    still = images.reshape(N, 8, 3, 32, 32).permute(0, 2, 1, 3, 4)  # 8 unrelated frames per "video"
    features = probes.frame_outputs(still)["frame_features"]
    from mcm.evaluation import frechet_distance_to_stats

    fd_images = frechet_distance_to_stats(features, *probes.frame_reference)
    lowq_frames = probes.frame_outputs(_videos("lowq_video", 105)[0])["frame_features"]
    assert fd_images < frechet_distance_to_stats(lowq_frames, *probes.frame_reference)


def test_sharpness_ignores_pixel_noise_and_drops_with_blur(clean):
    videos = clean[0][:32]
    base = sharpness_ratio(videos).mean()
    g = torch.Generator().manual_seed(106)
    noisy = (videos + 0.1 * torch.randn(videos.shape, generator=g)).clamp(-1, 1)
    frames = videos.permute(0, 2, 1, 3, 4).flatten(0, 1)
    smooth = gaussian_blur(frames, 1.5).reshape(32, 8, 3, 32, 32).permute(0, 2, 1, 3, 4)
    dim = 0.3 * videos  # contrast alone is not blur
    # Naive gradient energy would call the noisy clips much sharper.
    assert sharpness_ratio(noisy).mean() == pytest.approx(base, rel=0.15)
    assert sharpness_ratio(smooth).mean() < 0.5 * base
    assert sharpness_ratio(dim).mean() == pytest.approx(base, rel=0.05)


def test_watermark_score_tracks_the_known_glyph_only(clean):
    videos = clean[0][:16]
    alpha = watermark_alpha(32)
    marked = videos * (1 - alpha) + alpha
    half = videos * (1 - alpha / 2) + alpha / 2
    shifted = videos * (1 - alpha.roll(-6, dims=1)) + alpha.roll(-6, dims=1)  # not the known place
    assert watermark_strength(marked).mean() == pytest.approx(1.0, abs=0.05)
    assert watermark_strength(half).mean() == pytest.approx(0.5, abs=0.05)
    assert watermark_strength(shifted).abs().mean() < 0.1
    # The degradation adds exactly this watermark, under noise: still ~1 per clip.
    g = torch.Generator().manual_seed(107)
    lowq = torch.stack([degrade(v, g) for v in videos])
    assert (watermark_strength(lowq) - 1).abs().max() < 0.15


def test_track_follows_ground_truth_positions(clean):
    videos, _, scenes = clean
    centroids, weight = object_track(videos)
    assert (weight > 0).all()
    truth = torch.stack([s.positions() for s in scenes])
    # The centroid of the shape's pixels is the shape's centre (the triangle's is lower).
    error = (centroids - truth).norm(dim=-1)
    assert error.median() < 1.0
    velocity = track_velocity(centroids)
    speed = torch.tensor([s.speed for s in scenes])
    assert (velocity.norm(dim=-1) - speed).abs().max() < 0.5
    assert track_direction(velocity) == [s.direction for s in scenes]


def test_motion_accuracy_is_from_the_track_not_the_prompt(clean, probes):
    videos, prompts, _ = clean
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
    wrong = [p.rsplit(" ", 1)[0] + " " + opposite[p.rsplit(" ", 1)[1]] for p in prompts]
    m = world_metrics(videos[:16], wrong[:16], probes)
    assert m["motion_accuracy"] == 0.0
    frozen = videos[:16, :, :1].expand(-1, -1, 8, -1, -1)  # a still video has no direction
    reversed_ = videos[:16].flip(2)
    assert world_metrics(reversed_, prompts[:16], probes)["motion_accuracy"] == 0.0
    no_direction = [p.split(" moving")[0] for p in prompts[:16]]
    m = world_metrics(frozen, no_direction, probes, details=True)
    assert m["motion_accuracy"] != m["motion_accuracy"]  # NaN: no prompt names a direction
    assert m["colour_accuracy"] >= 0.9
    assert len(m["per_video"]) == 16 and {"shape", "colour", "direction"} <= set(m["per_video"][0])


def test_bad_inputs_name_the_problem(clean, probes, tmp_path):
    videos, prompts, _ = clean
    with pytest.raises(ValueError, match=r"\[B, 3, F, H, W\]"):
        world_metrics(videos[0], prompts[:1], probes)
    with pytest.raises(ValueError, match="one prompt per video"):
        world_metrics(videos[:2], prompts[:3], probes)
    with pytest.raises(ValueError, match="trained on 8 frames of 32x32"):
        world_metrics(videos[:2, :, :4], prompts[:2], probes)
    with pytest.raises(ValueError, match="Not a world prompt"):
        world_metrics(videos[:1], ["a photo of a cat"], probes)
    with pytest.raises(FileNotFoundError, match="build_probes"):
        load_probes(tmp_path)


def test_shipped_probes_are_small_and_read_colour_and_direction():
    size = sum(p.stat().st_size for p in WORLD_PROBES.iterdir())
    assert size < 3_000_000
    manifest = json.loads((WORLD_PROBES / "manifest.json").read_text())
    accuracy = manifest["heldout_accuracy"]
    for domain in ("clean_video", "lowq_video", "hq_image", "style_image"):
        assert accuracy["frame_probe"][domain]["colour"] >= 0.98, domain
    for domain in ("clean_video", "lowq_video"):
        assert accuracy["video_probe"][domain]["colour"] >= 0.98, domain
        assert accuracy["video_probe"][domain]["direction"] >= 0.98, domain
    assert manifest["reference"]["samples"] == 1000


def test_shipped_probes_read_shape():
    accuracy = json.loads((WORLD_PROBES / "manifest.json").read_text())["heldout_accuracy"]
    for domain in ("clean_video", "lowq_video", "hq_image", "style_image"):
        assert accuracy["frame_probe"][domain]["shape"] >= 0.98, domain


def test_build_probes_is_seeded_and_round_trips(tmp_path):
    from mcm.world.probe_training import build_probes
    from mcm.world.probes import ProbeConfig

    config = ProbeConfig(channels=(8, 8, 8))
    kwargs = dict(steps=2, batch_size=4, config=config, reference_samples=8, heldout_samples=4)
    built = build_probes(tmp_path / "a", seed=3, **kwargs)
    again = build_probes(tmp_path / "b", seed=3, num_workers=2, **kwargs)  # same batches
    loaded = load_probes(tmp_path / "a")
    for a, b in zip(built.video.state_dict().values(), again.video.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    clip = render_video(sample_scene(torch.Generator().manual_seed(0)))[None]
    torch.testing.assert_close(loaded.video_features(clip), built.video_features(clip))
    assert loaded.reference["video_sigma"].dtype == torch.float64
    assert loaded.manifest["heldout_accuracy"]["samples_per_domain"] == 4
    assert set(loaded.manifest["heldout_accuracy"]["frame_probe"]) == {
        "clean_video", "lowq_video", "hq_image", "style_image"
    }  # fmt: skip
