"""The Wan family on tiny stock WanPipelines built here: the flow-matching grids against
diffusers' schedulers, the consistency boundary, the baked-CFG target, the exports in stock
diffusers, motion on causal latents, the discriminator's frames, and `mcm train` + resume
with configs/wan2.1-t2v-1.3b.yaml on 9-frame world clips."""

import json
from pathlib import Path

import pytest
import torch
from diffusers import (
    DiffusionPipeline,
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
    WanPipeline,
)

from mcm.cli import main
from mcm.diffusion import (
    FlowMatchingSchedule,
    consistency_function,
    flow_grid,
    flow_sigmas,
    sample_flow,
    schedule_from_config,
)
from mcm.models import attach_lora, disable_adapters, export_student, load_teacher, sample_student
from mcm.models.export import flow_student_scheduler
from mcm.models.tiny import save_tiny_pipeline
from mcm.motion import build_motion_representation
from mcm.training.config import load_train_config
from mcm.training.distiller import DistillBatch, MCMConfig, MCMDistiller
from mcm.training.recipe import run_training
from mcm.world.data import resolve_world_sources
from test_evaluation_clip import save_tiny_dinov2

ROOT = Path(__file__).resolve().parents[1]
# scheduler/scheduler_config.json of the released Wan-AI/Wan2.1-T2V-1.3B-Diffusers folder
WAN21_SCHEDULER = {
    "_class_name": "UniPCMultistepScheduler",
    "_diffusers_version": "0.33.0.dev0",
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "disable_corrector": [],
    "dynamic_thresholding_ratio": 0.995,
    "final_sigmas_type": "zero",
    "flow_shift": 3.0,
    "lower_order_final": True,
    "num_train_timesteps": 1000,
    "predict_x0": True,
    "prediction_type": "flow_prediction",
    "rescale_betas_zero_snr": False,
    "sample_max_value": 1.0,
    "solver_order": 2,
    "solver_p": None,
    "solver_type": "bh2",
    "steps_offset": 0,
    "thresholding": False,
    "timestep_spacing": "linspace",
    "trained_betas": None,
    "use_beta_sigmas": False,
    "use_exponential_sigmas": False,
    "use_flow_sigmas": True,
    "use_karras_sigmas": False,
}
PROMPTS = ["a red circle moving left", "a blue square moving up"]
SIZE = {"num_frames": 9, "height": 32, "width": 32}


def _world_run(wan_dir, tmp_path, **sets) -> list[str]:
    """--set overrides that train configs/wan2.1-t2v-1.3b.yaml's recipe on the tiny teacher
    with 8 world clips of 9 frames at 32x32 (and 8 images), in seconds."""
    base = {
        "model.teacher": wan_dir, "model.max_sequence_length": 16, "model.lora_rank": 4,
        "model.lora_alpha": 4, "data.video.num_frames": 9, "data.video.resolution": 32,
        "data.images.resolution": 32, "data.video.source": "world:lowq_video:8",
        "data.images.source": "world:hq_image:8", "data.video.fps": "null",
        "data.video.frame_stride": 1, "data.video.num_workers": 0, "data.images.num_workers": 0,
        "train.batch_size": 2, "train.mixed_precision": "no", "train.validate_every": 0,
        "train.checkpoint_every": 1, "discriminator.warmup_steps": 1,
        "output_dir": tmp_path / "run",
    }  # fmt: skip
    return [f"{k}={v}" for k, v in {**base, **sets}.items()]


def _train_config(overrides: list[str]):
    cfg = load_train_config(str(ROOT / "configs" / "wan2.1-t2v-1.3b.yaml"), overrides)
    resolve_world_sources(cfg)  # as `mcm train` does
    return cfg


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    return save_tiny_pipeline("wan", tmp_path_factory.mktemp("wan") / "teacher")


