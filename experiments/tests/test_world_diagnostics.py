"""The world diagnostics in experiments/: whether the discriminator's heads alone learn the
low-quality look, whether a teacher uses the direction word, and the frame picture. Scripts
run as ``python experiments/NAME.py`` (``run_script``); their helpers are read with runpy
(``load_script``)."""

import json
import math

import pytest
import torch


@pytest.mark.slow
def test_latent_discriminator_learns_the_low_quality_look(tmp_path, run_script):
    out = tmp_path / "sep.json"
    run_script(
        "discriminator_separation", "--out", out, "--lr", "2e-3", "--t-max", "50", "--steps", "50"
    )
    (run,) = json.loads(out.read_text())["runs"]
    last = run["curve"][-1]
    assert last["step"] == 50
    # Heads alone, 50 steps: clean frames score clearly above low-quality ones.
    assert last["clean"] - last["low-quality"] > 0.5, last


def test_ascent_scores_the_watermark_after_following_the_heads(load_script):
    from mcm.models import load_teacher

    script = load_script("discriminator_separation")
    bundle = load_teacher("world", device="cpu")
    curve, D = script["separation"](bundle, 2e-3, 100, steps=1)
    g = torch.Generator().manual_seed(0)
    rows = script["ascent"](D, bundle.vae, bundle.text_encoder.embedding_dim, g, (0.01,), 2)
    assert [r["round_trip"] for r in rows] == [False, True] and curve[-1]["step"] == 1
    for r in rows:
        assert 0 < r["relative_change"] < 1 and math.isfinite(r["logit"])
        assert r["watermark_before"] > 0.5 and math.isfinite(r["watermark"])


def test_opposite_direction(load_script):
    opposite_direction = load_script("teacher_direction")["opposite_direction"]
    assert opposite_direction("a red circle moving left") == "a red circle moving right"
    assert opposite_direction("a blue star moving down").endswith("up")


def test_teacher_direction_report(tmp_path, run_script):
    out = tmp_path / "dir.json"
    run_script("teacher_direction", "--clips", "4", "--mean-clips", "480", "--out", out)
    result = json.loads(out.read_text())
    assert set(result["x0_error_by_t"]) == {"300", "600", "850", "980", "999"}
    for row in result["x0_error_by_t"].values():
        assert row["x0_mse"] > 0 and math.isfinite(row["gap"])
    text = result["text_distance"]
    assert set(text) == {"direction", "colour", "shape", "embedding_norm"}
    assert all(v >= 0 for v in text.values()) and text["colour"] > 0
    means = result["highest_noise"]
    # Knowing colour and shape beats knowing nothing, even with 2 clips per prompt.
    assert 0 < means["x0_mse_colour_shape_mean"] < means["x0_mse_none_mean"]
    assert means["clips_per_prompt_mean"] == 2 and means["x0_mse_teacher_t980"] > 0


def test_world_frames_grid_and_paths(tmp_path, load_script):
    import torch

    world_frames = load_script("world_frames")
    rows = [torch.zeros(3, 3, 8, 4, 4), torch.ones(3, 3, 8, 4, 4)]
    rows[0][:, :, -1] = 0.5  # last frames
    img = world_frames["frame_grid"](rows)
    assert img.shape == (3, 2 * 4, 3 * 2 * 4)
    assert img[:, :4, 4:8].eq(0.5).all() and img[:, 4:].eq(1).all()
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        world_frames["merged_dir"](str(tmp_path))
    (tmp_path / "export" / "merged").mkdir(parents=True)
    (tmp_path / "export" / "merged" / "model_index.json").write_text("{}")
    assert world_frames["merged_dir"](str(tmp_path)).endswith("export/merged")


def test_loss_weight_over_noise_levels(load_script):
    import torch

    loss_weight = load_script("direction_finetune")["loss_weight"]
    alpha_bar = torch.tensor([0.9, 0.5, 0.01])
    assert loss_weight("eps", alpha_bar).eq(1).all()
    w = loss_weight("x0-clipped", alpha_bar)
    assert w.mean().item() == pytest.approx(1) and w[2] / w[0] == pytest.approx(20 * 0.9)
    w = loss_weight("x0", alpha_bar)  # (1 - a) / a: high noise up
    assert w[0] < w[1] < w[2]
    with pytest.raises(ValueError, match="weighting"):
        loss_weight("v", alpha_bar)


