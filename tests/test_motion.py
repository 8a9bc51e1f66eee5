"""mcm.motion: each representation against a direct computation, the learnable head,
its EMA copy and the distances."""

import math

import pytest
import torch

from mcm.motion import (
    MOTION_REPRESENTATIONS,
    LearnableMotionHead,
    build_motion_representation,
    l2,
    pseudo_huber,
)


def _video(B=2, C=3, F=4, H=5, W=6):
    return torch.randn(B, C, F, H, W, dtype=torch.float64)


# ---- direct (loop / explicit DFT) reference computations ---------------------------


def _dft_matrix(n):
    k = torch.arange(n, dtype=torch.float64)
    return torch.exp(-2j * math.pi * k[:, None] * k[None, :] / n)


def _butterworth_direct(x, d0, order):
    """Low-pass by explicit DFT matrices and a mask built from |frequency| per index."""
    _, _, Fr, H, W = x.shape
    DF, DH, DW = (_dft_matrix(n) for n in (Fr, H, W))
    X = torch.einsum("af,bh,cw,NCfhw->NCabc", DF, DH, DW, x.to(torch.complex128))
    mask = torch.empty(Fr, H, W, dtype=torch.float64)
    for a in range(Fr):
        for b in range(H):
            for c in range(W):
                d2 = sum((2 * min(k, n - k) / n) ** 2 for k, n in ((a, Fr), (b, H), (c, W)))
                mask[a, b, c] = 1 / (1 + (math.sqrt(d2) / d0) ** (2 * order))
    Y = X * mask
    y = torch.einsum("af,bh,cw,NCabc->NCfhw", DF.conj(), DH.conj(), DW.conj(), Y) / (Fr * H * W)
    return y.real


def _corr_pair(x, b, f, i, j, i2, j2):
    C = x.shape[1]
    return float((x[b, :, f, i, j] * x[b, :, f + 1, i2, j2]).sum() / math.sqrt(C))


# ---- fixed representations ------------------------------------------------------------


def test_raw_is_identity():
    x = _video()
    assert torch.equal(build_motion_representation("raw", 3)(x), x)


def test_diff_matches_direct():
    x = _video()
    out = build_motion_representation("diff", 3)(x)
    expected = torch.stack([x[:, :, f + 1] - x[:, :, f] for f in range(x.shape[2] - 1)], dim=2)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("shape", [(1, 2, 4, 6, 5), (2, 1, 3, 4, 4)])
def test_low_and_high_frequency_match_explicit_dft(shape):
    x = torch.randn(*shape, dtype=torch.float64)
    low = build_motion_representation("lowfreq", shape[1])(x)
    high = build_motion_representation("highfreq", shape[1])(x)
    expected = _butterworth_direct(x, d0=0.25, order=4)
    torch.testing.assert_close(low, expected)
    torch.testing.assert_close(high, x - expected)
    # A non-default cut-off goes through as well.
    low2 = build_motion_representation("lowfreq", shape[1], d0=0.5, order=2)(x)
    torch.testing.assert_close(low2, _butterworth_direct(x, d0=0.5, order=2))


def test_low_frequency_keeps_a_constant_video_and_high_removes_it():
    x = torch.full((1, 2, 4, 4, 4), 3.0)
    torch.testing.assert_close(build_motion_representation("lowfreq", 2)(x), x)
    torch.testing.assert_close(
        build_motion_representation("highfreq", 2)(x), torch.zeros_like(x), atol=1e-5, rtol=0
    )


