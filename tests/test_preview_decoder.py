"""The preview decoder: built for a VAE, trained by `mcm decoder` on real mp4/png files of a
tiny real pipeline, saved, loaded, used by the samplers and by a stock diffusers pipeline."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import AutoencoderTiny, TextToVideoSDPipeline

from mcm.cli import main
from mcm.media import write_image, write_video
from mcm.models import PreviewDecoder, VideoVAE, load_teacher
from mcm.models.sampling import sample_student
from mcm.models.tiny import save_tiny_pipeline, tiny_vae, tiny_wan_vae
from mcm.models.vae import WanVideoVAE
from mcm.training.config import TrainConfig
from mcm.training.config_io import from_dict, save_config
from mcm.training.preview_decoder import PreviewDecoderConfig, PreviewDecoderRecipe
from mcm.world.domains import render_sample


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("preview")
    teacher = save_tiny_pipeline("modelscope", root / "teacher")
    clips, images = root / "clips", root / "images"
    images.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(4):
        video, caption, _ = render_sample("lowq_video", g, num_frames=4)
        write_video(clips / f"{i:03d}.mp4", video)
        (clips / f"{i:03d}.txt").write_text(caption)
        image, caption, _ = render_sample("hq_image", g)
        write_image(images / f"{i:03d}.png", image)
        (images / f"{i:03d}.txt").write_text(caption)
    cfg = from_dict(
        TrainConfig,
        {
            "model": {"teacher": str(teacher)},
            "data": {
                "video": {"source": str(clips), "num_frames": 4, "resolution": 32},
                "images": {"source": str(images), "resolution": 32},
            },
        },
    )
    save_config(cfg, root / "config.yaml")
    return {"teacher": teacher, "cfg": cfg, "config": root / "config.yaml"}


def test_the_decoder_matches_the_vae_latents_and_upsampling():
    vae = VideoVAE(tiny_vae(), chunk_size=3)
    decoder = PreviewDecoder.for_vae(vae, width=8, blocks=1)
    latents = torch.randn(2, vae.latent_channels, 5, 4, 4)
    pixels = decoder.decode(latents)
    assert (
        pixels.shape
        == vae.decode(latents).shape
        == (2, 3, 5, 4 * vae.downsample, 4 * vae.downsample)
    )
    assert decoder.model.config.scaling_factor == vae.scaling_factor
    # frame by frame, whatever the chunking
    decoder.chunk_size = 10
    torch.testing.assert_close(decoder.decode(latents), pixels)


def test_bad_inputs_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="Wan's causal VAE"):
        PreviewDecoder.for_vae(WanVideoVAE(tiny_wan_vae()))
    decoder = PreviewDecoder.for_vae(VideoVAE(tiny_vae()), width=8, blocks=1)
    with pytest.raises(ValueError, match=r"latents must be \[B, 4, F, h, w\]"):
        decoder.decode(torch.randn(1, 3, 2, 4, 4))
    with pytest.raises(FileNotFoundError, match="mcm decoder"):
        PreviewDecoder.from_pretrained(tmp_path)


def test_distillation_fits_the_vae_decode_and_resumes(assets, tmp_path):
    cfg = PreviewDecoderConfig(
        steps=12,
        batch_size=8,
        lr=3e-3,
        warmup_steps=1,
        width=16,
        blocks=1,
        checkpoint_every=6,
        progress=False,
    )
    vae = load_teacher(str(assets["teacher"]), device="cpu").vae
    recipe = PreviewDecoderRecipe(assets["cfg"], cfg, tmp_path / "a")
    recipe.setup()
    batch = recipe.next_batch()
    d = 32 // vae.downsample
    assert batch.shape == (8, vae.latent_channels, 1, d, d)  # 4 clip frames + 4 images
    target = vae.decode(batch)

    def error(decoder):
        with torch.no_grad():
            return torch.nn.functional.mse_loss(decoder.decode(batch), target).item()

    before = error(recipe.decoder)
    recipe.train()
    recipe.cleanup()
    assert error(PreviewDecoder.from_pretrained(tmp_path / "a")) < 0.5 * before

    # 6 steps, stop, resume to 12: the weights continue from the checkpoint
    half = PreviewDecoderRecipe(
        assets["cfg"], PreviewDecoderConfig(**{**cfg.__dict__, "steps": 6}), tmp_path / "b"
    )
    half.run()
    resumed = PreviewDecoderRecipe(assets["cfg"], cfg, tmp_path / "b", resume=True)
    resumed.setup()
    assert resumed.step == 6
    resumed.train()
    resumed.cleanup()
    assert resumed.step == 12


def test_cli_writes_a_decoder_the_samplers_and_stock_diffusers_use(assets, tmp_path, capsys):
    out = tmp_path / "decoder"
    assert (
        main(
            [
                "decoder",
                "--config",
                str(assets["config"]),
                "--out",
                str(out),
                "--steps",
                "2",
                "--batch-size",
                "4",
                "--width",
                "8",
                "--blocks",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 2
    decoder = PreviewDecoder.from_pretrained(out)

    bundle = load_teacher(str(assets["teacher"]), device="cpu")
    latents = sample_student(bundle, ["a red circle"], steps=1, num_frames=2, output_type="latent")
    video = sample_student(bundle, ["a red circle"], steps=1, num_frames=2, decoder=decoder)
    torch.testing.assert_close(video, decoder.decode(latents).clamp(-1, 1))

    # a stock pipeline decodes with it as its VAE: the same frames
    pipe = TextToVideoSDPipeline.from_pretrained(assets["teacher"])
    pipe.vae = AutoencoderTiny.from_pretrained(out)
    frames = pipe.decode_latents(latents)  # [B, 3, F, H, W]
    torch.testing.assert_close(frames.float(), decoder.decode(latents), atol=1e-5, rtol=1e-5)


def test_cli_refuses_a_missing_config(tmp_path, capsys):
    assert main(["decoder", "--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path)]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_generate_decodes_with_the_preview_decoder_and_refuses_one_that_does_not_fit(
    assets, tmp_path, capsys
):
    vae = load_teacher(str(assets["teacher"]), device="cpu").vae
    PreviewDecoder.for_vae(vae, width=8, blocks=1).save_pretrained(tmp_path / "fits")
    out = tmp_path / "v.mp4"
    args = ["generate", "--teacher", str(assets["teacher"]), "--prompt", "a red circle"]
    args += ["--steps", "2", "--frames", "2", "--no-progress", "--out", str(out)]
    assert main(args + ["--preview-decoder", str(tmp_path / "fits")]) == 0
    assert out.stat().st_size > 0

    other = VideoVAE(tiny_vae(latent_channels=3))
    PreviewDecoder.for_vae(other, width=8, blocks=1).save_pretrained(tmp_path / "other")
    capsys.readouterr()
    assert main(args + ["--preview-decoder", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert "3-channel latents" in err and "mcm decoder --config" in err
