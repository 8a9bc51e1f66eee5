"""The world teacher: its models, its build command, and the shipped pipeline."""

import json

import pytest
import torch
from diffusers import DDIMScheduler, DiffusionPipeline, TextToVideoSDPipeline

from mcm.paths import WORLD_TEACHER, resolve_teacher
from mcm.world.pipeline import (
    WORLD_WORDS,
    WorldTeacherConfig,
    world_teacher_components,
    world_tokenizer,
)
from mcm.world.teacher import BuildConfig, build_world_teacher, read_manifest
from mcm.world.train_data import world_prompts

# Small enough for CI; the sizes are the shipped ones, only the batches and steps shrink.
TINY_BUILD = {"vae_batch_size": 16, "pool_size": 8, "checkpoint_every": 100, "progress": False}


@pytest.fixture
def one_thread():
    # Two OpenMP threads on a busy 2-core machine are many times slower than one, and one
    # thread makes CPU float reductions (conv backward) reproducible bit for bit.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_tokenizer_makes_each_world_word_one_token(tmp_path):
    tok = world_tokenizer(16)
    for word in WORLD_WORDS:
        assert len(tok(word, add_special_tokens=False).input_ids) == 1, word
    ids = tok("a red circle moving left").input_ids
    assert tok.convert_ids_to_tokens(ids) == [
        "<|startoftext|>", "a</w>", "red</w>", "circle</w>", "moving</w>", "left</w>", "<|endoftext|>"
    ]  # fmt: skip
    # Text outside the world still tokenizes (byte-level fallback) and the tokenizer round-trips.
    assert len(tok("zebra").input_ids) > 3
    tok.save_pretrained(tmp_path)
    again = type(tok).from_pretrained(tmp_path)
    assert again("a cyan cross").input_ids == tok("a cyan cross").input_ids
    assert again.model_max_length == 16


def test_components_shapes_and_seeded_init():
    cfg = WorldTeacherConfig()
    c = world_teacher_components(cfg, seed=3)
    frames = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        z = c["vae"].encode(frames).latent_dist.mean
        assert z.shape == (2, 4, 8, 8)
        assert c["vae"].decode(z).sample.shape == (2, 3, 32, 32)
        tokens = c["tokenizer"](
            ["a red circle moving left"], padding="max_length", return_tensors="pt"
        )
        context = c["text_encoder"](tokens.input_ids).last_hidden_state
        assert context.shape == (1, 16, cfg.text_hidden)
        eps = c["unet"](
            torch.randn(1, 4, 8, 8, 8), torch.tensor([500]), encoder_hidden_states=context
        ).sample
        assert eps.shape == (1, 4, 8, 8, 8)
    again = world_teacher_components(cfg, seed=3)
    for name in ("vae", "text_encoder", "unet"):
        for a, b in zip(c[name].parameters(), again[name].parameters()):
            assert torch.equal(a, b)
    sched = c["scheduler"].config
    assert (sched.beta_schedule, sched.beta_start, sched.beta_end) == (
        "scaled_linear",
        0.00085,
        0.012,
    )
    assert (
        sched.prediction_type == "epsilon" and not sched.clip_sample and not sched.set_alpha_to_one
    )
    params = sum(p.numel() for n in ("vae", "text_encoder", "unet") for p in c[n].parameters())
    assert params * 4 < 15e6  # fp32 weights within the size budget


def test_build_config_rejects_bad_values():
    with pytest.raises(ValueError, match="batch_size"):
        BuildConfig(batch_size=0)
    with pytest.raises(ValueError, match="precision"):
        BuildConfig(precision="fp8")
    with pytest.raises(ValueError, match="prompt_dropout"):
        BuildConfig(prompt_dropout=1.0)


def _weights(path):
    pipe = TextToVideoSDPipeline.from_pretrained(path)
    return {
        f"{n}.{k}": v
        for n in ("vae", "unet", "text_encoder")
        for k, v in getattr(pipe, n).state_dict().items()
    }


@pytest.mark.slow
def test_build_saves_a_stock_pipeline_and_resumes_exactly(tmp_path, one_thread):
    # An uninterrupted build ...
    full = build_world_teacher(
        tmp_path / "full", vae_steps=2, unet_steps=3, batch_size=2, seed=5, **TINY_BUILD
    )
    # ... equals one that stops after 2 UNet steps and is resumed to 3.
    part = tmp_path / "part"
    build_world_teacher(part, vae_steps=2, unet_steps=2, batch_size=2, seed=5, **TINY_BUILD)
    assert (tmp_path / "part.checkpoints" / "unet" / "checkpoint-2" / "state.pt").is_file()
    build_world_teacher(
        part, vae_steps=2, unet_steps=3, batch_size=2, seed=5, resume=True, **TINY_BUILD
    )
    a, b = _weights(full), _weights(part)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)

    manifest = read_manifest(full)
    for key in (
        "command",
        "seed",
        "revision",
        "device",
        "stages",
        "latent_scaling_factor",
        "metrics",
    ):
        assert key in manifest
    assert manifest["seed"] == 5
    assert manifest["stages"]["unet"]["steps"] == 3 and manifest["stages"]["vae"]["steps"] == 2
    assert manifest["stages"]["unet"]["steps_per_s"] > 0
    assert json.loads((full / "vae" / "config.json").read_text())[
        "scaling_factor"
    ] == pytest.approx(manifest["latent_scaling_factor"])

    # Stock diffusers loads it and samples 8 frames of 32x32.
    pipe = DiffusionPipeline.from_pretrained(full)
    assert isinstance(pipe, TextToVideoSDPipeline)
    pipe.set_progress_bar_config(disable=True)
    prompts = ["a red circle moving left", "a blue square moving up"]
    videos = pipe(
        prompts, num_inference_steps=2, guidance_scale=3.0, num_frames=8, output_type="pt"
    )
    videos = videos.frames
    assert videos.shape == (2, 8, 3, 32, 32) and videos.min() >= 0 and videos.max() <= 1


