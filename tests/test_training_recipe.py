"""The training recipe end to end on a tiny real pipeline and real mp4/png files:
resume equivalence, checkpoint contents, non-finite losses, SIGTERM, 2-process DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mcm.cli import main
from mcm.media import write_image, write_video
from mcm.models.tiny import save_tiny_pipeline
from mcm.training.config import TrainConfig
from mcm.training.config_io import ConfigError, from_dict, save_config, to_dict
from mcm.training.recipe import DistillRecipe, NonFiniteLossError
from mcm.world.domains import render_sample

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    teacher = save_tiny_pipeline("modelscope", root / "teacher")
    clips, images = root / "clips", root / "images"
    images.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(6):
        video, caption, _ = render_sample("lowq_video", g, num_frames=4)
        write_video(clips / f"{i:03d}.mp4", video)
        (clips / f"{i:03d}.txt").write_text(caption)
    for i in range(6):
        image, caption, _ = render_sample("hq_image", g)
        write_image(images / f"{i:03d}.png", image)
        (images / f"{i:03d}.txt").write_text(caption)
    return {"teacher": teacher, "clips": clips, "images": images, "root": root}


def make_config(assets, out, **train) -> TrainConfig:
    data = {
        "num_frames": 4,
        "frame_stride": 1,
        "resolution": 32,
        "crop": "center",
        "num_workers": 0,
    }
    return from_dict(
        TrainConfig,
        {
            "output_dir": str(out),
            "model": {"teacher": str(assets["teacher"]), "lora_rank": 4, "lora_alpha": 4},
            "method": {"motion": "learnable", "frames_per_video": 2},
            "discriminator": {"backbone": "latent", "latent_t_max": 300},
            "data": {
                "video": {"source": str(assets["clips"]), **data},
                "images": {
                    "source": str(assets["images"]),
                    "resolution": 32,
                    "crop": "center",
                    "num_workers": 0,
                },
            },
            "train": {
                "max_steps": 4,
                "batch_size": 1,
                "lr": 1e-3,
                "warmup_steps": 1,
                "checkpoint_every": 2,
                "keep_checkpoints": 5,
                "log_every": 1,
                "tracker": "none",
                "export": False,
                **train,
            },
        },
    )


def run(cfg, resume=None):
    recipe = DistillRecipe(cfg, resume=resume)
    recipe.setup()
    terms = recipe.train()
    return recipe, terms


@pytest.mark.slow
def test_resume_equals_uninterrupted_run(assets, tmp_path):
    full, full_terms = run(make_config(assets, tmp_path / "full"))
    ckpt = tmp_path / "full" / "checkpoint-2"
    assert {p.name for p in ckpt.iterdir()} >= {
        "lora.safetensors",
        "pytorch_lora_weights.safetensors",
        "motion_head.safetensors",
        "motion_head_ema.safetensors",
        "discriminator_heads.safetensors",
        "state.pt",
        "config.yaml",
    }
    resumed, resumed_terms = run(make_config(assets, tmp_path / "resumed"), resume=str(ckpt))
    assert resumed.step == full.step == 4
    for key in ("loss_mcd", "loss_adv_g", "loss_d"):
        assert resumed_terms[key] == pytest.approx(full_terms[key], rel=1e-5, abs=1e-7)
    a = load_file(tmp_path / "full" / "checkpoint-4" / "lora.safetensors")
    b = load_file(tmp_path / "resumed" / "checkpoint-4" / "lora.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    for name in ("motion_head", "discriminator_heads"):
        x = load_file(tmp_path / "full" / "checkpoint-4" / f"{name}.safetensors")
        y = load_file(tmp_path / "resumed" / "checkpoint-4" / f"{name}.safetensors")
        for k in x:
            torch.testing.assert_close(x[k], y[k], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_ema_target_checkpoint_resumes(assets, tmp_path):
    # method.target=ema: the LoRA EMA is saved with the checkpoint and restored on resume.
    cfg = make_config(assets, tmp_path / "ema", max_steps=2)
    cfg.method.target = "ema"
    first, _ = run(cfg)
    saved = load_file(tmp_path / "ema" / "checkpoint-2" / "lora_ema.safetensors")
    assert len([k for k in saved if k.startswith("shadow.")]) == len(first.target_ema.shadow)
    assert int(saved["num_updates"]) == 2
    cfg = make_config(assets, tmp_path / "ema-resumed", max_steps=2)
    cfg.method.target = "ema"
    resumed = DistillRecipe(cfg, resume=str(tmp_path / "ema" / "checkpoint-2"))
    resumed.setup()
    assert resumed.step == 2
    for a, b in zip(resumed.target_ema.shadow, first.target_ema.shadow):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # A config that changes what the checkpoint holds is refused, not skipped for an older one.
    cfg = make_config(assets, tmp_path / "ema-online", max_steps=2)
    refused = DistillRecipe(cfg, resume=str(tmp_path / "ema" / "checkpoint-2"))
    with pytest.raises(ConfigError, match="method.target"):
        refused.setup()


def test_motion_head_has_its_own_learning_rate(assets, tmp_path):
    cfg = make_config(assets, tmp_path / "head-lr")
    cfg.method.motion_head_lr = 2e-2
    recipe = DistillRecipe(cfg)
    recipe.setup()
    lora, head = recipe.optimizers["g"].optimizer.param_groups
    assert (lora["initial_lr"], head["initial_lr"]) == (1e-3, 2e-2)
    assert {id(p) for p in head["params"]} == {id(p) for p in recipe.motion.parameters()}


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")
def test_reference_options_reach_the_motion_head_and_the_discriminator(assets, tmp_path):
    cfg = make_config(assets, tmp_path / "reference")
    cfg.method.motion_head = "reference"
    cfg.discriminator.head_style = "reference"
    cfg.discriminator.gp_reduction = "sum"
    cfg.discriminator.lr_schedule = "cosine"
    cfg.discriminator.warmup_steps = 2
    recipe = DistillRecipe(cfg)
    recipe.setup()
    assert recipe.motion.config["input_activation"] and recipe.motion.config["num_layers"] == 2
    D = recipe.discriminator
    assert D.gp_reduction == "sum"
    assert all(h.residual_scale == pytest.approx(2**-0.5) for h in D.heads)
    schedule = recipe.optimizers["d"].scheduler
    lrs = []
    for _ in range(2 + 4):  # the cosine runs over the D warm-up and the distillation steps
        lrs.append(schedule.get_last_lr()[0])
        schedule.step()
    assert lrs[1] == pytest.approx(1e-4) and lrs[-1] < lrs[2] < lrs[1]
    assert schedule.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)


def test_head_width_caps_every_heads_width(assets, tmp_path):
    cfg = make_config(assets, tmp_path / "narrow")
    recipe = DistillRecipe(cfg)
    recipe.setup()
    taps = recipe.discriminator.backbone.channels
    widths = [h.stem[0].weight.shape[0] for h in recipe.discriminator.heads]
    assert widths == taps  # null: each tap's channels
    cfg = make_config(assets, tmp_path / "narrow")
    cfg.discriminator.head_width = min(taps) + 1  # the narrowest tap's head stays as wide as it
    recipe = DistillRecipe(cfg)
    recipe.setup()
    widths = [h.stem[0].weight.shape[0] for h in recipe.discriminator.heads]
    assert widths == [min(c, min(taps) + 1) for c in taps] and max(taps) > min(taps) + 1
    trained = recipe.optimizers["d"].params
    assert {id(p) for p in trained} == {id(p) for p in recipe.discriminator.head_parameters()}


@pytest.mark.parametrize("real", ["images", "clip frames"])
def test_caption_drop_brings_the_video_captions_to_the_images_form(assets, tmp_path, real):
    cfg = make_config(assets, tmp_path / "drop")
    cfg.discriminator.caption_drop = r"\s*moving \w+$"
    if real == "clip frames":
        cfg.data.images = None
    recipe = DistillRecipe(cfg)
    recipe.setup()
    text, seen = recipe.bundle.text_encoder, []
    pooled = text.pooled
    text.pooled = lambda captions: seen.append(list(captions)) or pooled(captions)
    recipe.next_batch()
    fakes, reals = seen  # D's conditioning of the fakes (the clip's caption), then the reals'
    clip_captions = {p.read_text() for p in assets["clips"].glob("*.txt")}
    assert all(" moving " in c for c in clip_captions)
    assert fakes[0] in {c.split(" moving ")[0] for c in clip_captions}
    assert reals and not any("moving" in c for c in reals)


def test_discriminator_warm_up_trains_only_the_heads_then_training_runs(assets, tmp_path):
    cfg = make_config(assets, tmp_path / "d-warmup")
    cfg.discriminator.warmup_steps = 2
    recipe = DistillRecipe(cfg)
    recipe.setup()
    heads = [p.detach().clone() for p in recipe.discriminator.head_parameters()]
    student = [p.detach().clone() for p in recipe.optimizers["g"].params]
    assert not recipe.warm_up()
    assert recipe.step == 0
    assert any(not torch.equal(a, b) for a, b in zip(heads, recipe.discriminator.head_parameters()))
    for a, b in zip(student, recipe.optimizers["g"].params):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert b.grad is None
    steps = []
    recipe.train(on_step=steps.append)
    assert steps == [1, 2, 3, 4]


def test_discriminator_warm_up_needs_an_image_set(assets, tmp_path):
    cfg = to_dict(make_config(assets, tmp_path / "x"))
    cfg["discriminator"]["warmup_steps"] = 10
    cfg["data"]["images"] = None
    with pytest.raises(ConfigError, match="warmup_steps needs data.images"):
        from_dict(TrainConfig, cfg)


@pytest.mark.slow
def test_nonfinite_losses_stop_the_run(assets, tmp_path):
    broken = tmp_path / "broken-teacher"
    import shutil

    shutil.copytree(assets["teacher"], broken)
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    key = next(k for k in state if k.endswith("conv_in.weight"))
    state[key] = torch.full_like(state[key], float("nan"))
    save_file(state, weights)
    cfg = make_config(assets, tmp_path / "nan", max_nonfinite=2)
    cfg.model.teacher = str(broken)
    recipe = DistillRecipe(cfg)
    recipe.setup()
    with pytest.raises(NonFiniteLossError, match="non-finite losses in a row"):
        recipe.train()
    assert recipe.nonfinite_total == 2 and recipe.step == 0


def _cli_config(assets, tmp_path, **train) -> Path:
    cfg = make_config(assets, tmp_path / "cli", **train)
    path = tmp_path / "cfg.yaml"
    save_config(cfg, path)
    return path


@pytest.mark.slow
def test_sigterm_leaves_a_resumable_checkpoint(assets, tmp_path):
    cfg = _cli_config(assets, tmp_path, max_steps=1000, checkpoint_every=0)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "mcm", "train", "--config", str(cfg)]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    log = []
    deadline = time.time() + 300
    while time.time() < deadline:  # wait until a few steps have run
        line = proc.stdout.readline()
        log.append(line)
        if "3/1000" in line or proc.poll() is not None:
            break
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, "".join(log) + out
    ckpts = sorted((tmp_path / "cli").glob("checkpoint-*"))
    assert ckpts, out
    step = json.loads((ckpts[-1] / "meta.json").read_text())["step"]
    assert 0 < step < 1000
    # The same command line resumes it (in this process: the CLI's entry point itself).
    args = [
        "train",
        "--config",
        str(cfg),
        "--resume",
        "latest",
        "--set",
        f"train.max_steps={step + 1}",
    ]
    assert main(args) == 0
    assert (tmp_path / "cli" / f"checkpoint-{step + 1}").is_dir()


@pytest.mark.slow
def test_validation_videos_are_written_and_logged(assets, tmp_path):
    cfg = make_config(
        assets,
        tmp_path / "val",
        max_steps=2,
        checkpoint_every=0,
        validate_every=2,
        validation_prompts=["a red circle moving left"],
        validation_steps=[1, 2],
        validation_frames=4,
        validation_teacher_steps=2,
        validation_teacher_guidance=2.5,
        tracker="tensorboard",
    )
    recipe, _ = run(cfg)
    recipe.cleanup()
    val = tmp_path / "val" / "validation"
    assert {p.name for p in (val / "step-2").iterdir()} == {
        "student-1step-0.mp4",
        "student-2step-0.mp4",
    }
    assert (val / "teacher" / "teacher-2step-0.mp4").is_file()
    assert list((tmp_path / "val").rglob("events.out.tfevents.*")), "nothing logged to tensorboard"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(
    accelerate_config: str,
    args: list[str],
    num_processes: int = 2,
    options: tuple = (),
    env: dict | None = None,
    check: bool = True,
):
    """`accelerate launch --config_file configs/accelerate/<config> [options]` of
    tests/ddp_worker.py on CPU processes (gloo)."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "ACCELERATE_USE_CPU": "true",
        "PYTHONFAULTHANDLER": "1",  # a rank that crashes prints its Python stack
        **(env or {}),
    }
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ROOT / "configs" / "accelerate" / accelerate_config),
        "--num_processes",
        str(num_processes),
        "--main_process_port",
        str(_free_port()),
        *options,
        str(ROOT / "tests" / "ddp_worker.py"),
        *args,
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0 and _transport_abort(result):
        # FSDP on CPU processes: a rank sometimes dies of SIGABRT or SIGSEGV (its peer then
        # reports a gloo connection reset) in a run that passes alone; cause not found yet
        # (see the warning). A fault that repeats fails the retry
        warnings.warn(
            f"{accelerate_config}: a rank aborted; retrying once.\n{_errors(result)}", stacklevel=2
        )
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, _errors(result) + "\n...\n" + result.stderr[-3000:]
    return result


