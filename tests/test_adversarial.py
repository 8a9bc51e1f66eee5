"""mcm.adversarial: augmentation, frame sampling, heads and losses against hand-written
reference computations on small tensors."""

import math

import pytest
import torch

from mcm.adversarial import (
    AdaptivePenaltyWeight,
    DiscriminatorHead,
    SpectralNormConv1d,
    diff_augment,
    gradient_penalty,
    hinge_d_loss,
    hinge_g_loss,
    real_frames_from_clips,
    sample_frames,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---- differentiable augmentation -----------------------------------------------------------


def test_color_matches_hand_computation():
    x = torch.rand(3, 3, 4, 5) * 2 - 1
    out = diff_augment(x, _gen(1), "color")
    g = _gen(1)
    b, s, c = (torch.rand(3, generator=g) for _ in range(3))
    ref = torch.empty_like(x)
    for n in range(3):
        y = x[n] + (b[n] - 0.5)
        m = y.mean(dim=0, keepdim=True)
        y = (y - m) * (2 * s[n]) + m
        m = y.mean()
        ref[n] = (y - m) * (0.5 + c[n]) + m
    torch.testing.assert_close(out, ref)


def test_translation_matches_loops_and_stays_within_one_eighth():
    x = torch.randn(6, 2, 16, 24)
    out = diff_augment(x, _gen(2), "translation")
    g = _gen(2)
    ty = torch.randint(-2, 3, (6,), generator=g)
    tx = torch.randint(-3, 4, (6,), generator=g)
    for n in range(6):
        for i in range(16):
            for j in range(24):
                si, sj = i - int(ty[n]), j - int(tx[n])
                inside = 0 <= si < 16 and 0 <= sj < 24
                ref = x[n, :, si, sj] if inside else torch.zeros(2)
                assert torch.equal(out[n, :, i, j], ref)


def test_cutout_zeroes_one_clipped_square():
    x = torch.rand(5, 2, 10, 10) + 1.0  # strictly positive, so zeros come from cutout only
    out = diff_augment(x, _gen(3), "cutout")
    g = _gen(3)
    cy, cx = torch.randint(0, 10, (5,), generator=g), torch.randint(0, 10, (5,), generator=g)
    for n in range(5):
        zero = out[n, 0] == 0
        rows = [i for i in range(10) if int(cy[n]) - 1 <= i < int(cy[n]) + 1]
        cols = [j for j in range(10) if int(cx[n]) - 1 <= j < int(cx[n]) + 1]
        expected = torch.zeros(10, 10, dtype=torch.bool)
        for i in rows:
            for j in cols:
                expected[i, j] = True
        assert torch.equal(zero, expected)
        assert torch.equal(out[n][:, ~expected], x[n][:, ~expected])


def test_diff_augment_is_differentiable_deterministic_and_validated():
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    a = diff_augment(x, _gen(4))
    torch.testing.assert_close(a, diff_augment(x, _gen(4)))
    a.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert diff_augment(x, None, "") is x
    with pytest.raises(ValueError, match="allowed: color, translation, cutout"):
        diff_augment(x, _gen(), "flip")
    with pytest.raises(ValueError, match="Generator"):
        diff_augment(x, None)


# ---- frame sampling ------------------------------------------------------------------------


def test_sample_frames_same_indices_for_the_batch():
    video = torch.randn(3, 2, 6, 4, 4, requires_grad=True)
    frames, idx = sample_frames(video, 2, _gen(5), return_indices=True)
    assert frames.shape == (6, 2, 4, 4) and idx.shape == (2,) and idx[0] != idx[1]
    for b in range(3):
        for j in range(2):
            assert torch.equal(frames[b * 2 + j], video[b, :, idx[j]])
    frames.sum().backward()
    assert video.grad[:, :, idx].abs().sum() > 0
    assert sorted(video.grad.sum(dim=(0, 1, 3, 4)).nonzero().flatten().tolist()) == sorted(
        idx.tolist()
    )
    with pytest.raises(ValueError, match="k must lie in 1..6"):
        sample_frames(video, 7, _gen())


def test_real_frames_from_clips_one_frame_per_half():
    video = torch.randn(2, 1, 5, 2, 2)
    seen = [set(), set()]
    for seed in range(60):
        frames, idx = real_frames_from_clips(video, _gen(seed), return_indices=True)
        assert frames.shape == (4, 1, 2, 2)
        for b in range(2):
            assert 0 <= idx[b, 0] < 2 <= idx[b, 1] < 5
            assert torch.equal(frames[2 * b], video[b, :, idx[b, 0]])
            assert torch.equal(frames[2 * b + 1], video[b, :, idx[b, 1]])
            seen[0].add(int(idx[b, 0]))
            seen[1].add(int(idx[b, 1]))
    assert seen == [{0, 1}, {2, 3, 4}]
    with pytest.raises(ValueError, match="at least 2 frames"):
        real_frames_from_clips(video[:, :, :1], _gen())


# ---- losses --------------------------------------------------------------------------------


def test_hinge_losses_against_hand_values():
    real = torch.tensor([[2.0, 0.5], [-1.0, 1.0]])
    fake = torch.tensor([[-2.0, 0.0], [0.5, -0.5]])
    # relu(1 - real): 0, 0.5, 2, 0 -> 0.625; relu(1 + fake): 0, 1, 1.5, 0.5 -> 0.75
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.625 + 0.75)
    # -mean(fake) = -(-2 + 0 + 0.5 - 0.5) / 4
    assert hinge_g_loss(fake).item() == pytest.approx(0.5)