def test_build_continues_from_a_saved_teacher(tmp_path, one_thread):
    # --init-from: the VAE and its latent scale are kept, the UNet + text encoder train on
    # (2 steps: the warm-up's first learning rate is 0).
    out = build_world_teacher(
        tmp_path / "more", unet_steps=2, batch_size=2, init_from=WORLD_TEACHER, **TINY_BUILD
    )
    before, after = _weights(WORLD_TEACHER), _weights(out)
    vae = [k for k in before if k.startswith("vae.")]
    unet = [k for k in before if k.startswith("unet.")]
    assert vae and unet
    for k in vae:
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0, msg=k)
    assert any(not torch.equal(after[k], before[k]) for k in unet)
    manifest, shipped = read_manifest(out), read_manifest(WORLD_TEACHER)
    assert manifest["latent_scaling_factor"] == shipped["latent_scaling_factor"]
    assert manifest["history"][-1]["stages"] == shipped["stages"]
    assert manifest["model_config"] == shipped["model_config"]
    assert "skipped" in manifest["stages"]["vae"]


def test_shipped_teacher_loads_with_stock_diffusers_and_samples():
    assert resolve_teacher("world") == str(WORLD_TEACHER)
    pipe = DiffusionPipeline.from_pretrained(resolve_teacher("world"))
    assert isinstance(pipe, TextToVideoSDPipeline)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        "a green triangle moving right",
        num_inference_steps=2,
        guidance_scale=7.5,
        num_frames=8,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).frames
    assert out.shape == (1, 8, 3, 32, 32)
    assert torch.isfinite(out).all()
    manifest = read_manifest(WORLD_TEACHER)
    assert manifest["sampling"]["num_frames"] == 8
    size = sum(f.stat().st_size for f in WORLD_TEACHER.rglob("*") if f.is_file())
    assert size < 15e6


def test_every_world_prompt_is_short_enough():
    tok = world_tokenizer(16)
    lengths = {len(tok(p).input_ids) for p in world_prompts()}
    assert max(lengths) <= 16 and len(world_prompts()) == 120


@pytest.mark.slow
def test_cli_build_writes_pipeline_and_manifest(tmp_path, one_thread):
    from mcm.cli import main

    out = tmp_path / "teacher"
    args = ["world", "build", "--out", str(out), "--vae-steps", "1", "--unet-steps", "1"]
    args += ["--batch-size", "1", "--vae-batch-size", "8", "--pool-size", "2", "--no-progress"]
    assert main([*args, "--note", "ci"]) == 0
    manifest = read_manifest(out)
    assert manifest["note"] == "ci" and manifest["build_config"]["pool_size"] == 2
    assert manifest["asset_bytes"] > 0
    assert (out / "model_index.json").is_file() and (out / "unet" / "config.json").is_file()
    assert not (out / "vae").joinpath("checkpoint-1").exists()  # checkpoints live beside it
    assert (tmp_path / "teacher.checkpoints" / "vae" / "checkpoint-1" / "vae.safetensors").is_file()


def test_build_schedule_options(tmp_path, one_thread):
    # The defaults are the recipe that made the teacher use the direction word (docs/WORLD.md):
    # the saved scheduler tells stock diffusers the UNet predicts v on a zero-SNR schedule
    # sampled from its last step. The build sets the schedule whatever the teacher it starts
    # from had.
    out = build_world_teacher(
        tmp_path / "v", unet_steps=1, batch_size=2, init_from=WORLD_TEACHER, **TINY_BUILD
    )
    config = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert config["prediction_type"] == "v_prediction"
    assert config["rescale_betas_zero_snr"] and config["timestep_spacing"] == "trailing"
    scheduler = DDIMScheduler.from_pretrained(out / "scheduler")
    assert scheduler.alphas_cumprod[-1] == 0
    scheduler.set_timesteps(50)
    assert scheduler.timesteps[0] == 999
    built = read_manifest(out)["build_config"]
    assert built["direction_margin"] == 5.0 and built["top_noise_fraction"] == 0.5
    eps = build_world_teacher(
        tmp_path / "eps",
        unet_steps=1,
        batch_size=2,
        init_from=out,
        prediction_type="epsilon",
        zero_snr=False,
        top_noise_fraction=0.0,
        direction_margin=0.0,
        **TINY_BUILD,
    )
    config = json.loads((eps / "scheduler" / "scheduler_config.json").read_text())
    assert config["prediction_type"] == "epsilon" and not config["rescale_betas_zero_snr"]
    assert config["timestep_spacing"] == "leading"
    with pytest.raises(ValueError, match="prediction_type"):
        BuildConfig(prediction_type="sample")
    with pytest.raises(ValueError, match="--prediction-type v_prediction"):
        BuildConfig(prediction_type="epsilon")
    with pytest.raises(ValueError, match="top_noise_fraction"):
        BuildConfig(top_noise_fraction=1.5)
