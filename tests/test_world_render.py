"""The world's domains on disk (`mcm world render`) and the batched training renderer."""

import json

import pytest
import torch

from mcm.cli import main
from mcm.media import read_image, read_video
from mcm.world.domains import DOMAINS, WATERMARK_OPACITY, degrade, watermark_alpha
from mcm.world.render import render_domain, render_domain_sample, render_world
from mcm.world.scenes import Scene, parse_prompt, render_frame, render_video, sample_scene
from mcm.world.train_data import (
    SceneBatch,
    degrade_batch,
    render_scene_batch,
    sample_scene_batch,
    vae_frame_batch,
    world_prompts,
)

LEVEL = 1 / 127.5  # one 8-bit level in [-1, 1] units


def _scene(truth: dict) -> Scene:
    return Scene(**{k: truth[k] for k in Scene.__dataclass_fields__})


def test_samples_are_deterministic_and_independent_of_index():
    a, cap_a, truth_a = render_domain_sample("lowq_video", 3, seed=7)
    b, cap_b, truth_b = render_domain_sample("lowq_video", 3, seed=7)
    assert torch.equal(a, b) and cap_a == cap_b and truth_a == truth_b
    c, _, _ = render_domain_sample("lowq_video", 4, seed=7)
    d, _, _ = render_domain_sample("lowq_video", 3, seed=8)
    assert not torch.equal(a, c) and not torch.equal(a, d)
    # The held-out clean videos never reuse the training videos' scenes.
    _, _, clean = render_domain_sample("clean_video", 3, seed=7)
    assert (clean["x0"], clean["y0"]) != (truth_a["x0"], truth_a["y0"])


@pytest.mark.parametrize("domain", DOMAINS)
def test_ground_truth_reproduces_the_pixels(domain):
    pixels, caption, truth = render_domain_sample(domain, 5, seed=1)
    scene = _scene(truth)
    assert caption == truth["caption"]
    assert parse_prompt(caption)["shape"] == scene.shape
    assert parse_prompt(caption)["colour"] == scene.colour
    if domain == "clean_video":
        assert caption == scene.prompt
        assert torch.equal(pixels, render_video(scene))
        assert torch.allclose(torch.tensor(truth["positions"]), scene.positions())
    elif domain == "lowq_video":
        assert parse_prompt(caption)["direction"] == scene.direction
        assert pixels.shape == (3, 8, 32, 32)
    else:
        assert caption == scene.image_caption
        assert torch.equal(pixels, render_frame(scene, truth["frame"], style=truth["style"]))


def test_lowq_video_is_degraded_and_watermarked():
    clean = torch.stack([render_domain_sample("clean_video", i, seed=2)[0] for i in range(8)])
    lowq = torch.stack([render_domain_sample("lowq_video", i, seed=2)[0] for i in range(8)])
    alpha = watermark_alpha(32)
    glyph = alpha > 0
    assert alpha.max() == pytest.approx(WATERMARK_OPACITY)
    # The fixed watermark: glyph pixels are brighter than the clip elsewhere, in every clip.
    median = lowq.median(dim=2).values.mean(dim=1)  # [B, H, W]
    assert (median[:, glyph].mean(1) > median[:, ~glyph].mean(1) + 0.3).all()
    assert (
        clean.mean(dim=(1, 2))[:, glyph].mean(1) < clean.mean(dim=(1, 2))[:, ~glyph].mean(1) + 0.3
    ).all()
    # Lower contrast: the spread of pixel values shrinks.
    assert lowq.std(dim=(1, 2, 3, 4)).mean() < clean.std(dim=(1, 2, 3, 4)).mean()


def test_render_world_layout_and_round_trip(tmp_path):
    info = render_world(tmp_path, n_videos=3, n_images=2, seed=0)
    assert info["domains"] == {"lowq_video": 3, "hq_image": 2, "style_image": 2, "clean_video": 3}
    assert json.loads((tmp_path / "world.json").read_text()) == info
    for domain, suffix, n in [
        ("lowq_video", ".mp4", 3),
        ("clean_video", ".mp4", 3),
        ("hq_image", ".png", 2),
        ("style_image", ".png", 2),
    ]:
        folder = tmp_path / domain
        assert sorted(p.name for p in folder.glob(f"*{suffix}")) == [
            f"{i:06d}{suffix}" for i in range(n)
        ]
        for i in range(n):
            stem = folder / f"{i:06d}"
            pixels, caption, truth = render_domain_sample(domain, i, seed=0)
            assert stem.with_suffix(".txt").read_text().strip() == caption
            assert json.loads(stem.with_suffix(".json").read_text()) == json.loads(
                json.dumps(truth)
            )
            if suffix == ".mp4":
                decoded = read_video(stem.with_suffix(".mp4"))
                assert decoded.shape == (3, 8, 32, 32)
                err = (decoded - pixels).abs()
                # Lossless H.264 4:4:4: only 8-bit quantisation + RGB<->YUV rounding remain.
                assert err.max() <= 2.5 * LEVEL and err.mean() < 0.6 * LEVEL
            else:
                decoded = read_image(stem.with_suffix(".png"))
                assert (decoded - pixels).abs().max() <= 0.5 * LEVEL + 1e-6


