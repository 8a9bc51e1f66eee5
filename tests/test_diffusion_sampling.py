"""DDIM solver, skipping-step grid and samplers against diffusers' DDIM/LCM/FlowMatch loops."""

import pytest
import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler, LCMScheduler
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from mcm.diffusion import (
    VPSchedule,
    add_noise,
    append_dims,
    consistency_timesteps,
    ddim_previous_timestep,
    ddim_step,
    ddim_timesteps,
    sample_consistency,
    sample_ddim,
    schedule_from_config,
    skipping_step_grid,
    to_x0_eps,
    training_timesteps,
)
from mcm.diffusion.solvers import TIMESTEP_SPACINGS

VP_PREDICTIONS = ("epsilon", "sample", "v_prediction")
SHAPE = (2, 4, 3, 4, 4)  # [B, C, F, H, W]


def randn(*shape, dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


class ToyModel:
    """A fixed random channel mix + tanh that depends on t: (x [B, C, ...], t) -> [B, C, ...].

    t may be a scalar (what diffusers' step loops pass) or per sample [B] (what ours pass);
    the same t gives bit for bit the same output either way.
    """

    def __init__(self, channels: int = SHAPE[1], seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(channels, channels, generator=g) / channels**0.5
        self.bias = torch.randn(channels, generator=g)

    def __call__(self, x, t):
        t = append_dims(torch.as_tensor(t).to(x.device, x.dtype).reshape(-1), x.ndim)
        h = torch.einsum("oc,bc...->bo...", self.weight.to(x.device, x.dtype), x)
        bias = append_dims(self.bias.to(x.device, x.dtype), x.ndim - 1)
        return 1.5 * torch.tanh(h * (1 + t / 1000) + bias * torch.cos(t / 100))


MODEL = ToyModel()


def x0_eps_denoiser(schedule, prediction_type):
    def denoiser(x, t):
        return to_x0_eps(MODEL(x, t), x, schedule.alpha(t), schedule.sigma(t), prediction_type)

    return denoiser


# --- DDIM timesteps ----------------------------------------------------------------------


@pytest.mark.parametrize("T", [1000, 500])
@pytest.mark.parametrize(
    ("spacing", "steps_offset"), [(s, 0) for s in TIMESTEP_SPACINGS] + [("leading", 1)]
)
def test_ddim_timesteps_equal_set_timesteps_for_every_n(spacing, steps_offset, T):
    scheduler = DDIMScheduler(
        num_train_timesteps=T, timestep_spacing=spacing, steps_offset=steps_offset
    )
    for n in range(1, T + 1):
        scheduler.set_timesteps(n)
        ours = ddim_timesteps(n, T, spacing, steps_offset)
        assert ours.dtype == torch.long and len(ours) == n
        assert torch.equal(ours, scheduler.timesteps[:n]), n
        # diffusers' "trailing" sometimes gets one point too many from numpy.arange and
        # appends a bogus -1; ours always has n entries.
        assert scheduler.timesteps[n:].tolist() in ([], [-1])


def test_ddim_timesteps_examples():
    assert ddim_timesteps(4, 1000, "leading", 1).tolist() == [751, 501, 251, 1]
    assert ddim_timesteps(4, 1000, "trailing").tolist() == [999, 749, 499, 249]
    assert ddim_timesteps(4, 1000, "linspace").tolist() == [999, 666, 333, 0]


@pytest.mark.parametrize("n", [0, 1001])
def test_ddim_timesteps_bad_step_count(n):
    with pytest.raises(ValueError, match=r"1\.\.1000"):
        ddim_timesteps(n, 1000)


def test_ddim_timesteps_unknown_spacing_lists_allowed():
    with pytest.raises(ValueError, match="allowed: leading, trailing, linspace"):
        ddim_timesteps(4, 1000, "karras")


def test_ddim_previous_timestep():
    t = torch.tensor([999, 519, 20, 19, 0])
    assert ddim_previous_timestep(t, 50).tolist() == [979, 499, 0, -1, -1]
    assert ddim_previous_timestep(t, 3).tolist() == [666, 186, -1, -1, -1]


# --- DDIM step and sampler ---------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 50])
@pytest.mark.parametrize("prediction_type", VP_PREDICTIONS)
def test_ddim_step_equals_ddim_scheduler_step_per_sample(prediction_type, n):
    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type=prediction_type,
        clip_sample=False,
        set_alpha_to_one=False,
    )
    scheduler.set_timesteps(n)
    schedule = VPSchedule.from_config(scheduler)
    t = torch.tensor([999, 640, 333, 19, 5, 0])  # one timestep per sample
    x, out = randn(len(t), *SHAPE[1:], seed=1), randn(len(t), *SHAPE[1:], seed=2)
    x0, eps = to_x0_eps(out, x, schedule.alpha(t), schedule.sigma(t), prediction_type)
    ours = ddim_step(schedule, x0, eps, ddim_previous_timestep(t, n))
    assert ours.shape == x.shape
    for i, ti in enumerate(t):
        expected = scheduler.step(out[i : i + 1], ti, x[i : i + 1]).prev_sample
        assert (ours[i : i + 1] - expected).abs().max() <= 1e-5


DDIM_CONFIGS = {
    # Stable-Diffusion/ModelScope style: leading spacing with steps_offset 1.
    "sd": dict(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        set_alpha_to_one=False,
        timestep_spacing="leading",
        steps_offset=1,
    ),
    "leading": dict(beta_schedule="linear", timestep_spacing="leading"),
    "linspace": dict(beta_schedule="scaled_linear", timestep_spacing="linspace"),
    # Zero terminal SNR (Lin et al.): trailing spacing; an epsilon model is undefined at T-1.
    "zero_snr": dict(
        beta_schedule="squaredcos_cap_v2", rescale_betas_zero_snr=True, timestep_spacing="trailing"
    ),
}
DDIM_CASES = [
    (name, prediction_type)
    for name in DDIM_CONFIGS
    for prediction_type in VP_PREDICTIONS
    if not (name == "zero_snr" and prediction_type == "epsilon")
]


@pytest.mark.parametrize("n", [1, 7, 50])
@pytest.mark.parametrize(("config", "prediction_type"), DDIM_CASES)
def test_sample_ddim_equals_ddim_scheduler_loop(config, prediction_type, n):
    kwargs = DDIM_CONFIGS[config]
    scheduler = DDIMScheduler(**kwargs, prediction_type=prediction_type, clip_sample=False)
    scheduler.set_timesteps(n)
    noise = randn(*SHAPE, seed=3)
    x = noise.clone()
    for t in scheduler.timesteps:
        x = scheduler.step(MODEL(x, t), t, x).prev_sample

    schedule = VPSchedule.from_config(scheduler)
    timesteps = ddim_timesteps(n, 1000, kwargs["timestep_spacing"], kwargs.get("steps_offset", 0))
    ours = sample_ddim(x0_eps_denoiser(schedule, prediction_type), noise, schedule, timesteps)
    assert ours.shape == SHAPE
    assert (ours - x).abs().max() <= 1e-5


@pytest.mark.parametrize("set_alpha_to_one", [True, False])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_sample_ddim_with_exact_denoiser_follows_the_trajectory(spacing, set_alpha_to_one):
    """Data = one point x0*: the exact denoiser gives x0* and DDIM is exact on eps*."""
    schedule = VPSchedule.from_betas(set_alpha_to_one=set_alpha_to_one, dtype=torch.float64)
    x0, eps = randn(*SHAPE, dtype=torch.float64, seed=4), randn(*SHAPE, dtype=torch.float64, seed=5)
    timesteps = ddim_timesteps(10, 1000, spacing)
    seen = []

    def exact(x, t):
        a, s = append_dims(schedule.alpha(t), x.ndim), append_dims(schedule.sigma(t), x.ndim)
        assert_close(x, a * x0 + s * eps, rtol=0, atol=1e-12)  # on the trajectory
        seen.append(t[0].item())
        return x0, (x - a * x0) / s

    x_T = add_noise(schedule, x0, eps, timesteps[:1].expand(SHAPE[0]))
    out = sample_ddim(exact, x_T, schedule, timesteps)
    assert seen == timesteps.tolist()
    end = torch.full((SHAPE[0],), -1)  # both grids end past t = 0: the clean end
    assert_close(out, add_noise(schedule, x0, eps, end), rtol=0, atol=1e-12)
    if set_alpha_to_one:
        assert_close(out, x0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_ddim_step_on_flow_schedule_equals_flow_match_euler(shift):
    """For rectified flow the DDIM step is the Euler step x + (s' - s) v."""
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(6)
    schedule = schedule_from_config(scheduler)
    noise = randn(*SHAPE, seed=6)
    x = noise.clone()
    for t in scheduler.timesteps:
        x = scheduler.step(MODEL(x, t), t, x).prev_sample

    ours, ts = noise.clone(), scheduler.timesteps.tolist()
    for i, t in enumerate(ts):
        tb = torch.full((SHAPE[0],), t)
        x0, eps = to_x0_eps(MODEL(ours, tb), ours, schedule.alpha(tb), schedule.sigma(tb), "flow")
        t_next = torch.full((SHAPE[0],), ts[i + 1] if i + 1 < len(ts) else -1.0)
        ours = ddim_step(schedule, x0, eps, t_next)
    assert (ours - x).abs().max() <= 1e-5


# --- skipping-step grid ------------------------------------------------------------------


def test_skipping_step_grid_reference():
    timesteps, previous = skipping_step_grid(1000, 50)
    assert timesteps.dtype == previous.dtype == torch.long
    assert timesteps.tolist() == list(range(19, 1000, 20))  # 19, 39, ..., 999
    assert previous.tolist() == [0] + list(range(19, 980, 20))  # the previous of 19 is 0


@pytest.mark.parametrize("N", [1, 3, 4, 25, 30, 50, 100, 1000])
def test_skipping_step_grid_is_the_lcm_grid(N):
    timesteps, previous = skipping_step_grid(1000, N)
    k = 1000 // N
    assert timesteps.tolist() == [k * (i + 1) - 1 for i in range(N)]
    assert previous.tolist() == [max(t - k, 0) for t in timesteps.tolist()]
    # Sampling N steps from an N-step original schedule walks the whole grid, top down.
    assert torch.equal(consistency_timesteps(N, 1000, N), timesteps.flip(0))


@pytest.mark.parametrize("N", [0, 1001])
def test_skipping_step_grid_bad_step_count(N):
    with pytest.raises(
        ValueError, match=r"num_ode_steps must be in 1\.\.num_train_timesteps \(1000\)"
    ):
        skipping_step_grid(1000, N)


# --- consistency sampling ----------------------------------------------------------------


def test_consistency_timesteps_paper_values():
    assert consistency_timesteps(1).tolist() == [999]
    assert consistency_timesteps(2).tolist() == [999, 499]
    assert consistency_timesteps(4).tolist() == [999, 759, 499, 259]
    assert consistency_timesteps(8).tolist() == [999, 879, 759, 639, 499, 379, 259, 139]


@pytest.mark.parametrize("strength", [1.0, 0.6])
@pytest.mark.parametrize("original", [1, 4, 10, 20, 25, 50, 100, 1000])
def test_consistency_timesteps_equal_lcm_set_timesteps(original, strength):
    from_config = LCMScheduler(original_inference_steps=original)
    default = LCMScheduler()  # original_inference_steps passed to set_timesteps instead
    longest = int(original * strength)
    for n in sorted({*range(1, min(longest, 50) + 1), longest} - {0}):
        ours = consistency_timesteps(n, 1000, original, strength)
        assert ours.dtype == torch.long and len(ours) == n
        from_config.set_timesteps(n, strength=strength)
        default.set_timesteps(n, original_inference_steps=original, strength=strength)
        assert torch.equal(ours, from_config.timesteps), n
        assert torch.equal(ours, default.timesteps), n


def test_consistency_timesteps_other_num_train_timesteps():
    scheduler = LCMScheduler(num_train_timesteps=500, original_inference_steps=25)
    for n in range(1, 26):
        scheduler.set_timesteps(n)
        assert torch.equal(consistency_timesteps(n, 500, 25), scheduler.timesteps)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((51,), r"num_inference_steps must be in 1\.\.50"),
        ((0,), r"num_inference_steps must be in 1\.\.50"),
        ((26, 1000, 25), r"1\.\.25"),
        ((26, 1000, 50, 0.5), r"1\.\.25"),
        ((4, 1000, 2000), r"original_inference_steps must be in 1\.\.1000"),
        ((1, 1000, 0), r"original_inference_steps must be in 1\.\.1000"),
        ((1, 1000, 50, 0.01), "strength must leave at least one grid point"),
    ],
)
def test_consistency_timesteps_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        consistency_timesteps(*args)