@pytest.fixture
def student(wan_dir):
    """The tiny teacher with a rank-4, alpha-8 LoRA whose B matrices are non-zero."""
    bundle = load_teacher(str(wan_dir), device="cpu", max_sequence_length=16)
    attach_lora(bundle.denoiser, rank=4, alpha=8)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in bundle.denoiser.named_parameters():
            if "lora_B" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return bundle


def test_the_released_wan_scheduler_config_is_read_as_flow_matching():
    schedule = schedule_from_config(WAN21_SCHEDULER)
    assert isinstance(schedule, FlowMatchingSchedule)
    assert schedule.shift == 3.0 and schedule.num_train_timesteps == 1000
    assert isinstance(schedule_from_config(UniPCMultistepScheduler(**{
        k: v for k, v in WAN21_SCHEDULER.items() if not k.startswith("_")
    })), FlowMatchingSchedule)  # fmt: skip


@pytest.mark.parametrize("shift", [3.0, 5.0])
def test_training_grid_holds_the_exported_schedulers_grids_exactly(shift):
    """At 1/2/4/8 steps the exported scheduler's sigmas and the timesteps the network sees
    are points of the 40-step grid the student is trained on, bit for bit."""
    grid, prev = flow_grid(40, shift)
    points = torch.cat([prev[:1], grid])  # 0 (the clean end) and the 40 grid points
    exported = flow_student_scheduler(
        WAN21_SCHEDULER, {"flow_shift": shift, "original_inference_steps": 40}
    )
    for n in (1, 2, 4, 8):
        t = flow_sigmas(n, shift)
        assert all(bool((points == v).any()) for v in t), n
        exported.set_timesteps(n)
        assert torch.equal(exported.sigmas, (t / 1000).float()), n
        assert torch.equal(exported.timesteps, t[:-1].long()), n
    # shift 5: the grids of the popular 4-step Wan LoRAs, no step wasted near sigma 0
    if shift == 5.0:
        assert flow_sigmas(2, shift).div(1000).float().tolist() == pytest.approx(
            [1, 0.8336, 0], abs=1e-4
        )
        assert flow_sigmas(4, shift).div(1000).float().tolist() == pytest.approx(
            [1, 0.9376, 0.8336, 0.6259, 0], abs=1e-4
        )


def test_consistency_boundary_is_exact_at_sigma_zero(student):
    x = torch.randn(2, 4, 3, 4, 4)
    emb = student.text_encoder(PROMPTS)
    t = torch.zeros(2, dtype=torch.float64)
    x0, _ = student.denoiser.predict_x0_eps(x, t, emb)
    assert torch.equal(consistency_function(x, x0, t, student.denoiser.schedule), x)


def test_teacher_target_is_the_euler_step_with_baked_cfg(student):
    """The target's teacher step: x + (sigma' - sigma)(v_u + (1 + w)(v_c - v_u)), from two
    plain transformer calls (the teacher is the student with its LoRA disabled)."""
    den = student.denoiser
    distiller = MCMDistiller(MCMConfig(num_ode_steps=40), den, motion=torch.nn.Identity(),
                             disable_adapters=disable_adapters)  # fmt: skip
    x = torch.randn(2, 4, 3, 4, 4)
    t, t_prev = distiller.grid[[30, 5]], distiller.grid_prev[[30, 5]]
    cond, uncond = student.text_encoder(PROMPTS), student.text_encoder.empty(2)
    w = torch.tensor([3.0, 5.0])
    batch = DistillBatch(latents=x, text_emb=cond, uncond_emb=uncond)
    target = distiller.teacher_ddim_step(x, t, t_prev, batch, w)
    with torch.no_grad(), disable_adapters(den):
        net = den.unet
        v_c = net(x, timestep=t.long(), encoder_hidden_states=cond, return_dict=False)[0]
        v_u = net(x, timestep=t.long(), encoder_hidden_states=uncond, return_dict=False)[0]
    v = v_u + (1 + w.view(-1, 1, 1, 1, 1)) * (v_c - v_u)
    step = ((t_prev - t) / 1000).float().view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(target, x + step * v, atol=1e-5, rtol=1e-5)