def _transport_abort(result) -> bool:
    out = result.stdout + result.stderr
    return ("SIGABRT" in out or "SIGSEGV" in out) and "Connection reset by peer" in out


def _errors(result, limit: int = 80) -> str:
    """The lines that say what failed, from every rank (a tail shows only the last rank's),
    with the stack that faulthandler prints for a rank that crashed."""
    keys = ("Error", "error:", "terminate called", "Signal", "Traceback", "Exception")
    kept, in_stack = [], False
    for line in (result.stdout + result.stderr).splitlines():
        in_stack = line.startswith(("Fatal Python error", "Thread 0x", "Current thread")) or (
            in_stack and line.startswith("  File ")
        )
        if in_stack or any(k in line for k in keys):
            kept.append(line)
    return "\n".join(kept[:limit])


def _rank_results(folder: Path, ranks=(0, 1)):
    metas = [json.loads((folder / f"rank{r}.json").read_text()) for r in ranks]
    weights = [load_file(folder / f"rank{r}.safetensors") for r in ranks]
    return metas, weights


@pytest.mark.slow
def test_fsdp_shards_the_unet_and_its_checkpoint_resumes_on_fewer_processes(assets, tmp_path):
    """configs/accelerate/fsdp_cpu.yaml (FSDP2 on gloo), with mixed trajectories: the UNet's
    blocks are sharded, both ranks end with the same full weights, the checkpoint holds the
    full LoRA, validation videos and the export are written, and one FSDP process, then one
    plain process, resume."""
    from mcm.models import lora_state_dict

    run_dir = tmp_path / "cli"
    cfg = _cli_config(
        assets,
        tmp_path,
        max_steps=2,
        checkpoint_every=0,
        export=True,
        validate_every=2,  # every rank samples (collective forwards), rank 0 writes
        validation_prompts=["a red circle moving left"],
        validation_steps=[1],
        validation_frames=4,
        validation_teacher_steps=3,  # collective forwards: the step count is what matters
    )
    (tmp_path / "two").mkdir()
    _launch("fsdp_cpu.yaml", [str(cfg), str(tmp_path / "two")])
    metas, (r0, r1) = _rank_results(tmp_path / "two")
    for meta in metas:
        assert meta["fsdp"] and meta["num_processes"] == 2 and meta["step"] == 2
        # Each rank holds about half of the UNet: the blocks are sharded, the top level is not.
        assert meta["unet_local_numel"] < 0.6 * meta["unet_numel"], meta
    assert r0.keys() == r1.keys() and len(r0) > 0
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    saved = load_file(run_dir / "checkpoint-2" / "lora.safetensors")
    for k, v in saved.items():
        assert torch.equal(v, r0[f"lora.{k}"]), k
    assert (run_dir / "export" / "merged" / "model_index.json").is_file()
    assert (run_dir / "validation" / "step-2" / "student-1step-0.mp4").is_file()
    assert (run_dir / "validation" / "teacher" / "teacher-3step-0.mp4").is_file()

    # One FSDP process (a world of 1) resumes the two-process checkpoint for one step.
    cfg3 = _cli_config(assets, tmp_path, max_steps=3, checkpoint_every=0)
    (tmp_path / "one").mkdir()
    _launch("fsdp_cpu.yaml", [str(cfg3), str(tmp_path / "one"), "latest"], num_processes=1)
    (meta,), _ = _rank_results(tmp_path / "one", ranks=(0,))
    assert meta["fsdp"] and meta["num_processes"] == 1 and meta["step"] == 3

    # And a plain single process (no accelerate launch) resumes that one.
    recipe = DistillRecipe(make_config(assets, run_dir, max_steps=4), resume="latest")
    recipe.setup()
    assert recipe.fsdp is None and recipe.step == 3
    resumed = lora_state_dict(recipe.bundle.denoiser)
    for k, v in load_file(run_dir / "checkpoint-3" / "lora.safetensors").items():
        assert torch.equal(resumed[k], v), k
    recipe.train()
    assert recipe.step == 4 and (run_dir / "checkpoint-4" / "lora.safetensors").is_file()


