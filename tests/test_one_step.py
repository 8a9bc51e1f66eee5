"""The one-step phase (mcm.training.one_step) on a tiny real pipeline: its target is the
exported multi-step student's deterministic sample, its one-step output the stock 1-step
sampler's, and its export a stock pipeline that samples what it trained."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from diffusers import TextToVideoSDPipeline

from mcm.diffusion import (
    FlowMatchingSchedule,
    VPSchedule,
    consistency_function,
    consistency_timesteps,
    ddim_step,
    flow_sigmas,
    sample_consistency_ode,
    sample_flow,
    x0_to_eps,
)
from mcm.models import load_teacher, student_latents
from mcm.training.config import TrainConfig
from mcm.training.config_io import from_dict, to_dict
from mcm.training.one_step import OneStepRecipe, one_step_dir
from mcm.training.recipe import run_training
from test_training_recipe import assets, make_config  # noqa: F401 (a fixture)


def test_sample_consistency_ode_steps_along_each_outputs_own_noise():
    schedule = VPSchedule.from_betas()
    x_T = torch.randn(2, 3, 4)

    def f(x, t):
        return torch.tanh(x) * (1 + t.view(-1, 1, 1) / 1000)

    times = torch.tensor([999, 499])
    t0, t1 = times[:1].expand(2), times[1:].expand(2)
    a, s = schedule.alpha(t0), schedule.sigma(t0)
    y0 = f(x_T, t0)
    x1 = ddim_step(schedule, y0, x0_to_eps(y0, x_T, a, s), t1)
    torch.testing.assert_close(sample_consistency_ode(f, x_T, schedule, times), f(x1, t1))
    # `first` stands in for the first call
    x1 = ddim_step(schedule, y0 + 1, x0_to_eps(y0 + 1, x_T, a, s), t1)
    torch.testing.assert_close(sample_consistency_ode(f, x_T, schedule, times, y0 + 1), f(x1, t1))


def test_sample_consistency_ode_is_the_euler_sampler_on_a_flow_schedule():
    schedule = FlowMatchingSchedule(shift=3.0)
    x_T = torch.randn(2, 3, 4)
    w = torch.randn(4, 4) / 2

    def x0_eps(x, t):
        s = (t / 1000).view(-1, 1, 1).float()
        x0 = x @ w * s
        return x0, (x - (1 - s) * x0) / s

    times = flow_sigmas(4, 3.0, 1000)
    torch.testing.assert_close(
        sample_consistency_ode(lambda x, t: x0_eps(x, t)[0], x_T, schedule, times[:-1]),
        sample_flow(x0_eps, x_T, schedule, times),
    )


def _sha(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def _f(bundle, x, t, text_emb, cfg, card):
    """f(x, t) of a loaded student, with the boundary scalings of its card."""
    x0, _ = bundle.denoiser.predict_x0_eps(x, t, text_emb)
    schedule = bundle.denoiser.schedule
    return consistency_function(x, x0, t, schedule, cfg.method.sigma_data, card["timestep_scaling"])


@pytest.mark.slow
def test_one_step_phase_regresses_to_the_frozen_multistep_sample_and_exports(assets, tmp_path):  # noqa: F811
    data = to_dict(make_config(assets, tmp_path / "run", max_steps=2, export=True))
    run_training(from_dict(TrainConfig, data))  # the multi-step student alone
    cfg = from_dict(TrainConfig, {**data, "one_step": {"steps": 3, "target_steps": 2}})
    multistep = tmp_path / "run" / "export"
    before = _sha(multistep)
    student = load_teacher(str(multistep / "merged"))

    phase = OneStepRecipe(cfg)
    phase.setup()
    noise, text_emb = phase.next_batch()
    times = consistency_timesteps(2, 1000, cfg.method.num_ode_steps)
    with torch.no_grad():
        # the target: the exported multi-step student's deterministic 2-step sample
        target = sample_consistency_ode(
            lambda x, t: _f(student, x, t, text_emb, cfg, phase.card),
            noise,
            student.denoiser.schedule,
            times,
        )
        one_step = phase.consistency(noise, phase.timesteps(1).expand(len(noise)), text_emb)
    stock_one_step = student_latents(student.denoiser, text_emb, noise, num_inference_steps=1)
    torch.testing.assert_close(one_step, stock_one_step)  # a fresh LoRA: the student's own
    loss = phase._loss_step((noise, text_emb))["loss_one_step"]
    c = cfg.method.huber_c
    expected = (((one_step - target) ** 2 + c**2).sqrt() - c).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-6)
    phase.cleanup()

    assert OneStepRecipe(cfg).run()["steps"] == 3
    assert _sha(multistep) == before  # the multi-step student is left as it was
    export = one_step_dir(cfg) / "export"
    card = json.loads((export / "mcm_student.json").read_text())
    assert card["sampling"]["recommended_steps"] == [1]
    pipe = TextToVideoSDPipeline.from_pretrained(export / "merged")  # stock diffusers
    trained = dict(pipe.unet.named_parameters())
    base = student.denoiser.unet.named_parameters()
    assert any(not torch.equal(p, trained[n]) for n, p in base)  # the LoRA, merged
    one = load_teacher(str(export / "merged"))
    with torch.no_grad():
        stock = student_latents(one.denoiser, text_emb, noise, num_inference_steps=1)
    assert not torch.allclose(stock, stock_one_step)


def test_one_step_settings_are_checked(assets, tmp_path):  # noqa: F811
    data = to_dict(make_config(assets, tmp_path / "run"))
    with pytest.raises(ValueError, match="one_step.steps needs train.export=true"):
        from_dict(TrainConfig, {**data, "one_step": {"steps": 5}})
    data["train"]["export"] = True
    with pytest.raises(ValueError, match="one_step.target_steps: 60 exceeds"):
        from_dict(TrainConfig, {**data, "one_step": {"steps": 5, "target_steps": 60}})
    no_student = from_dict(TrainConfig, {**data, "one_step": {"steps": 5}})
    with pytest.raises(FileNotFoundError, match="No multi-step student"):
        OneStepRecipe(no_student).setup()