def test_gradient_penalty_linear_critic_closed_form():
    w = [torch.randn(3), torch.randn(5)]
    real = [torch.randn(2, 4, 3), torch.randn(2, 2, 5)]
    fake = [torch.randn(2, 4, 3), torch.randn(2, 2, 5)]
    cond = torch.zeros(2, 1)

    def critic(feats, c):
        return torch.cat([f @ wi for f, wi in zip(feats, w)], dim=1)  # (N, 6)

    # Score = mean over the 6 tokens: each token's gradient is w_i / 6.
    norm = math.sqrt((4 * w[0].pow(2).sum() + 2 * w[1].pow(2).sum()).item()) / 6
    gp = gradient_penalty(critic, real, fake, cond, cond, _gen())
    assert gp.item() == pytest.approx((norm - 1) ** 2, rel=1e-5)


def test_gradient_penalty_sum_reduction_scales_the_gradient_by_the_token_count():
    # the reference's sum over a sample's L logits: the same penalty as the mean form of a
    # critic L times larger
    real, fake = [torch.randn(2, 4, 3)], [torch.randn(2, 4, 3)]
    cond = torch.zeros(2, 1)
    w = torch.randn(3)

    def critic(feats, c):
        return feats[0] @ w  # (N, 4)

    def scaled(feats, c):
        return 4 * critic(feats, c)

    gp_sum = gradient_penalty(critic, real, fake, cond, cond, _gen(), reduction="sum")
    torch.testing.assert_close(gp_sum, gradient_penalty(scaled, real, fake, cond, cond, _gen()))
    with pytest.raises(ValueError, match="reduction"):
        gradient_penalty(critic, real, fake, cond, cond, _gen(), reduction="max")


def test_gradient_penalty_interpolates_features_and_condition():
    real, fake = [torch.randn(3, 4, 2)], [torch.randn(3, 4, 2)]
    rc, fc = torch.randn(3, 2), torch.randn(3, 2)

    def critic(feats, c):
        return feats[0].pow(2).sum(-1) * c.sum(-1, keepdim=True)  # (N, 4)

    gp = gradient_penalty(critic, real, fake, rc, fc, _gen(7))
    u = torch.rand(3, generator=_gen(7))
    ref = 0.0
    for n in range(3):
        f_hat = u[n] * real[0][n] + (1 - u[n]) * fake[0][n]
        c_hat = u[n] * rc[n] + (1 - u[n]) * fc[n]
        grad = 2 * f_hat * c_hat.sum() / 4
        ref += (grad.norm() - 1) ** 2 / 3
    torch.testing.assert_close(gp, ref)
    with pytest.raises(ValueError, match="same size"):
        gradient_penalty(critic, real, [torch.randn(3, 5, 2)], rc, fc, _gen())


def test_adaptive_penalty_weight_schedule_and_state():
    w = AdaptivePenaltyWeight()
    assert w.update(50.0, step=0) == pytest.approx(1e-5)
    assert w.update(150.0, step=10) == pytest.approx(5e-5)
    assert w.update(150.0, step=400) == pytest.approx(5e-5)  # within 500 steps of the last
    assert w.update(150.0, step=510) == pytest.approx(2.5e-4)
    assert w.update(99.0, step=2000) == pytest.approx(2.5e-4)
    restored = AdaptivePenaltyWeight()
    restored.load_state_dict(w.state_dict())
    assert restored.update(150.0, step=1000) == pytest.approx(2.5e-4)
    assert restored.update(150.0, step=1010) == pytest.approx(1.25e-3)


# ---- heads ---------------------------------------------------------------------------------


def test_head_projection_conditioning_formula():
    head = DiscriminatorHead(in_channels=6, text_dim=5, hidden=8, cmap_dim=4, kernel_size=3)
    tokens, text = torch.randn(2, 7, 6), torch.randn(2, 5)
    captured = {}
    head.to_cmap.register_forward_hook(lambda m, i, o: captured.update(feat=o))
    logits = head(tokens, text)
    assert logits.shape == (2, 7)
    feat = captured["feat"]  # (N, 4, L)
    cond = text @ head.text_proj.weight.T + head.text_proj.bias
    ref = torch.stack(
        [
            torch.stack([(feat[n, :, tok] * cond[n]).sum() / 2.0 for tok in range(7)])
            for n in range(2)
        ]
    )
    torch.testing.assert_close(logits, ref)