def test_global_correlation_matches_loops():
    x = _video(B=2, C=3, F=3, H=2, W=3)
    out = build_motion_representation("corr_global", 3)(x)
    B, C, Fr, H, W = x.shape
    assert out.shape == (B, Fr - 1, H * W, H * W)
    for b in range(B):
        for f in range(Fr - 1):
            for p in range(H * W):
                for q in range(H * W):
                    ref = _corr_pair(x, b, f, p // W, p % W, q // W, q % W)
                    assert out[b, f, p, q].item() == pytest.approx(ref, abs=1e-12)


def test_local_correlation_matches_loops_with_zero_outside():
    x = _video(B=1, C=3, F=3, H=4, W=5)
    r = 2
    out = build_motion_representation("corr_local", 3, radius=r)(x)
    B, C, Fr, H, W = x.shape
    K = 2 * r + 1
    assert out.shape == (B, Fr - 1, K * K, H, W)
    for f in range(Fr - 1):
        for i in range(H):
            for j in range(W):
                for dy in range(-r, r + 1):
                    for dx in range(-r, r + 1):
                        k = (dy + r) * K + (dx + r)
                        i2, j2 = i + dy, j + dx
                        inside = 0 <= i2 < H and 0 <= j2 < W
                        ref = _corr_pair(x, 0, f, i, j, i2, j2) if inside else 0.0
                        assert out[0, f, k, i, j].item() == pytest.approx(ref, abs=1e-12)


def test_local_correlation_default_radius_is_7_and_agrees_with_global():
    x = _video(B=1, C=2, F=2, H=3, W=4)
    local = build_motion_representation("corr_local", 2)(x)
    glob = build_motion_representation("corr_global", 2)(x)
    assert local.shape[2] == 15 * 15
    H, W = 3, 4
    for i in range(H):
        for j in range(W):
            for i2 in range(H):
                for j2 in range(W):
                    k = (i2 - i + 7) * 15 + (j2 - j + 7)
                    torch.testing.assert_close(
                        local[0, 0, k, i, j], glob[0, 0, i * W + j, i2 * W + j2]
                    )


@pytest.mark.parametrize("name", ["diff", "corr_local", "corr_global"])
def test_frame_pair_representations_need_two_frames(name):
    with pytest.raises(ValueError, match="at least 2 frames"):
        build_motion_representation(name, 3)(torch.randn(1, 3, 1, 4, 4))


def test_non_video_input_is_rejected():
    with pytest.raises(ValueError, match=r"\[B, C, F, H, W\]"):
        build_motion_representation("lowfreq", 3)(torch.randn(1, 3, 4, 4))


# ---- builder ---------------------------------------------------------------------------


def test_builder_names_and_parameters():
    x = torch.randn(1, 4, 3, 4, 4)
    for name in MOTION_REPRESENTATIONS:
        m = build_motion_representation(name, 4)
        n_params = sum(p.numel() for p in m.parameters())
        assert (n_params > 0) == name.startswith("learnable"), name
        assert torch.isfinite(m(x)).all()


def test_builder_rejects_unknown_name_and_bad_option():
    with pytest.raises(ValueError, match="allowed: raw, diff, lowfreq"):
        build_motion_representation("optical_flow", 4)
    with pytest.raises(ValueError, match="radius"):
        build_motion_representation("diff", 4, radius=3)


# ---- learnable head --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["learnable", "learnable_heavy"])
def test_learnable_head_starts_as_identity_and_learns(name):
    head = build_motion_representation(name, 4, hidden=8, num_groups=4)
    x = torch.randn(2, 4, 3, 6, 6)
    assert torch.equal(head(x), x)
    convs = [m for m in head.modules() if isinstance(m, torch.nn.Conv2d)]
    heavy = name == "learnable_heavy"
    assert len(convs) == (5 if heavy else 3)
    assert {c.kernel_size for c in convs} == {(3, 3) if heavy else (1, 1)}
    assert all(c.out_channels == 8 for c in convs[:-1]) and convs[-1].out_channels == 4
    assert any(isinstance(m, torch.nn.GroupNorm) for m in head.modules())
    assert any(isinstance(m, torch.nn.SiLU) for m in head.modules())

    opt = torch.optim.SGD(head.parameters(), lr=0.1)
    loss = (head(x) - 2 * x).pow(2).mean()
    loss.backward()
    assert convs[-1].weight.grad.abs().sum() > 0  # the zero-initialised layer gets gradient
    opt.step()
    assert not torch.equal(head(x), x)


def test_reference_learnable_head_is_two_convs_after_an_input_silu():
    head = LearnableMotionHead(4, hidden=32, num_layers=2, input_activation=True)
    kinds = [type(m).__name__ for m in head.residual]
    assert kinds == ["SiLU", "Conv2d", "GroupNorm", "SiLU", "Conv2d"]
    x = torch.randn(2, 4, 3, 5, 5)
    torch.testing.assert_close(head(x), x)  # identity at initialisation, as the default


def test_learnable_head_is_per_frame():
    head = LearnableMotionHead(2, hidden=8, num_groups=2, kernel_size=3, num_layers=3)
    for p in head.parameters():
        torch.nn.init.normal_(p)
    x = torch.randn(1, 2, 3, 5, 5)
    y = x.clone()
    y[:, :, 2] += 1.0
    out_x, out_y = head(x), head(y)
    torch.testing.assert_close(out_x[:, :, :2], out_y[:, :, :2])
    assert not torch.allclose(out_x[:, :, 2], out_y[:, :, 2])


def test_learnable_head_rejects_bad_config_and_input():
    with pytest.raises(ValueError, match="must divide"):
        LearnableMotionHead(4, hidden=10, num_groups=4)
    with pytest.raises(ValueError, match="odd"):
        LearnableMotionHead(4, kernel_size=2)
    with pytest.raises(ValueError, match=r"\[B, 4, F, H, W\]"):
        LearnableMotionHead(4, hidden=8, num_groups=4)(torch.randn(1, 3, 2, 4, 4))


def test_learnable_head_save_and_load(tmp_path):
    head = LearnableMotionHead(4, hidden=8, num_groups=4)
    for p in head.parameters():
        torch.nn.init.normal_(p)
    head.save_pretrained(tmp_path / "head")
    loaded = LearnableMotionHead.from_pretrained(tmp_path / "head")
    assert loaded.config == head.config
    x = torch.randn(1, 4, 2, 3, 3)
    torch.testing.assert_close(loaded(x), head(x), rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        LearnableMotionHead.from_pretrained(tmp_path / "missing")


# ---- distances -------------------------------------------------------------------------


def test_pseudo_huber_and_l2_against_hand_values():
    a = torch.tensor([[0.0, 1.0], [3.0, -4.0]])
    b = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    c = 0.001
    expected_huber = torch.tensor(
        [
            (0.0 + (math.sqrt(1 + c**2) - c)) / 2,
            ((math.sqrt(9 + c**2) - c) + (math.sqrt(16 + c**2) - c)) / 2,
        ]
    )
    torch.testing.assert_close(pseudo_huber(a, b), expected_huber)
    torch.testing.assert_close(l2(a, b), torch.tensor([0.5, 12.5]))
    # Per-sample over any trailing shape; c -> large behaves like L2 / (2c).
    x = torch.randn(3, 2, 2, 2, 2, dtype=torch.float64)
    y = torch.randn(3, 2, 2, 2, 2, dtype=torch.float64)
    assert pseudo_huber(x, y).shape == (3,)
    torch.testing.assert_close(pseudo_huber(x, y, c=1e3) * 2e3, l2(x, y), rtol=1e-3, atol=1e-9)
    with pytest.raises(ValueError, match="Shapes differ"):
        l2(x, y[:2])