def test_sample_flow_equals_stock_unipc_order_one(wan_dir):
    """The student's sampler is the Euler step; so is UniPC with order 1, no corrector."""
    pipe = WanPipeline.from_pretrained(wan_dir)
    sched = flow_student_scheduler(
        dict(pipe.scheduler.config), {"flow_shift": 3.0, "original_inference_steps": 40}
    )
    x = torch.randn(1, 4, 3, 4, 4)
    v = torch.randn(1, 4, 3, 4, 4)  # a fixed "network": v(x, t) = v + x * t / 1000
    schedule = FlowMatchingSchedule(1000, 3.0)
    sched.set_timesteps(4)
    y = x.clone()
    for t in sched.timesteps:
        y = sched.step(v + y * float(t) / 1000, t, y).prev_sample

    def x0_eps(z, t):
        out = v + z * t.long().float().view(-1, 1, 1, 1, 1) / 1000
        s = (t / 1000).float().view(-1, 1, 1, 1, 1)
        return z - s * out, z + (1 - s) * out

    torch.testing.assert_close(
        sample_flow(x0_eps, x, schedule, flow_sigmas(4, 3.0)), y, atol=2e-6, rtol=0
    )


@pytest.fixture
def export(student, tmp_path):
    sampling = {"original_inference_steps": 40, "max_sequence_length": 16, **SIZE}
    return export_student(student, tmp_path / "export", sampling=sampling)


def test_lora_loads_in_stock_wanpipeline_at_its_scale(student, wan_dir, export):
    pipe = WanPipeline.from_pretrained(wan_dir)
    pipe.load_lora_weights(export / "lora")
    x, t = torch.randn(2, 4, 3, 4, 4), torch.tensor([700, 300])
    emb = student.text_encoder(PROMPTS)
    with torch.no_grad():
        stock = pipe.transformer(x, timestep=t, encoder_hidden_states=emb, return_dict=False)[0]
        ours = student.denoiser(x, t, emb)
    torch.testing.assert_close(stock, ours, atol=1e-5, rtol=1e-5)
    card = json.loads((export / "mcm_student.json").read_text())
    assert card["lora"]["alpha"] == 8.0 and not card["lora"]["alpha_folded_into_lora_B"]
    assert card["sampling"]["guidance_scale"] == 1.0
    assert {k: card["sampling"][k] for k in SIZE} == SIZE
    assert "max_sequence_length=16" in card["usage"]["merged"]


def test_merged_export_in_stock_diffusers_equals_mcm_generate(student, export):
    pipe = DiffusionPipeline.from_pretrained(export / "merged")
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe).__name__ == "WanPipeline"
    for n in (1, 2, 4, 8):
        ours = sample_student(student, PROMPTS[:1], n, seed=7, original_inference_steps=40,
                              output_type="latent", **SIZE)  # fmt: skip
        outs = [pipe(PROMPTS[0], num_inference_steps=n, guidance_scale=1.0,
                     generator=torch.Generator().manual_seed(7), output_type="latent",
                     max_sequence_length=16, **SIZE).frames for _ in range(2)]  # fmt: skip
        assert torch.equal(outs[0], outs[1]), "stock sampling must be deterministic given the seed"
        assert (ours - outs[0]).abs().max() <= 1e-5, n


def test_motion_representations_on_causal_wan_latents(student):
    """A 9-frame clip is 3 latent frames: frame 0 encodes video frame 0 alone, frames 1-2
    four frames each. Frame-pair representations see 2 pairs, the first mixing the two
    kinds of latent frame; the others keep the latent's shape."""
    video = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    z = student.vae.encode(video)
    assert z.shape == (1, 4, 3, 4, 4)
    # the first latent frame is the encoding of the first frame on its own (an image)
    torch.testing.assert_close(
        z[:, :, :1], student.vae.encode(video[:, :, :1]), atol=1e-5, rtol=1e-4
    )
    frames_out = {"raw": 3, "diff": 2, "lowfreq": 3, "highfreq": 3, "learnable": 3}
    for name, frames in frames_out.items():
        m = build_motion_representation(name, 4)(z)
        assert m.shape[2] == frames and torch.isfinite(m).all(), name
    with pytest.raises(ValueError, match="4k \\+ 1"):
        student.vae.encode(video[:, :, :8])