@pytest.mark.slow
def test_a_sigterm_to_one_rank_stops_every_rank_after_the_same_step(assets, tmp_path):
    cfg = _cli_config(assets, tmp_path, max_steps=4, checkpoint_every=0)
    (tmp_path / "out").mkdir()
    env = {"MCM_TEST_SIGTERM_RANK": "1", "MCM_TEST_SIGTERM_STEP": "1"}
    result = _launch("cpu_2proc.yaml", [str(cfg), str(tmp_path / "out")], env=env, check=False)
    assert result.returncode != 0  # the launcher reports ranks that exit 143
    metas, (r0, r1) = _rank_results(tmp_path / "out")
    assert [(m["step"], m["exit_status"]) for m in metas] == [(1, 143), (1, 143)]
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    assert [p.name for p in (tmp_path / "cli").glob("checkpoint-*")] == ["checkpoint-1"]


@pytest.mark.slow
def test_fsdp_gradients_equal_ddp_gradients(assets, tmp_path):
    """Two steps on two ranks with DDP (our all-reduce) and with FSDP (sharded blocks,
    reduce-scattered LoRA gradients), keeping gathered blocks from forward to backward
    (FULL_SHARD) or not (SHARD_GRAD_OP): the same second-step losses (so the same first
    update) and grad norms. lambda_real = 1: every rank takes the same trajectory branch."""
    runs = {
        "ddp": ("cpu_2proc.yaml", ()),
        "full_shard": ("fsdp_cpu.yaml", ()),
        "shard_grad_op": ("fsdp_cpu.yaml", ("--fsdp_reshard_after_forward", "false")),
    }
    terms = {}
    for name, (accelerate_config, options) in runs.items():
        cfg = make_config(assets, tmp_path / f"run-{name}", max_steps=2, checkpoint_every=0)
        cfg.method.lambda_real = 1.0
        path = tmp_path / f"{name}.yaml"
        save_config(cfg, path)
        (tmp_path / name).mkdir()
        _launch(accelerate_config, [str(path), str(tmp_path / name)], options=options)
        metas, (r0, r1) = _rank_results(tmp_path / name)
        assert [m["fsdp"] for m in metas] == [name != "ddp"] * 2
        assert [(m["num_processes"], m["step"]) for m in metas] == [(2, 2)] * 2
        assert r0.keys() == r1.keys() and len(r0) > 0  # every rank ends with the same weights
        for k in r0:
            assert torch.equal(r0[k], r1[k]), (name, k)
        terms[name] = [m["terms"] for m in metas]
    for name in ("full_shard", "shard_grad_op"):
        for ddp, fsdp in zip(terms["ddp"], terms[name]):
            for key in ("loss_mcd", "loss_adv_g", "loss_d", "grad_norm_g", "grad_norm_d"):
                assert fsdp[key] == pytest.approx(ddp[key], rel=1e-5), (name, key)