def test_render_domain_is_a_prefix_of_a_larger_render(tmp_path):
    render_domain("hq_image", tmp_path / "a", 2, seed=4)
    render_domain("hq_image", tmp_path / "b", 3, seed=4)
    for i in range(2):
        name = f"{i:06d}.png"
        assert torch.equal(read_image(tmp_path / "a" / name), read_image(tmp_path / "b" / name))


def test_bad_input_is_reported(tmp_path):
    with pytest.raises(ValueError, match="Unknown world domain"):
        render_domain("webvid", tmp_path, 1)
    with pytest.raises(ValueError, match="Unknown world domain"):
        render_world(tmp_path / "w", 1, 1, domains=["hq_image", "laion"])
    assert not (tmp_path / "w" / "hq_image").exists()  # checked before anything is written
    with pytest.raises(ValueError, match=">= 0"):
        render_domain("hq_image", tmp_path, -1)
    with pytest.raises(FileNotFoundError):
        read_video(tmp_path / "missing.mp4")


def test_cli_render(tmp_path, capsys):
    rc = main(
        [
            "world",
            "render",
            "--out",
            str(tmp_path),
            "--n-videos",
            "2",
            "--n-images",
            "1",
            "--seed",
            "3",
        ]
    )
    assert rc == 0
    assert len(list((tmp_path / "lowq_video").glob("*.mp4"))) == 2
    assert len(list((tmp_path / "style_image").glob("*.png"))) == 1
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["clean_video"] == 2


# --- the batched renderer used for training --------------------------------------------


def test_batched_renderer_equals_reference():
    g = torch.Generator().manual_seed(0)
    scenes = [sample_scene(g) for _ in range(12)]
    batch = SceneBatch.from_scenes(scenes)
    for style in ("clean", "cartoon"):
        ref = torch.stack([render_video(s, style=style) for s in scenes])
        torch.testing.assert_close(render_scene_batch(batch, style=style), ref, rtol=0, atol=1e-6)
    frames = torch.tensor([[2], [5]] * 6)
    ref = torch.stack([render_frame(s, int(f)) for s, f in zip(scenes, frames[:, 0])])
    torch.testing.assert_close(render_scene_batch(batch, frames)[:, :, 0], ref, rtol=0, atol=1e-6)
    # The low-quality degradation, batched, draws the same noise as the reference for B = 1.
    video = render_video(scenes[0])
    expected = degrade(video, torch.Generator().manual_seed(3))
    got = degrade_batch(video[None], torch.Generator().manual_seed(3))[0]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    prompts = world_prompts()
    assert [prompts[i] for i in batch.prompt_index().tolist()] == [s.prompt for s in scenes]
    assert batch.scene(4).prompt == scenes[4].prompt


def test_batched_scene_sampler_matches_the_reference_distribution():
    g = torch.Generator().manual_seed(1)
    batch = sample_scene_batch(4000, g)
    ref = [sample_scene(torch.Generator().manual_seed(i)) for i in range(400)]
    for name in ("radius", "speed", "background", "x0", "y0"):
        ours = getattr(batch, name)
        theirs = torch.tensor([getattr(s, name) for s in ref])
        assert ours.min() >= theirs.min() - 0.6 and ours.max() <= theirs.max() + 0.6, name
        assert abs(ours.mean() - theirs.mean()) < 0.1 * theirs.std() + 0.35, name
    # Every object stays inside the frame for all 8 frames.
    pos = torch.stack([batch.scene(i).positions() for i in range(200)])  # [200, 8, 2]
    r = batch.radius[:200, None, None]
    assert (pos - r >= 1 - 1e-4).all() and (pos + r <= 31 + 1e-4).all()
    assert torch.bincount(batch.shape, minlength=5).min() > 600


def test_vae_frame_batch_mixes_domains():
    frames = vae_frame_batch(48, torch.Generator().manual_seed(0))
    assert frames.shape == (48, 3, 32, 32)
    assert frames.min() >= -1 and frames.max() <= 1
    # Style frames have the cream background (bright in all channels) somewhere.
    assert (frames[-12:].mean(dim=(1, 2, 3)) > 0.3).all()