def test_discriminator_sees_only_the_first_latent_frame(student):
    den = student.denoiser
    distiller = MCMDistiller(MCMConfig(num_ode_steps=40), den, motion=torch.nn.Identity(),
                             disable_adapters=disable_adapters)  # fmt: skip
    assert distiller.first_frame_only
    draws = distiller.sample_draws(torch.zeros(2, 4, 3, 4, 4), torch.Generator().manual_seed(0))
    assert draws.frame_index.tolist() == [0]
    # the DiT backbone: the first blocks' token maps, on one-frame latents like an image's
    feats = den.encoder_features(torch.randn(2, 4, 1, 4, 4), torch.tensor([50, 90]),
                                 student.text_encoder.empty(2))  # fmt: skip
    assert [f.shape for f in feats] == [torch.Size([2, 24, 1, 2, 2])] * den.num_feature_blocks


def test_round_trip_of_a_latent_frame_is_the_encoding_of_its_decoded_image(student):
    z = torch.randn(2, 4, 4, 4, requires_grad=True)
    vae = student.vae
    out = vae.round_trip(z)
    torch.testing.assert_close(out, vae.encode(vae.decode(z[:, :, None]))[:, :, 0])
    out.square().sum().backward()
    assert z.grad.abs().sum() > 0


def test_wan_config_rejects_clips_that_are_not_4k_plus_1(wan_dir, tmp_path, capsys):
    args = ["train", "--config", str(ROOT / "configs" / "wan2.1-t2v-1.3b.yaml"),
            "--set", f"model.teacher={wan_dir}", "--set", "data.video.num_frames=8",
            "--output-dir", str(tmp_path / "run")]  # fmt: skip
    assert main(args) == 2
    assert "data.video.num_frames" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_mcm_train_and_resume_on_a_tiny_wan_teacher(wan_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MCM_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    args = ["train", "--config", str(ROOT / "configs" / "wan2.1-t2v-1.3b.yaml")]
    for item in _world_run(wan_dir, tmp_path):
        args += ["--set", item]
    assert main([*args, "--set", "train.max_steps=1"]) == 0
    assert (run / "checkpoint-1").is_dir()
    resumed = [*args, "--set", "train.max_steps=2", "--resume", "latest"]
    assert main([*resumed, "--set", "one_step.steps=1"]) == 0
    assert (run / "checkpoint-2").is_dir()
    card = json.loads((run / "export" / "mcm_student.json").read_text())
    assert card["family"] == "wan" and card["sampling"]["num_frames"] == 9
    assert (run / "export" / "merged" / "model_index.json").is_file()
    # the one-step phase on the flow schedule: a second stock WanPipeline, sampled at 1 step
    one_step = json.loads((run / "one_step" / "export" / "mcm_student.json").read_text())
    assert one_step["sampling"]["recommended_steps"] == [1]
    WanPipeline.from_pretrained(run / "one_step" / "export" / "merged")


def test_full_fine_tuning_trains_every_weight_and_exports_a_merged_pipeline(
    wan_dir, tmp_path, monkeypatch
):
    """model.finetune=full: the whole transformer trains against a frozen copy, a resume
    continues it, and the merged export samples in stock diffusers as the student does."""
    monkeypatch.setenv("MCM_CACHE", str(tmp_path / "cache"))
    overrides = _world_run(wan_dir, tmp_path, **{"model.finetune": "full", "train.lr": 1e-3})
    run_training(_train_config([*overrides, "train.max_steps=1"]))
    recipe = run_training(_train_config([*overrides, "train.max_steps=2"]), resume="latest")
    assert (
        recipe.step == 2 and (tmp_path / "run" / "checkpoint-2" / "network.safetensors").is_file()
    )
    student, teacher = recipe.bundle.denoiser.unet, recipe.teacher_model.unet
    assert all(p.requires_grad for p in student.parameters())
    changed = [not torch.equal(a, b) for a, b in zip(student.parameters(), teacher.parameters())]
    assert sum(changed) > len(changed) // 2
    export = tmp_path / "run" / "export"
    assert not (export / "lora").exists()
    pipe = DiffusionPipeline.from_pretrained(export / "merged")
    pipe.set_progress_bar_config(disable=True)
    stock = pipe(PROMPTS[0], num_inference_steps=2, guidance_scale=1.0, max_sequence_length=16,
                 generator=torch.Generator().manual_seed(3), output_type="latent", **SIZE).frames  # fmt: skip
    ours = sample_student(recipe.bundle, PROMPTS[:1], 2, seed=3, original_inference_steps=40,
                          output_type="latent", **SIZE)  # fmt: skip
    assert (ours - stock).abs().max() <= 1e-5


def test_sample_flow_equals_flow_match_euler_on_its_own_grid():
    """FlowMatchEulerDiscreteScheduler's shift is read, and its steps are sample_flow's."""
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    schedule = schedule_from_config(sched)
    assert isinstance(schedule, FlowMatchingSchedule) and schedule.shift == 3.0
    sched.set_timesteps(4)
    x, v = torch.randn(1, 4, 3, 4, 4), torch.randn(1, 4, 3, 4, 4)
    y = x.clone()
    for t in sched.timesteps:
        y = sched.step(v + y * float(t) / 1000, t, y).prev_sample

    def x0_eps(z, t):
        out = v + z * t.float().view(-1, 1, 1, 1, 1) / 1000
        s = (t / 1000).float().view(-1, 1, 1, 1, 1)
        return z - s * out, z + (1 - s) * out

    timesteps = sched.sigmas.double() * 1000
    torch.testing.assert_close(sample_flow(x0_eps, x, schedule, timesteps), y, atol=2e-6, rtol=0)


def test_pixel_dinov2_discriminator_trains_on_a_wan_teacher(wan_dir, tmp_path, monkeypatch):
    """The DINOv2 option on Wan: first latent frames decoded (with gradient) to one frame."""
    monkeypatch.setenv("MCM_CACHE", str(tmp_path / "cache"))
    save_tiny_dinov2(tmp_path / "dino")
    dino = {"discriminator.backbone": "dinov2", "discriminator.dinov2": tmp_path / "dino",
            "discriminator.taps": "[1]", "train.max_steps": 1}  # fmt: skip
    cfg = _train_config(_world_run(wan_dir, tmp_path, **dino))
    recipe = run_training(cfg)
    assert recipe.step == 1
    fake = recipe.bundle.vae.decode(torch.zeros(2, 4, 1, 4, 4))
    assert fake.shape == (2, 3, 1, 32, 32)


def test_one_step_target_is_the_students_own_flow_sample(student):
    """method.one_step_target_steps on a flow teacher: the N-step target is the exported
    scheduler's N-step grid and the student's deterministic sampler (the Euler step)."""
    den = student.denoiser
    cfg = MCMConfig(num_ode_steps=40, one_step_target_steps=4)
    distiller = MCMDistiller(
        cfg, den, motion=torch.nn.Identity(), disable_adapters=disable_adapters
    )
    shift = den.schedule.shift
    for n in (1, 2, 4, 8):
        expected = flow_sigmas(n, shift)[:-1]
        torch.testing.assert_close(distiller.sampling_timesteps(n), expected, check_dtype=False)
    x = torch.randn(2, 4, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    emb = student.text_encoder(PROMPTS)
    with torch.no_grad():
        ref = sample_flow(
            lambda z, t: den.predict_x0_eps(z, t, emb), x, den.schedule, flow_sigmas(4, shift)
        )
    torch.testing.assert_close(
        distiller.multistep_sample(x, emb, None, 4), ref, atol=1e-5, rtol=1e-5
    )