def test_latent_round_trip_judges_the_latents_of_the_decoded_frames(assets, tmp_path):
    """discriminator.latent_round_trip: real and fake frames reach the latent backbone
    decoded and encoded again, the fakes with gradient."""
    batches = {}
    for on in (False, True):
        cfg = make_config(assets, tmp_path / f"round-trip-{on}")
        cfg.discriminator.latent_round_trip = on
        recipe = DistillRecipe(cfg)
        recipe.setup()
        batches[on] = recipe.next_batch()
    vae = recipe.bundle.vae
    torch.testing.assert_close(
        batches[True].real_frames, vae.round_trip(batches[False].real_frames)
    )
    fake = batches[False].latents[:, :, 0].clone().requires_grad_(True)
    judged = recipe._decode_frames(fake)
    torch.testing.assert_close(judged, vae.encode(vae.decode(fake[:, :, None]))[:, :, 0])
    judged.sum().backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_fake_frames_clip_judges_decoded_frames_encoded_as_images(assets, tmp_path):
    """method.fake_frames "clip": the discriminator's fakes are k frames of the decoded
    clip, each encoded again as an image, with gradient to the student; it needs images."""
    cfg = make_config(assets, tmp_path / "clip")
    cfg.method.fake_frames = "clip"
    recipe = DistillRecipe(cfg)
    recipe.setup()
    batch = recipe.next_batch()
    distiller, vae = recipe.distiller, recipe.bundle.vae
    draws = distiller.sample_draws(batch.latents, torch.Generator().manual_seed(0))
    k = len(draws.frame_index)
    assert k == cfg.method.frames_per_video and max(draws.frame_index) < cfg.data.video.num_frames
    video = batch.latents.clone().requires_grad_(True)
    fake, pooled = distiller._frames(video, draws.frame_index, batch.pooled_text)
    decoded = vae.decode(batch.latents)[:, :, draws.frame_index]  # [B, 3, k, H, W]
    expected = vae.encode(decoded.permute(0, 2, 1, 3, 4).flatten(0, 1)[:, :, None])[:, :, 0]
    torch.testing.assert_close(fake, expected, atol=1e-5, rtol=1e-4)
    assert pooled.shape[0] == fake.shape[0] == batch.latents.shape[0] * k
    fake.sum().backward()
    assert video.grad.abs().sum() > 0
    data = to_dict(cfg)
    data["data"]["images"] = None
    data["discriminator"]["warmup_steps"] = 0
    with pytest.raises(ValueError, match="fake_frames 'clip' needs data.images"):
        from_dict(TrainConfig, data)
