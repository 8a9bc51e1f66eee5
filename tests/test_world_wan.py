"""The flow-matching world teacher's components: a stock WanPipeline on the world's
tokenizer, 9-frame clips and latents [16, 3, 8, 8], loadable by stock diffusers and by
mcm's load_teacher."""

import json
from pathlib import Path

import torch
from diffusers import DiffusionPipeline, WanPipeline

from mcm.cli import main
from mcm.models import load_teacher, sample_teacher
from mcm.paths import WORLD_WAN_TEACHER, resolve_teacher
from mcm.training.checkpoint import load_weights as ckpt_weights
from mcm.world.teacher import teacher_metrics
from mcm.world.teacher_training import vae_loss
from mcm.world.wan_pipeline import (
    WorldWanConfig,
    call_costs,
    world_wan_components,
    world_wan_pipeline,
)
from mcm.world.wan_teacher_training import decode_unclamped, load_init_vae


def test_components_make_a_stock_wanpipeline_that_mcm_loads(tmp_path):
    config = WorldWanConfig()
    components = world_wan_components(config, seed=0)
    again = world_wan_components(config, seed=0)
    for a, b in zip(components["transformer"].parameters(), again["transformer"].parameters()):
        assert torch.equal(a, b)
    clip = torch.rand(2, 3, 9, 32, 32) * 2 - 1
    latents = components["vae"].encode(clip).latent_dist.mode()
    assert latents.shape == (2, *config.latent_shape) == (2, 16, 3, 8, 8)

    world_wan_pipeline(components).save_pretrained(tmp_path / "teacher")
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "teacher")
    assert isinstance(pipe, WanPipeline)
    bundle = load_teacher(str(tmp_path / "teacher"), device="cpu", max_sequence_length=16)
    assert bundle.family == "wan" and bundle.denoiser.schedule.shift == config.flow_shift
    # every world word is one token
    assert bundle.tokenizer("a red circle moving left").input_ids[1:6] == [
        bundle.tokenizer.convert_tokens_to_ids(w + "</w>")
        for w in ("a", "red", "circle", "moving", "left")
    ]
    video = sample_teacher(bundle, ["a red circle moving left"], steps=2, guidance_scale=2.0,
                           num_frames=9, height=32, width=32)  # fmt: skip
    assert video.shape == (1, 3, 9, 32, 32) and torch.isfinite(video).all()


def test_the_kept_vae_fits_the_default_sizes():
    """experiments/results/wan_world/vae, the VAE trained in CPU parts, is what
    --init-from continues: it must load into a VAE of WorldWanConfig's sizes."""
    kept = Path(__file__).parents[1] / "experiments" / "results" / "wan_world" / "vae"
    vae = world_wan_components(seed=0)["vae"]
    record = load_init_vae(vae, kept)
    assert (
        record["steps"] > 0 and record["reconstruction"]["reconstructions"]["colour_accuracy"] > 0.9
    )
    saved = ckpt_weights(kept / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(vae.state_dict()[k], v) for k, v in saved.items())


def test_vae_stage_trains_on_the_unclamped_decode():
    """decode_unclamped is decode() before its clamp, so pixels decoded past [-1, 1] still
    get a gradient from the VAE stage's loss."""
    vae = world_wan_components(seed=0)["vae"]
    z = torch.randn(2, *WorldWanConfig().latent_shape) * 3
    with torch.no_grad():
        clamped = vae.decode(z).sample
        unclamped = decode_unclamped(vae, z)
    assert unclamped.shape == clamped.shape == (2, 3, 9, 32, 32)
    assert torch.equal(unclamped.clamp(-1, 1), clamped) and unclamped.abs().max() > 1
    clips = torch.zeros(2, 3, 9, 32, 32)
    loss = vae_loss(vae, clips, 1e-6, torch.Generator().manual_seed(0), decode=decode_unclamped)
    loss.backward()
    assert all(p.grad is not None for p in vae.decoder.parameters())


def test_call_costs_are_measured_per_clip():
    costs = call_costs(world_wan_components(), repeats=1, batch=2)
    assert costs["transformer_call_s"] > 0 and costs["vae_decode_s"] > 0


