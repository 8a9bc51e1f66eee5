"""mcm.diffusion.schedules against diffusers' DDIM/DDPM/LCM/FlowMatch schedulers and closed forms."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, FlowMatchEulerDiscreteScheduler, LCMScheduler
from diffusers.schedulers.scheduling_ddim import (
    rescale_zero_terminal_snr as diffusers_rescale_zero_terminal_snr,
)
from torch.testing import assert_close

from mcm.diffusion import (
    BETA_SCHEDULES,
    FlowMatchingSchedule,
    VPSchedule,
    add_noise,
    append_dims,
    make_betas,
    rescale_zero_terminal_snr,
    schedule_from_config,
)

SHAPE = (3, 4, 2, 5, 5)  # [B, C, F, H, W]
# (beta_start, beta_end): diffusers' DDIM defaults and the ModelScope/SD ones.
BETA_RANGES = [(0.0001, 0.02), (0.00085, 0.012)]


def randn(*shape, dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --- beta tables and alpha_bar -----------------------------------------------------------


# DDPMScheduler has no set_alpha_to_one (nor final_alpha_cumprod): only the default there.
SCHEDULER_CASES = [
    (cls, set_alpha_to_one)
    for cls in (DDIMScheduler, DDPMScheduler, LCMScheduler)
    for set_alpha_to_one in (True, False)
    if cls is not DDPMScheduler or set_alpha_to_one
]


@pytest.mark.parametrize("rescale", [False, True])
@pytest.mark.parametrize("beta_range", BETA_RANGES)
@pytest.mark.parametrize("beta_schedule", BETA_SCHEDULES)
@pytest.mark.parametrize(("cls", "set_alpha_to_one"), SCHEDULER_CASES)
def test_vp_schedule_equals_diffusers_alphas_cumprod(
    cls, set_alpha_to_one, beta_schedule, beta_range, rescale
):
    kwargs = dict(
        beta_schedule=beta_schedule,
        beta_start=beta_range[0],
        beta_end=beta_range[1],
        rescale_betas_zero_snr=rescale,
    )
    if cls is not DDPMScheduler:
        kwargs["set_alpha_to_one"] = set_alpha_to_one
    scheduler = cls(**kwargs)
    direct = VPSchedule.from_betas(
        beta_schedule,
        1000,
        beta_range[0],
        beta_range[1],
        rescale_betas_zero_snr=rescale,
        set_alpha_to_one=set_alpha_to_one,
    )
    for schedule in (
        direct,
        VPSchedule.from_config(scheduler),
        VPSchedule.from_config(scheduler.config),
        VPSchedule.from_config(dict(scheduler.config)),
        schedule_from_config(scheduler),
    ):
        assert isinstance(schedule, VPSchedule)
        assert schedule.kind == "vp" and schedule.num_train_timesteps == 1000
        # Same float32 arithmetic as diffusers: the tables agree bit for bit.
        assert torch.equal(schedule.alphas_cumprod, scheduler.alphas_cumprod)
        if cls is not DDPMScheduler:
            assert schedule.final_alpha_cumprod == float(scheduler.final_alpha_cumprod)
    if rescale:
        assert direct.alphas_cumprod[-1] == 0.0  # zero terminal SNR, exactly as diffusers


def test_from_config_trained_betas_and_rescale():
    betas = torch.linspace(1e-4, 3e-2, 200).tolist()
    for rescale in (False, True):
        for set_alpha_to_one in (False, True):
            scheduler = DDIMScheduler(
                num_train_timesteps=200,
                trained_betas=betas,
                rescale_betas_zero_snr=rescale,
                set_alpha_to_one=set_alpha_to_one,
            )
            schedule = VPSchedule.from_config(scheduler)
            assert torch.equal(schedule.alphas_cumprod, scheduler.alphas_cumprod)
            assert schedule.final_alpha_cumprod == float(scheduler.final_alpha_cumprod)


def test_from_config_missing_keys_take_ddim_defaults():
    assert torch.equal(VPSchedule.from_config({}).alphas_cumprod, DDIMScheduler().alphas_cumprod)


def test_other_num_train_timesteps():
    scheduler = DDIMScheduler(num_train_timesteps=500, beta_schedule="squaredcos_cap_v2")
    schedule = VPSchedule.from_config(scheduler)
    assert schedule.num_train_timesteps == 500
    assert torch.equal(schedule.alphas_cumprod, scheduler.alphas_cumprod)


def _numpy_betas(name, T, b0, b1):
    if name == "linear":
        return np.linspace(b0, b1, T)
    if name == "scaled_linear":
        return np.linspace(b0**0.5, b1**0.5, T) ** 2

    def abar(s):
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    return np.array([min(1 - abar((i + 1) / T) / abar(i / T), 0.999) for i in range(T)])


@pytest.mark.parametrize("rescale", [False, True])
@pytest.mark.parametrize("beta_schedule", BETA_SCHEDULES)
def test_float64_tables_against_numpy_reference(beta_schedule, rescale):
    T, b0, b1 = 1000, 0.00085, 0.012
    abar = np.cumprod(1 - _numpy_betas(beta_schedule, T, b0, b1))
    if rescale:  # Lin et al. 2024, Algorithm 1, on sqrt(alpha_bar)
        s = np.sqrt(abar)
        abar = ((s - s[-1]) * s[0] / (s[0] - s[-1])) ** 2
    schedule = VPSchedule.from_betas(
        beta_schedule, T, b0, b1, rescale_betas_zero_snr=rescale, dtype=torch.float64
    )
    assert schedule.alphas_cumprod.dtype == torch.float64
    assert_close(schedule.alphas_cumprod, torch.from_numpy(abar), rtol=1e-12, atol=1e-14)
    # Monotone decreasing, from just below 1.
    assert (schedule.alphas_cumprod.diff() < 0).all() and schedule.alphas_cumprod[0] < 1


@pytest.mark.parametrize("beta_schedule", BETA_SCHEDULES)
def test_rescale_zero_terminal_snr(beta_schedule):
    betas = make_betas(beta_schedule)
    rescaled = rescale_zero_terminal_snr(betas)
    assert torch.equal(rescaled, diffusers_rescale_zero_terminal_snr(betas.clone()))
    abar, abar_new = torch.cumprod(1 - betas, 0), torch.cumprod(1 - rescaled, 0)
    assert abar_new[-1] == 0.0
    assert_close(abar_new[0], abar[0], rtol=1e-6, atol=0)
    assert rescaled.shape == betas.shape


def test_alpha_sigma_and_clean_end():
    schedule = VPSchedule.from_betas("scaled_linear", set_alpha_to_one=False)
    t = torch.tensor([-1, 0, 1, 500, 999])
    a, s = schedule.alpha(t), schedule.sigma(t)
    assert_close(a**2 + s**2, torch.ones(5))
    assert_close(a[1:] ** 2, schedule.alphas_cumprod[t[1:]], rtol=1e-6, atol=0)
    # Timestep -1 is the clean end: final_alpha_cumprod (alphas_cumprod[0] here, 1 by default).
    assert schedule.alpha_bar(torch.tensor([-1])).item() == schedule.alphas_cumprod[0].item()
    assert VPSchedule.from_betas().alpha_bar(torch.tensor([-1])).item() == 1.0


# --- add_noise ---------------------------------------------------------------------------


@pytest.mark.parametrize("rescale", [False, True])
@pytest.mark.parametrize("beta_schedule", BETA_SCHEDULES)
def test_add_noise_equals_ddpm(beta_schedule, rescale):
    scheduler = DDPMScheduler(beta_schedule=beta_schedule, rescale_betas_zero_snr=rescale)
    schedule = VPSchedule.from_config(scheduler)
    x0, noise = randn(*SHAPE, seed=1), randn(*SHAPE, seed=2)
    t = torch.tensor([0, 517, 999])
    ours = add_noise(schedule, x0, noise, t)
    assert ours.shape == SHAPE and ours.dtype == torch.float32
    assert (ours - scheduler.add_noise(x0, noise, t)).abs().max() <= 1e-5
    # float64 samples: x_t comes back in float64 (the table itself is float32 here).
    ours64 = add_noise(schedule, x0.double(), noise.double(), t)
    assert ours64.dtype == torch.float64
    assert (ours64 - scheduler.add_noise(x0.double(), noise.double(), t)).abs().max() <= 1e-6


def test_add_noise_at_clean_end_is_identity():
    x0, noise = randn(*SHAPE, seed=1), randn(*SHAPE, seed=2)
    t = torch.full((SHAPE[0],), -1)
    assert torch.equal(add_noise(VPSchedule.from_betas(), x0, noise, t), x0)
    assert torch.equal(add_noise(FlowMatchingSchedule(), x0, noise, t), x0)


# --- flow matching -----------------------------------------------------------------------


def test_flow_add_noise_is_the_definition():
    schedule = FlowMatchingSchedule(1000)
    x0, eps = randn(*SHAPE, dtype=torch.float64, seed=3), randn(*SHAPE, dtype=torch.float64, seed=4)
    t = torch.tensor([0.0, 333.25, 1000.0], dtype=torch.float64)
    s = append_dims(t / 1000, x0.ndim)
    assert_close(add_noise(schedule, x0, eps, t), (1 - s) * x0 + s * eps, rtol=0, atol=1e-12)
    assert_close(schedule.alpha(t) + schedule.sigma(t), torch.ones(3, dtype=torch.float64))
    assert schedule.alpha(torch.tensor([0])).dtype == torch.float32  # integer t -> float32


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_add_noise_equals_flow_match_scale_noise(shift):
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    scheduler.set_timesteps(8)
    schedule = schedule_from_config(scheduler)
    assert isinstance(schedule, FlowMatchingSchedule) and schedule.kind == "flow"
    x0, noise = randn(8, 4, 2, 3, 3, seed=5), randn(8, 4, 2, 3, 3, seed=6)
    t = scheduler.timesteps  # one per sample, t = sigma * T
    expected = scheduler.scale_noise(x0, t, noise)
    assert (add_noise(schedule, x0, noise, t) - expected).abs().max() <= 1e-5


def test_schedule_from_config_dicts():
    flow = schedule_from_config(
        {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 500}
    )
    assert flow == FlowMatchingSchedule(500)
    vp = schedule_from_config(dict(LCMScheduler().config))
    assert torch.equal(vp.alphas_cumprod, LCMScheduler().alphas_cumprod)


# --- bad arguments -----------------------------------------------------------------------

ALLOWED_SCHEDULES = "allowed: linear, scaled_linear, squaredcos_cap_v2"


@pytest.mark.parametrize(
    "build",
    [
        lambda: make_betas("cosine"),
        lambda: VPSchedule.from_betas("sigmoid"),
        lambda: VPSchedule.from_config({"beta_schedule": "laplace"}),
        lambda: schedule_from_config(DDPMScheduler(beta_schedule="sigmoid")),
    ],
)
def test_unknown_beta_schedule_lists_allowed(build):
    with pytest.raises(ValueError, match=ALLOWED_SCHEDULES):
        build()


@pytest.mark.parametrize("t", [-2, 1000])
def test_vp_timestep_out_of_range(t):
    with pytest.raises(ValueError, match=r"-1\.\.999"):
        VPSchedule.from_betas().alpha(torch.tensor([0, t]))


@pytest.mark.parametrize("t", [-1.5, 1000.5])
def test_flow_timestep_out_of_range(t):
    with pytest.raises(ValueError, match=r"-1\.\.1000"):
        FlowMatchingSchedule().sigma(torch.tensor([t]))


def test_append_dims():
    c = torch.arange(3.0)
    assert append_dims(c, 5).shape == (3, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="more than the target"):
        append_dims(torch.zeros(2, 2), 1)


def test_schedule_on_cpu_samples_elsewhere():
    """alpha, sigma and the scalings follow the samples' device ("meta" stands in for a GPU)."""
    from mcm.diffusion import consistency_output, consistency_scalings, ddim_step, to_x0_eps

    schedule, t = VPSchedule.from_betas(), torch.tensor([3, 999])
    x = torch.empty(2, 4, 2, 3, 3, device="meta")
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    outputs = [
        add_noise(schedule, x, x, t),
        *to_x0_eps(x, x, alpha, sigma, "v_prediction"),
        ddim_step(schedule, x, x, torch.tensor([-1, 979])),
        consistency_output(x, x, *consistency_scalings(t)),
    ]
    assert all(o.device.type == "meta" and o.shape == x.shape for o in outputs)