LCM_CONFIGS = {
    "default": {},  # scaled_linear 0.00085..0.012, like ModelScope
    "zero_snr": dict(beta_schedule="linear", rescale_betas_zero_snr=True, set_alpha_to_one=False),
}
LCM_CASES = [
    (name, prediction_type)
    for name in LCM_CONFIGS
    for prediction_type in VP_PREDICTIONS
    if not (name == "zero_snr" and prediction_type == "epsilon")
]


@pytest.mark.parametrize(
    ("timestep_scaling", "dtype"),
    [(4.0, torch.float32), (10.0, torch.float32), (4.0, torch.float64)],
)
@pytest.mark.parametrize("n", [1, 2, 4, 8])
@pytest.mark.parametrize(("config", "prediction_type"), LCM_CASES)
def test_sample_consistency_equals_lcm_scheduler_loop(
    config, prediction_type, n, timestep_scaling, dtype
):
    scheduler = LCMScheduler(
        **LCM_CONFIGS[config], prediction_type=prediction_type, timestep_scaling=timestep_scaling
    )
    scheduler.set_timesteps(n)
    noise = randn(*SHAPE, dtype=dtype, seed=7)
    g_ref = torch.Generator().manual_seed(123)
    x = noise.clone()
    for t in scheduler.timesteps:  # as LatentConsistencyModelPipeline does
        x, denoised = scheduler.step(MODEL(x, t), t, x, generator=g_ref, return_dict=False)

    schedule = VPSchedule.from_config(scheduler)

    def x0_denoiser(x, t):
        return x0_eps_denoiser(schedule, prediction_type)(x, t)[0]

    g = torch.Generator().manual_seed(123)
    timesteps = consistency_timesteps(n)
    ours = sample_consistency(
        x0_denoiser, noise, schedule, timesteps, timestep_scaling=timestep_scaling, generator=g
    )
    assert ours.shape == SHAPE and ours.dtype == dtype
    assert torch.equal(ours, denoised)  # same arithmetic, same draws: bit for bit
    assert torch.equal(g.get_state(), g_ref.get_state())  # and the same number of draws


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 50), original=st.sampled_from([10, 25, 50, 100]))
def test_consistency_timesteps_lie_on_the_skipping_grid(n, original):
    n = min(n, original)
    grid, _ = skipping_step_grid(1000, original)
    ours = consistency_timesteps(n, 1000, original)
    assert ours[0] == grid[-1]  # always starts at the top of the grid
    assert (ours.diff() < 0).all() and torch.isin(ours, grid).all()


@pytest.mark.parametrize("top_fraction", [0.0, 0.25, 1.0])
def test_training_timesteps_put_top_fraction_extra_mass_on_the_top(top_fraction):
    # the world teacher's build (timesteps) and the distiller's proposal (grid indices)
    N, n = 10, 200_000
    t = training_timesteps(n, N, torch.Generator().manual_seed(0), "cpu", top_fraction)
    freq = torch.bincount(t, minlength=N).double() / n
    expected = torch.full((N,), (1 - top_fraction) / N, dtype=torch.float64)
    expected[-1] += top_fraction
    assert t.dtype == torch.long and int(t.min()) >= 0 and int(t.max()) < N
    assert torch.allclose(freq, expected, atol=4e-3)


def test_training_timesteps_without_top_fraction_are_a_plain_uniform_draw():
    t = training_timesteps(4000, 1000, torch.Generator().manual_seed(0), "cpu", 0.0)
    assert torch.equal(
        t, torch.randint(0, 1000, (4000,), generator=torch.Generator().manual_seed(0))
    )
    t = training_timesteps(4000, 1000, torch.Generator().manual_seed(0), "cpu", 0.5, t_min=400)
    assert t.min() >= 400 and t.max() == 999
