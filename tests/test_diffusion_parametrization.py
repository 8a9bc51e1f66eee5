"""Prediction-type conversions: against diffusers' DDPM/DDIM x0 and as round trips."""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from mcm.diffusion import (
    BETA_SCHEDULES,
    PREDICTION_TYPES,
    FlowMatchingSchedule,
    VPSchedule,
    add_noise,
    eps_to_x0,
    flow_to_eps,
    flow_to_x0,
    from_x0_eps,
    to_x0_eps,
    v_to_eps,
    v_to_x0,
    x0_to_eps,
)

VP_PREDICTIONS = ("epsilon", "sample", "v_prediction")  # what diffusers' VP schedulers support
SHAPE = (2, 3, 2, 3, 3)  # [B, C, F, H, W]
T_VALUES = [0, 1, 250, 777, 998, 999]
SETTINGS = settings(max_examples=40, deadline=None)


def randn(*shape, dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def assert_max_abs(actual, expected, tol):
    """max |actual - expected| <= tol, where non-finite entries must match exactly."""
    finite = torch.isfinite(expected)
    assert torch.equal(torch.isfinite(actual), finite)
    assert torch.equal(actual[~finite], expected[~finite])
    assert ((actual - expected)[finite].abs() <= tol).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rescale", [False, True])
@pytest.mark.parametrize("beta_schedule", BETA_SCHEDULES)
@pytest.mark.parametrize("prediction_type", VP_PREDICTIONS)
def test_x0_equals_diffusers_pred_original_sample(prediction_type, beta_schedule, rescale, dtype):
    common = dict(
        beta_schedule=beta_schedule,
        prediction_type=prediction_type,
        rescale_betas_zero_snr=rescale,
        clip_sample=False,  # both default to clipping x0 to [-1, 1] otherwise
    )
    ddpm, ddim = DDPMScheduler(**common), DDIMScheduler(**common)
    ddim.set_timesteps(50)
    schedule = VPSchedule.from_config(ddpm)
    t = torch.tensor(T_VALUES)
    B = len(T_VALUES)
    x_t, out = randn(B, *SHAPE[1:], dtype=dtype, seed=1), randn(B, *SHAPE[1:], dtype=dtype, seed=2)
    x0, eps = to_x0_eps(out, x_t, schedule.alpha(t), schedule.sigma(t), prediction_type)
    assert x0.shape == eps.shape == x_t.shape and x0.dtype == eps.dtype == dtype
    g = torch.Generator().manual_seed(0)
    for i, ti in enumerate(t):
        xi, oi = x_t[i : i + 1], out[i : i + 1]
        # Zero SNR + epsilon at t = T-1 divides by alpha = 0 in both (inf/nan alike).
        assert_max_abs(x0[i : i + 1], ddpm.step(oi, ti, xi, generator=g).pred_original_sample, 1e-5)
        assert_max_abs(x0[i : i + 1], ddim.step(oi, ti, xi).pred_original_sample, 1e-5)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_unknown_prediction_type_lists_allowed(prediction_type):
    x, a = torch.zeros(SHAPE), torch.ones(SHAPE[0])
    bad = prediction_type[:3]  # "eps", "sam", "v_p", "flo"
    allowed = "allowed: epsilon, sample, v_prediction, flow"
    with pytest.raises(ValueError, match=allowed):
        to_x0_eps(x, x, a, a, bad)
    with pytest.raises(ValueError, match=allowed):
        from_x0_eps(x, x, a, a, bad)


# --- round trips (hypothesis) ------------------------------------------------------------

VP64 = {
    name: VPSchedule.from_betas(name, dtype=torch.float64) for name in BETA_SCHEDULES
}  # no zero-SNR: eps -> x0 is undefined at its last timestep
FLOW = FlowMatchingSchedule(1000)


def _alpha_sigma(schedule, t):
    return schedule.alpha(t), schedule.sigma(t)


vp_case = st.tuples(
    st.sampled_from(BETA_SCHEDULES), st.integers(-1, 999), st.sampled_from(VP_PREDICTIONS)
)
# flow: 0 < t < T keeps alpha, sigma > 0 (epsilon and sample divide by them).
FLOW_PREDICTIONS = ("epsilon", "sample", "flow")
flow_case = st.tuples(st.floats(1.0, 999.0), st.sampled_from(FLOW_PREDICTIONS))


def _schedule_t(case):
    if len(case) == 3:
        name, t, prediction_type = case
        return VP64[name], torch.tensor([t, max(t - 321, -1)]), prediction_type
    t, prediction_type = case
    return FLOW, torch.tensor([t, t / 3], dtype=torch.float64), prediction_type


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_every_prediction_type_round_trips(prediction_type):
    # Every member, on a schedule it applies to: a type added to PREDICTION_TYPES without
    # its conversions fails here, and the round trips below draw each one.
    assert prediction_type in VP_PREDICTIONS + FLOW_PREDICTIONS
    flow = prediction_type not in VP_PREDICTIONS
    schedule = FLOW if flow else VP64["scaled_linear"]
    t = torch.tensor([250.0, 700.0], dtype=torch.float64) if flow else torch.tensor([250, 700])
    alpha, sigma = _alpha_sigma(schedule, t)
    x0, eps = randn(*SHAPE, dtype=torch.float64), randn(*SHAPE, dtype=torch.float64, seed=1)
    x_t = add_noise(schedule, x0, eps, t)
    out = from_x0_eps(x0, eps, alpha, sigma, prediction_type)
    assert out.shape == x0.shape and not torch.allclose(out, x_t)
    x0_back, eps_back = to_x0_eps(out, x_t, alpha, sigma, prediction_type)
    assert_close(x0_back, x0, rtol=0, atol=1e-9)
    assert_close(eps_back, eps, rtol=0, atol=1e-9)


@SETTINGS
@given(case=st.one_of(vp_case, flow_case), seed=st.integers(0, 2**31 - 1))
def test_x0_eps_to_output_and_back(case, seed):
    schedule, t, prediction_type = _schedule_t(case)
    if prediction_type == "sample" and schedule is not FLOW and (t == -1).any():
        t = t.clamp(min=0)  # sigma(-1) = 0: eps is not recoverable from x0 at the clean end
    alpha, sigma = _alpha_sigma(schedule, t)
    x0, eps = (
        randn(*SHAPE, dtype=torch.float64, seed=seed),
        randn(*SHAPE, dtype=torch.float64, seed=seed + 1),
    )
    x_t = add_noise(schedule, x0, eps, t)
    out = from_x0_eps(x0, eps, alpha, sigma, prediction_type)
    x0_back, eps_back = to_x0_eps(out, x_t, alpha, sigma, prediction_type)
    assert_close(x0_back, x0, rtol=0, atol=1e-9)
    assert_close(eps_back, eps, rtol=0, atol=1e-9)


@SETTINGS
@given(case=st.one_of(vp_case, flow_case), seed=st.integers(0, 2**31 - 1))
def test_output_to_x0_eps_and_back(case, seed):
    schedule, t, prediction_type = _schedule_t(case)
    alpha, sigma = _alpha_sigma(schedule, t)
    if (alpha == 0).any() or (sigma == 0).any():
        t = t.clamp(min=0)
        alpha, sigma = _alpha_sigma(schedule, t)
    out, x_t = (
        randn(*SHAPE, dtype=torch.float64, seed=seed),
        randn(*SHAPE, dtype=torch.float64, seed=seed + 1),
    )
    x0, eps = to_x0_eps(out, x_t, alpha, sigma, prediction_type)
    # Whatever the output, (x0, eps) lies on the forward process through x_t ...
    assert_close(add_noise(schedule, x0, eps, t), x_t, rtol=0, atol=1e-9)
    # ... and maps back to the same output.
    assert_close(from_x0_eps(x0, eps, alpha, sigma, prediction_type), out, rtol=0, atol=1e-9)


@SETTINGS
@given(
    a=st.floats(0.05, 1.0),
    s=st.floats(0.05, 1.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_eps_x0_inverse_for_any_alpha_sigma(a, s, seed):
    alpha = torch.tensor([a, s], dtype=torch.float64)
    sigma = torch.tensor([s, a], dtype=torch.float64)
    eps, x_t = (
        randn(*SHAPE, dtype=torch.float64, seed=seed),
        randn(*SHAPE, dtype=torch.float64, seed=seed + 1),
    )
    x0 = eps_to_x0(eps, x_t, alpha, sigma)
    assert_close(x0_to_eps(x0, x_t, alpha, sigma), eps, rtol=0, atol=1e-9)


@SETTINGS
@given(t=st.integers(0, 999), seed=st.integers(0, 2**31 - 1))
def test_v_is_salimans_ho(t, seed):
    schedule = VP64["scaled_linear"]
    tt = torch.tensor([t, 999 - t])
    alpha, sigma = _alpha_sigma(schedule, tt)
    x0, eps = (
        randn(*SHAPE, dtype=torch.float64, seed=seed),
        randn(*SHAPE, dtype=torch.float64, seed=seed + 1),
    )
    a, s = alpha.view(-1, 1, 1, 1, 1), sigma.view(-1, 1, 1, 1, 1)
    v = a * eps - s * x0
    x_t = a * x0 + s * eps
    assert_close(from_x0_eps(x0, eps, alpha, sigma, "v_prediction"), v, rtol=0, atol=1e-12)
    assert_close(v_to_x0(v, x_t, alpha, sigma), x0, rtol=0, atol=1e-12)
    assert_close(v_to_eps(v, x_t, alpha, sigma), eps, rtol=0, atol=1e-12)


@SETTINGS
@given(s=st.floats(0.0, 1.0), seed=st.integers(0, 2**31 - 1))
def test_flow_is_rectified_flow_definition(s, seed):
    """x_t = (1 - s) x0 + s eps and v = eps - x0, with s = t / T."""
    x0, eps = (
        randn(*SHAPE, dtype=torch.float64, seed=seed),
        randn(*SHAPE, dtype=torch.float64, seed=seed + 1),
    )
    x_t = (1 - s) * x0 + s * eps
    v = eps - x0
    t = torch.full((SHAPE[0],), s * 1000, dtype=torch.float64)
    alpha, sigma = _alpha_sigma(FLOW, t)
    assert_close(add_noise(FLOW, x0, eps, t), x_t, rtol=0, atol=1e-12)
    assert_close(from_x0_eps(x0, eps, alpha, sigma, "flow"), v, rtol=0, atol=0)
    assert_close(flow_to_x0(v, x_t, alpha, sigma), x0, rtol=0, atol=1e-12)
    assert_close(flow_to_eps(v, x_t, alpha, sigma), eps, rtol=0, atol=1e-12)
    x0_, eps_ = to_x0_eps(v, x_t, alpha, sigma, "flow")
    assert_close(x0_, x0, rtol=0, atol=1e-12)
    assert_close(eps_, eps, rtol=0, atol=1e-12)
