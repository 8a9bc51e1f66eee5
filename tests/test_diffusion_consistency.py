"""Consistency boundary scalings and guidance, against LCMScheduler and closed forms."""

import math

import pytest
import torch
from diffusers import LCMScheduler
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from mcm.diffusion import (
    cfg_guidance,
    consistency_output,
    consistency_scalings,
    guidance_scale_embedding,
    lcm_guidance,
)

SHAPE = (3, 4, 2, 3, 3)  # [B, C, F, H, W]
SETTINGS = settings(max_examples=40, deadline=None)


def randn(*shape, dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --- boundary scalings -------------------------------------------------------------------


@pytest.mark.parametrize("timestep_scaling", [4.0, 10.0])
def test_scalings_equal_lcm_scheduler(timestep_scaling):
    scheduler = LCMScheduler(timestep_scaling=timestep_scaling)
    t = torch.arange(1000)
    c_skip, c_out = consistency_scalings(t, sigma_data=0.5, timestep_scaling=timestep_scaling)
    assert c_skip.shape == c_out.shape == (1000,) and c_skip.dtype == torch.float32
    ref = [scheduler.get_scalings_for_boundary_condition_discrete(ti) for ti in t]
    # With a tensor timestep (what the LCM pipeline passes) diffusers computes in float32
    # with the same operations: bit for bit.
    assert torch.equal(c_skip, torch.stack([r[0] for r in ref]))
    assert torch.equal(c_out, torch.stack([r[1] for r in ref]))
    # With a Python int it computes in float64.
    ref_int = [scheduler.get_scalings_for_boundary_condition_discrete(int(ti)) for ti in t]
    assert_close(
        c_skip.double(),
        torch.tensor([r[0] for r in ref_int], dtype=torch.float64),
        rtol=0,
        atol=1e-6,
    )
    assert_close(
        c_out.double(),
        torch.tensor([r[1] for r in ref_int], dtype=torch.float64),
        rtol=0,
        atol=1e-6,
    )


@pytest.mark.parametrize("dtype", [torch.long, torch.float32, torch.float64])
@pytest.mark.parametrize("sigma_data", [0.5, 1.0])
@pytest.mark.parametrize("timestep_scaling", [1.0, 4.0, 10.0])
def test_boundary_condition(timestep_scaling, sigma_data, dtype):
    """c_skip(0) = 1 and c_out(0) = 0 exactly, so f(x, 0) = x."""
    t = torch.zeros(SHAPE[0], dtype=dtype)
    c_skip, c_out = consistency_scalings(t, sigma_data, timestep_scaling)
    assert (c_skip == 1).all() and (c_out == 0).all()
    assert c_skip.dtype == (torch.float32 if dtype == torch.long else dtype)
    x, x0 = randn(*SHAPE, seed=1), randn(*SHAPE, seed=2)
    assert torch.equal(consistency_output(x, x0, c_skip, c_out), x)


def test_scalings_reference_values():
    # s = 4 (reference MCM), sigma_data = 0.5, t = 999: s t = 3996.
    c_skip, c_out = consistency_scalings(torch.tensor([999]), 0.5, 4.0)
    assert_close(c_skip, torch.tensor([0.25 / (3996**2 + 0.25)]))
    assert_close(c_out, torch.tensor([3996 / math.sqrt(3996**2 + 0.25)]))


@SETTINGS
@given(
    t=st.floats(0.0, 1000.0),
    sigma_data=st.floats(0.1, 2.0),
    timestep_scaling=st.floats(0.5, 20.0),
)
def test_scalings_properties(t, sigma_data, timestep_scaling):
    tt = torch.tensor([t, t / 2], dtype=torch.float64)
    c_skip, c_out = consistency_scalings(tt, sigma_data, timestep_scaling)
    # Closed forms, and c_skip + c_out^2 = 1.
    st_ = timestep_scaling * tt
    assert_close(c_skip, sigma_data**2 / (st_**2 + sigma_data**2), rtol=1e-12, atol=0)
    assert_close(c_out, st_ / (st_**2 + sigma_data**2).sqrt(), rtol=1e-12, atol=0)
    assert_close(c_skip + c_out**2, torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-12)
    assert ((c_skip > 0) & (c_skip <= 1) & (c_out >= 0) & (c_out < 1)).all()
    assert c_skip[0] <= c_skip[1] and c_out[0] >= c_out[1]  # monotone in t


def test_consistency_output_broadcasts_per_sample():
    x, x0 = randn(*SHAPE, seed=1), randn(*SHAPE, seed=2)
    c_skip, c_out = torch.tensor([1.0, 0.5, 0.0]), torch.tensor([0.0, 0.25, 1.0])
    out = consistency_output(x, x0, c_skip, c_out)
    assert out.shape == SHAPE
    for i in range(SHAPE[0]):
        assert_close(out[i], c_skip[i] * x[i] + c_out[i] * x0[i], rtol=0, atol=0)


# --- guidance ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("w", [0.0, 7.5, torch.tensor([5.0, 9.25, 15.0])])
def test_lcm_guidance_equals_cfg_with_one_plus_w(w, dtype):
    cond, uncond = randn(*SHAPE, dtype=dtype, seed=1), randn(*SHAPE, dtype=dtype, seed=2)
    ours = lcm_guidance(cond, uncond, w)
    assert ours.shape == SHAPE and ours.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert_close(ours, cfg_guidance(cond, uncond, 1 + w), rtol=0, atol=tol)
    w_b = torch.as_tensor(w, dtype=dtype).expand(SHAPE[0]).reshape(-1, 1, 1, 1, 1)
    assert_close(ours, cond + w_b * (cond - uncond), rtol=0, atol=tol)


def test_guidance_edge_scales():
    cond, uncond = randn(*SHAPE, seed=1), randn(*SHAPE, seed=2)
    assert torch.equal(lcm_guidance(cond, uncond, 0.0), cond)
    assert torch.equal(cfg_guidance(cond, uncond, 0.0), uncond)
    assert_close(cfg_guidance(cond, uncond, 1.0), cond)


@SETTINGS
@given(
    w=st.lists(st.floats(0.0, 20.0), min_size=SHAPE[0], max_size=SHAPE[0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_lcm_guidance_per_sample_w(w, seed):
    cond = randn(*SHAPE, dtype=torch.float64, seed=seed)
    uncond = randn(*SHAPE, dtype=torch.float64, seed=seed + 1)
    w = torch.tensor(w, dtype=torch.float64)
    ours = lcm_guidance(cond, uncond, w)
    for i in range(SHAPE[0]):
        assert_close(ours[i], lcm_guidance(cond[i : i + 1], uncond[i : i + 1], float(w[i]))[0])
    assert_close(ours, cfg_guidance(cond, uncond, 1 + w), rtol=0, atol=1e-12)


def _embedding_formula(w, dim, scale=1000.0):
    """e[b, j] = sin(scale w_b f_j), e[b, h + j] = cos(scale w_b f_j), f_j = 10000^(-j/(h-1))."""
    h = dim // 2
    out = torch.zeros(len(w), dim, dtype=torch.float64)
    for b, wb in enumerate(w.tolist()):
        for j in range(h):
            arg = scale * wb * 10000.0 ** (-j / (h - 1))
            out[b, j], out[b, h + j] = math.sin(arg), math.cos(arg)
    return out


@pytest.mark.parametrize("dim", [4, 9, 256])
def test_guidance_scale_embedding_formula(dim):
    w = torch.tensor(
        [0.0, 0.0004, -0.0031, 0.0125]
    )  # |scale w| <= 12.5: float32 args exact to 1e-6
    emb = guidance_scale_embedding(w, dim)
    assert emb.shape == (4, dim) and emb.dtype == torch.float32
    assert_close(emb.double(), _embedding_formula(w, dim), rtol=0, atol=1e-5)
    # Training-range scales (w ~ U[5, 15], args up to 1.5e4): float32 rounding of the argument
    # bounds the error by about |arg| * 2^-23 ~ 2e-3.
    w = torch.tensor([5.0, 9.7, 15.0])
    assert_close(
        guidance_scale_embedding(w, dim).double(), _embedding_formula(w, dim), rtol=0, atol=4e-3
    )
    if dim % 2:
        assert (emb[:, -1] == 0).all()
    h = dim // 2
    assert_close(emb[:, :h] ** 2 + emb[:, h : 2 * h] ** 2, torch.ones(4, h))


def test_guidance_scale_embedding_equals_diffusers_lcm_pipeline():
    from diffusers import LatentConsistencyModelPipeline

    w = torch.tensor([5.0, 7.5, 14.25]) - 1.0  # the pipeline embeds guidance_scale - 1
    for dim in (256, 9):
        ref = LatentConsistencyModelPipeline.get_guidance_scale_embedding(
            None, w, embedding_dim=dim
        )
        assert torch.equal(guidance_scale_embedding(w, dim), ref)


@pytest.mark.parametrize(
    ("w", "dim", "message"),
    [
        (torch.ones(2), 3, "dim must be at least 4"),
        (torch.tensor(7.5), 256, r"w must have shape \[B\]"),
        (torch.ones(2, 1), 256, r"w must have shape \[B\]"),
    ],
)
def test_guidance_scale_embedding_bad_arguments(w, dim, message):
    with pytest.raises(ValueError, match=message):
        guidance_scale_embedding(w, dim)