def test_motion_layout_keeps_the_teacher_spatial_weights(load_script):
    import torch
    from diffusers import UNet3DConditionModel

    from mcm.paths import resolve_teacher

    motion_layout_unet = load_script("direction_finetune")["motion_layout_unet"]

    unet3d = UNet3DConditionModel.from_pretrained(str(resolve_teacher("world")), subfolder="unet")
    unet, copied = motion_layout_unet(unet3d)
    assert type(unet).__name__ == "UNetMotionModel"
    assert "conv_in.weight" in copied and "down_blocks.0.motion_modules.0.proj_in.weight" in copied
    src = unet3d.state_dict()["down_blocks.0.attentions.0.proj_in.weight"]
    dst = unet.state_dict()["down_blocks.0.attentions.0.proj_in.weight"]
    assert dst.shape == (*src.shape, 1, 1) and torch.equal(dst[..., 0, 0], src)
    # A motion module with no UNet3D counterpart starts as the identity.
    assert unet.down_blocks[1].motion_modules[0].proj_out.weight.eq(0).all()


@pytest.mark.parametrize(
    "layout, prediction", [("modelscope", "v_prediction"), ("animatediff", "epsilon")]
)
def test_direction_finetune_runs_and_reports(tmp_path, layout, prediction, run_script):
    args = ["--name", "t", "--layout", layout, "--prediction", prediction, "--steps", "2"]
    args += ["--pool", "8", "--eval-clips", "4"]
    args += ["--weighting", "x0-clipped", "--separation", "5", "--out", str(tmp_path)]
    if prediction == "v_prediction":
        args += ["--zero-snr", "--top-fraction", "0.5"]
    run_script("direction_finetune", *args, "--save", tmp_path / "saved")
    result = json.loads((tmp_path / "t.json").read_text())
    assert [row["step"] for row in result["curve"]] == [0, 2]
    for row in result["curve"]:
        for t in ("600", "850", "980", "999"):
            assert row[t]["x0_mse"] > 0 and math.isfinite(row[t]["gap"])
    assert result["layout"] == layout and result["separation"] == 5
    if layout == "modelscope":  # a stock pipeline whose scheduler knows the parametrisation
        config = json.loads(
            (tmp_path / "saved" / "scheduler" / "scheduler_config.json").read_text()
        )
        assert config["prediction_type"] == prediction
        assert config["rescale_betas_zero_snr"] and config["timestep_spacing"] == "trailing"
    else:
        assert (tmp_path / "saved" / "unet" / "config.json").is_file()


def test_wan_latent_frames_first_frame_is_the_image_encoding(tmp_path, run_script):
    out = tmp_path / "frames.json"
    run_script("wan_latent_frames", "--clips", "32", "--out", out)
    result = json.loads(out.read_text())
    assert result["latent_frames"] == 3
    assert result["frame0_vs_image_max_abs_diff"] == 0.0
    probe = result["probe_accuracy_image_vs_latent_frame"]
    assert probe["0"] == 0.5 and probe["1"] > 0.9, probe


def test_linear_probe_tells_shifted_from_unshifted(load_script):
    import torch

    probe = load_script("wan_latent_frames")["linear_probe_accuracy"]
    a = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    assert probe(a, a + 3.0) == 1.0
    assert probe(a, a.clone()) == 0.5


def test_wan_vae_reconstruction_report(tmp_path, run_script):
    from safetensors.torch import save_file

    from mcm.world.wan_pipeline import WorldWanConfig, world_wan_vae

    weights, out, picture = tmp_path / "vae.safetensors", tmp_path / "r.json", tmp_path / "r.png"
    save_file(world_wan_vae(WorldWanConfig()).state_dict(), str(weights))
    run_script(
        "wan_vae_reconstruction",
        "--vae",
        weights,
        "--clips",
        "4",
        "--out",
        out,
        "--picture",
        picture,
    )
    report = json.loads(out.read_text())
    assert len(report["psnr_db_per_frame"]) == 9 and math.isfinite(report["psnr_db"])
    # the clips score themselves perfectly on prompt; an untrained VAE's reconstructions do not
    assert report["clips_themselves"]["prompt_accuracy"] == 1.0
    assert report["reconstructions"]["prompt_accuracy"] < 1.0
    assert picture.stat().st_size > 0