def test_reference_head_scales_the_residual_and_pads_circularly():
    torch.manual_seed(0)
    head = DiscriminatorHead(6, 5, hidden=8, cmap_dim=4, kernel_size=3, style="reference").eval()
    tokens, text = torch.randn(2, 7, 6), torch.randn(2, 5)
    captured = {}
    head.to_cmap.register_forward_hook(lambda m, i, o: captured.update(h=i[0]))
    head(tokens, text)
    h = head.stem(tokens.transpose(1, 2))  # (N, 8, L)
    conv, norm = head.residual[0], head.residual[1]
    padded = torch.cat([h[..., -1:], h, h[..., :1]], dim=-1)  # circular, one each side
    weight = conv.normalized_weight()  # W / sigma
    r = torch.nn.functional.leaky_relu(norm(torch.conv1d(padded, weight, conv.bias)), 0.2)
    torch.testing.assert_close(captured["h"], (h + r) / math.sqrt(2))
    with pytest.raises(ValueError, match="style"):
        DiscriminatorHead(6, 5, style="stylegan")


def test_unconditional_head_ignores_the_caption():
    # conditional=False: a trainable vector replaces W e_n, so text cannot separate real
    # from fake (the shortcut measured on the world's image vs video captions).
    head = DiscriminatorHead(6, 5, hidden=8, cmap_dim=4, kernel_size=3, conditional=False)
    assert not hasattr(head, "text_proj")
    head.eval()
    tokens = torch.randn(2, 7, 6)
    captured = {}
    head.to_cmap.register_forward_hook(lambda m, i, o: captured.update(feat=o))
    logits = head(tokens, torch.randn(2, 5))
    torch.testing.assert_close(head(tokens, torch.randn(2, 5)), logits)
    ref = torch.einsum("ncl,c->nl", captured["feat"], head.cond) / 2.0
    torch.testing.assert_close(logits, ref)
    logits.sum().backward()
    assert head.cond.grad is not None and head.cond.grad.abs().sum() > 0


def test_head_layers_are_spectrally_normalised_and_per_sample():
    head = DiscriminatorHead(in_channels=6, text_dim=5, hidden=8, cmap_dim=4, kernel_size=3)
    tokens, text = torch.randn(3, 7, 6), torch.randn(3, 5)
    for _ in range(30):  # power iterations run in train mode
        head(tokens, text)
    convs = [m for m in head.modules() if isinstance(m, SpectralNormConv1d)]
    assert len(convs) == 3
    for conv in convs:
        sigma = torch.linalg.matrix_norm(conv.normalized_weight().flatten(1), ord=2)
        assert sigma.item() == pytest.approx(1.0, abs=1e-3)
    head.eval()
    out = head(tokens, text)
    changed = tokens.clone()
    changed[1] += 1.0
    out2 = head(changed, text)
    torch.testing.assert_close(out[0], out2[0])
    torch.testing.assert_close(out[2], out2[2])
    assert not torch.allclose(out[1], out2[1])
    assert not torch.allclose(head(tokens, text + 1.0), out)
    with pytest.raises(ValueError, match="kernel_size odd"):
        DiscriminatorHead(6, 5, kernel_size=4)


@pytest.mark.parametrize("kernel_size,padding_mode", [(1, "zeros"), (3, "zeros"), (5, "circular")])
def test_spectral_conv_is_torchs_spectral_norm_conv(kernel_size, padding_mode):
    # The same draws at construction, outputs, power-method steps and gradients as torch's
    # spectral_norm(nn.Conv1d) (one unfolded matrix product, sigma dividing the output),
    # and a state dict of torch's parametrization loads.
    torch.manual_seed(0)
    ours = SpectralNormConv1d(6, 8, kernel_size, padding_mode)
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(6, 8, kernel_size, padding=kernel_size // 2, padding_mode=padding_mode)
    ref = torch.nn.utils.parametrizations.spectral_norm(conv)
    sn = ref.parametrizations.weight
    assert torch.equal(ours.weight, sn.original) and torch.equal(ours.bias, ref.bias)
    assert torch.equal(ours.u, sn[0]._u) and torch.equal(ours.v, sn[0]._v)
    x = torch.randn(3, 6, 7)
    for _ in range(3):  # training mode: a power-method step per call
        x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        out, want = ours(x1), ref(x2)
        torch.testing.assert_close(out, want)
        torch.testing.assert_close(ours.u, sn[0]._u)
        weights = torch.randn_like(out)
        got = torch.autograd.grad((out * weights).sum(), [x1, ours.weight, ours.bias])
        expected = torch.autograd.grad((want * weights).sum(), [x2, sn.original, ref.bias])
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b)
    torch.testing.assert_close(ours.normalized_weight(), ref.weight)
    legacy = SpectralNormConv1d(6, 8, kernel_size, padding_mode)
    legacy.load_state_dict(ref.state_dict())
    torch.testing.assert_close(legacy.eval()(x), ref.eval()(x))
    with pytest.raises(ValueError, match="odd"):
        SpectralNormConv1d(6, 8, 4)
    with pytest.raises(ValueError, match="padding_mode"):
        SpectralNormConv1d(6, 8, 3, "reflect")