def test_build_family_wan_starts_from_a_saved_vae_or_teacher(tmp_path, capsys):
    """--init-from: a build continues from a VAE or a teacher another machine saved; one of
    other sizes is refused with the fix."""
    seed7 = world_wan_components(seed=7)
    saved = seed7["vae"]
    saved.save_pretrained(tmp_path / "vae")
    out = tmp_path / "teacher"
    args = ["world", "build", "--family", "wan", "--out", str(out), "--vae-steps", "0",
            "--unet-steps", "1", "--batch-size", "4", "--pool-size", "8", "--no-progress"]  # fmt: skip
    assert main([*args, "--init-from", str(tmp_path / "vae")]) == 0
    built = DiffusionPipeline.from_pretrained(out).vae.state_dict()
    for name, weight in saved.state_dict().items():
        assert torch.equal(built[name], weight), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["init_vae"]["from"] == str(tmp_path / "vae")
    assert manifest["stages"]["vae"]["trained"] is False
    assert "init_transformer" not in manifest

    # from a whole teacher: its transformer and UMT5 go on training (one step here)
    world_wan_pipeline(seed7).save_pretrained(tmp_path / "seed7")
    assert (
        main([*args, "--out", str(tmp_path / "again"), "--init-from", str(tmp_path / "seed7")]) == 0
    )
    after, fresh = DiffusionPipeline.from_pretrained(tmp_path / "again"), world_wan_components()
    for name in ("transformer", "text_encoder"):
        trained, start = getattr(after, name).state_dict(), seed7[name].state_dict()
        for k, v in trained.items():
            torch.testing.assert_close(v.float(), start[k], atol=5e-3, rtol=0, msg=k)
        assert any(
            (v.float() - fresh[name].state_dict()[k]).abs().max() > 0.05 for k, v in trained.items()
        )
    manifest = json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert manifest["init_transformer"]["from"] == str(tmp_path / "seed7")

    other = world_wan_components(WorldWanConfig(vae_base_dim=8))["vae"]
    other.save_pretrained(tmp_path / "narrow")
    assert (
        main([*args, "--out", str(tmp_path / "t2"), "--init-from", str(tmp_path / "narrow")]) == 2
    )
    assert "base_dim" in capsys.readouterr().err


def test_mcm_world_build_family_wan_trains_resumes_and_saves_a_stock_pipeline(tmp_path):
    out = tmp_path / "teacher"
    args = ["world", "build", "--family", "wan", "--out", str(out), "--vae-batch-size", "36",
            "--batch-size", "8", "--pool-size", "16", "--checkpoint-every", "1", "--no-progress"]  # fmt: skip
    assert main([*args, "--vae-steps", "1", "--unet-steps", "1"]) == 0
    assert main([*args, "--vae-steps", "1", "--unet-steps", "2", "--resume"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["vae"]["trained"] is False  # the finished VAE stage is kept
    assert manifest["stages"]["transformer"]["steps"] == 2
    assert manifest["stages"]["transformer"]["steps_run"] == 1
    assert manifest["stages"]["pool"]["reused"] is True  # encoded once, by the first part
    assert (tmp_path / "teacher.checkpoints" / "pool.safetensors").is_file()
    assert manifest["asset_bytes"] <= 25e6
    pipe = DiffusionPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe, WanPipeline)
    assert len(pipe.vae.config.latents_mean) == 16  # the pool's statistics
    call = dict(num_inference_steps=2, guidance_scale=2.5, num_frames=9, height=32, width=32,
                max_sequence_length=16, output_type="latent")  # fmt: skip
    runs = [pipe("a red circle moving left", generator=torch.Generator().manual_seed(0), **call)
            for _ in range(2)]  # fmt: skip
    assert torch.equal(runs[0].frames, runs[1].frames)
    # the world metrics of its samples (frames 0-7 of 9, the probes' 8)
    metrics = teacher_metrics(out, num_videos=2, steps=(2,))
    assert metrics["scored_frames"] == "0-7 of 9"
    assert {"prompt_accuracy", "motion_accuracy", "watermark_score"} <= set(metrics["euler_2"])


def test_shipped_flow_teacher_loads_with_stock_diffusers_and_samples():
    """The shipped flow world teacher samples in stock diffusers with N transformer calls
    at N steps (two per step with guidance: cond and uncond)."""
    assert resolve_teacher("world-wan") == str(WORLD_WAN_TEACHER)
    pipe = DiffusionPipeline.from_pretrained(WORLD_WAN_TEACHER)
    assert isinstance(pipe, WanPipeline)
    pipe.set_progress_bar_config(disable=True)
    calls = []
    pipe.transformer.register_forward_hook(lambda *_: calls.append(1))
    out = pipe(
        "a green triangle moving right",
        num_inference_steps=3,
        guidance_scale=2.5,
        num_frames=9,
        height=32,
        width=32,
        max_sequence_length=16,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).frames
    assert out.shape == (1, 9, 3, 32, 32) and torch.isfinite(out).all()
    assert len(calls) == 6
    manifest = json.loads((WORLD_WAN_TEACHER / "manifest.json").read_text())
    quality = manifest["metrics"]["euler_50"]
    assert quality["prompt_accuracy"] >= 0.9 and quality["motion_accuracy"] >= 0.95
    assert quality["watermark_score"] >= 0.8
    size = sum(f.stat().st_size for f in WORLD_WAN_TEACHER.rglob("*") if f.is_file())
    assert size <= 25e6
