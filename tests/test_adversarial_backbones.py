"""mcm.adversarial backbones and the frame discriminator on tiny real models (a random
DINOv2 from a Dinov2Config, a tiny diffusers UNet3DConditionModel): contracts and where
gradients flow (backbone frozen; only the heads get L_D; fakes get L_G's gradient)."""

import copy

import pytest
import torch
from diffusers import UNet3DConditionModel
from transformers import Dinov2Config, Dinov2Model

from mcm.adversarial import (
    AdaptivePenaltyWeight,
    DinoV2Backbone,
    FrameDiscriminator,
    LatentUNetBackbone,
    hinge_d_loss,
    hinge_g_loss,
    sample_frames,
)
from mcm.diffusion import VPSchedule, add_noise

TEXT_DIM = 8


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _dino_config():
    return Dinov2Config(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=4,
        image_size=16,
    )


@pytest.fixture
def tiny_unet():
    unet = UNet3DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        layers_per_block=1,
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    return unet.requires_grad_(False).eval()


def encoder_features(unet):
    """features_fn contract on a real UNet: outputs of its down blocks, [N, C_i, 1, h_i, w_i]."""

    def fn(x_t, t, text_emb):
        out = []
        hooks = [
            b.register_forward_hook(lambda m, i, o: out.append(o[0])) for b in unet.down_blocks
        ]
        try:
            unet(x_t, t, encoder_hidden_states=text_emb)
        finally:
            for h in hooks:
                h.remove()
        # With one frame, the UNet's folded (batch * frames) axis is the batch.
        return [o.unsqueeze(2) for o in out]

    return fn


def _snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def _assert_unchanged(module, snapshot):
    for k, v in module.state_dict().items():
        assert torch.equal(v, snapshot[k]), k


# ---- DINOv2 backbone --------------------------------------------------------------------------


def test_dino_taps_match_direct_model_call():
    reference = Dinov2Model(_dino_config()).eval()
    backbone = DinoV2Backbone(copy.deepcopy(reference), taps=(1, 3), image_size=16)
    frames = torch.rand(2, 3, 16, 16) * 2 - 1
    feats = backbone(frames)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    hidden = reference(
        pixel_values=((frames + 1) / 2 - mean) / std, output_hidden_states=True
    ).hidden_states
    assert backbone.channels == [32, 32]
    for f, tap in zip(feats, (1, 3)):
        assert f.shape == (2, 16, 32)  # (16/4)^2 patch tokens, CLS dropped
        torch.testing.assert_close(f, hidden[tap + 1][:, 1:])


def test_dino_resizes_loads_from_a_path_and_validates(tmp_path):
    Dinov2Model(_dino_config()).save_pretrained(tmp_path / "dino")
    backbone = DinoV2Backbone(str(tmp_path / "dino"), taps=(0, 2), image_size=8)
    feats = backbone(torch.rand(3, 3, 20, 12) * 2 - 1)
    assert [f.shape for f in feats] == [(3, 4, 32), (3, 4, 32)]
    assert all(not p.requires_grad for p in backbone.parameters())
    with pytest.raises(FileNotFoundError, match="DINOv2"):
        DinoV2Backbone(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="taps"):
        DinoV2Backbone(_dino_config(), taps=(4,), image_size=16)
    with pytest.raises(ValueError, match="multiple of the patch size 4"):
        DinoV2Backbone(_dino_config(), taps=(1,), image_size=18)


def test_dino_discriminator_gradients_flow_only_where_intended():
    torch.manual_seed(0)
    disc = FrameDiscriminator(
        DinoV2Backbone(_dino_config(), taps=(1, 3), image_size=16),
        TEXT_DIM,
        hidden=16,
        cmap_dim=8,
        kernel_size=3,
    )
    disc.train()
    assert not disc.backbone.training  # frozen backbone stays in eval mode
    trainable = {id(p) for p in disc.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in disc.head_parameters()} and trainable
    # A tiny "student" producing fake frames, so we can see where L_D / L_G gradients go.
    student = torch.nn.Conv2d(3, 3, 3, padding=1)
    z = torch.randn(4, 3, 16, 16)
    real, e_real, e_fake = torch.rand(4, 3, 16, 16) * 2 - 1, torch.randn(4, 8), torch.randn(4, 8)
    backbone_before = _snapshot(disc.backbone)
    opt_d = torch.optim.Adam(disc.head_parameters(), lr=1e-2)
    g = _gen(1)

    # Discriminator step (features under no_grad: the backbone is frozen).
    fake = torch.tanh(student(z))
    with torch.no_grad():
        f_real, f_fake = disc.features(real, g), disc.features(fake.detach(), g)
    loss_d = hinge_d_loss(disc.logits(f_real, e_real), disc.logits(f_fake, e_fake))
    gp = disc.gradient_penalty(f_real, f_fake, e_real, e_fake, g)
    weight = AdaptivePenaltyWeight().update(gp.item(), step=0)
    (loss_d + weight * gp).backward()
    assert all(p.grad is not None for p in disc.head_parameters())
    assert sum(p.grad.abs().sum() for p in disc.head_parameters()) > 0
    assert all(p.grad is None for p in disc.backbone.parameters())
    assert all(p.grad is None for p in student.parameters())
    heads_before = [p.clone() for p in disc.head_parameters()]
    opt_d.step()
    _assert_unchanged(disc.backbone, backbone_before)
    assert any(not torch.equal(a, b) for a, b in zip(heads_before, disc.head_parameters()))

    # Generator step: gradient reaches the fake frames through the frozen backbone; with
    # the heads switched off, L_G leaves nothing on D.
    opt_d.zero_grad(set_to_none=True)
    disc.requires_grad_heads(False)
    fake = torch.tanh(student(z))
    fake.retain_grad()
    loss_g = hinge_g_loss(disc(fake, e_fake, g))
    loss_g.backward()
    disc.requires_grad_heads(True)
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in disc.parameters())
    assert all(p.requires_grad for p in disc.head_parameters())
    _assert_unchanged(disc.backbone, backbone_before)


def test_discriminator_is_deterministic_given_the_generator_and_checkpoints_heads_only():
    disc = FrameDiscriminator(
        DinoV2Backbone(_dino_config(), taps=(2,), image_size=16), TEXT_DIM, hidden=8, cmap_dim=4
    ).eval()
    frames, text = torch.rand(2, 3, 16, 16) * 2 - 1, torch.randn(2, 8)
    out = disc(frames, text, _gen(3))
    assert out.shape == (2, 16)
    torch.testing.assert_close(disc(frames, text, _gen(3)), out)
    assert not torch.allclose(disc(frames, text, _gen(4)), out)
    with pytest.raises(ValueError, match="Generator"):
        disc(frames, text)
    disc(frames, text, augment=False)  # no augmentation needs no generator
    state = disc.head_state_dict()
    assert state and all(k.split(".")[0].isdigit() for k in state)
    other = FrameDiscriminator(
        DinoV2Backbone(_dino_config(), taps=(2,), image_size=16), TEXT_DIM, hidden=8, cmap_dim=4
    ).eval()
    other.backbone.load_state_dict(disc.backbone.state_dict())
    other.load_head_state_dict(state)
    torch.testing.assert_close(
        other(frames, text, augment=False), disc(frames, text, augment=False)
    )


# ---- latent (teacher UNet encoder) backbone ---------------------------------------------------


def test_latent_backbone_noises_with_generator_and_flattens_tokens(tiny_unet):
    schedule = VPSchedule.from_betas()
    fn = encoder_features(tiny_unet)
    backbone = LatentUNetBackbone(fn, schedule, t_range=(100, 200), channels=[16, 32])
    assert list(backbone.parameters()) == [] and backbone.state_dict() == {}
    frames, text = torch.randn(3, 4, 8, 8), torch.randn(3, 5, TEXT_DIM)
    feats = backbone(frames, text, _gen(5))
    g = _gen(5)
    t = torch.randint(100, 201, (3,), generator=g)
    eps = torch.randn(frames.shape, generator=g)
    direct = fn(add_noise(schedule, frames, eps, t).unsqueeze(2), t, text)
    assert [f.shape for f in feats] == [(3, 16, 16), (3, 16, 32)]
    for f, d in zip(feats, direct):
        torch.testing.assert_close(f, d.flatten(2).transpose(1, 2))
    assert ((t >= 100) & (t <= 200)).all()


def test_latent_backbone_channels_probe_and_validation(tiny_unet):
    schedule = VPSchedule.from_betas()
    backbone = LatentUNetBackbone(encoder_features(tiny_unet), schedule)
    with pytest.raises(ValueError, match="probe_channels"):
        FrameDiscriminator(backbone, TEXT_DIM)
    assert backbone.probe_channels(torch.randn(1, 4, 8, 8), torch.randn(1, 5, 8)) == [16, 32]
    assert len(FrameDiscriminator(backbone, TEXT_DIM, hidden=8).heads) == 2
    with pytest.raises(ValueError, match="t_range"):
        LatentUNetBackbone(encoder_features(tiny_unet), schedule, t_range=(0, 1000))
    with pytest.raises(ValueError, match="text_emb"):
        backbone(torch.randn(1, 4, 8, 8), None, _gen())
    # With a null (empty-prompt) context the backbone runs without per-frame text.
    null = torch.randn(1, 5, TEXT_DIM)
    unconditional = LatentUNetBackbone(encoder_features(tiny_unet), schedule, null_text_emb=null)
    assert unconditional.probe_channels(torch.randn(2, 4, 8, 8)) == [16, 32]
    frames = torch.randn(2, 4, 8, 8)
    for a, b in zip(
        unconditional(frames, generator=_gen(1)),
        unconditional(frames, null.expand(2, -1, -1), _gen(1)),
    ):
        torch.testing.assert_close(a, b)


def test_latent_discriminator_gradients_flow_only_where_intended(tiny_unet):
    torch.manual_seed(0)
    backbone = LatentUNetBackbone(
        encoder_features(tiny_unet), VPSchedule.from_betas(), channels=[16, 32]
    )
    disc = FrameDiscriminator(
        backbone, TEXT_DIM, hidden=8, cmap_dim=8, kernel_size=3, augment_policy="translation,cutout"
    )
    unet_before = _snapshot(tiny_unet)
    student = torch.nn.Conv3d(4, 4, 1)
    z = torch.randn(2, 4, 3, 8, 8)
    text = torch.randn(2, 5, TEXT_DIM)
    pooled = text.mean(dim=1)
    real = torch.randn(4, 4, 8, 8)
    g = _gen(2)
    opt_d = torch.optim.Adam(disc.head_parameters(), lr=1e-2)

    video = student(z)  # [B, C, F, h, w] latents of the student
    fake = sample_frames(video, 2, g)  # [B*2, C, h, w]
    e_full, e_pooled = text.repeat_interleave(2, 0), pooled.repeat_interleave(2, 0)
    with torch.no_grad():
        f_real = disc.features(real, g, text_emb=e_full)
        f_fake = disc.features(fake.detach(), g, text_emb=e_full)
    loss_d = hinge_d_loss(disc.logits(f_real, e_pooled), disc.logits(f_fake, e_pooled))
    loss_d = loss_d + 1e-5 * disc.gradient_penalty(f_real, f_fake, e_pooled, e_pooled, g)
    loss_d.backward()
    assert all(p.grad is not None for p in disc.head_parameters())
    assert all(p.grad is None for p in tiny_unet.parameters())
    assert all(p.grad is None for p in student.parameters())
    opt_d.step()
    opt_d.zero_grad(set_to_none=True)

    fake.retain_grad()
    loss_g = hinge_g_loss(disc(fake, e_pooled, g, text_emb=e_full))
    loss_g.backward()
    assert fake.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in tiny_unet.parameters())
    _assert_unchanged(tiny_unet, unet_before)


@pytest.mark.parametrize("backbone", ["dinov2", "latent"])
def test_features_of_batches_are_successive_features_calls(backbone, tiny_unet):
    # FrameDiscriminator.features_of: the draws of successive features() calls (each
    # batch's augmentation, then its backbone noise), one backbone call for batches of one
    # frame size, one call each otherwise.
    if backbone == "dinov2":
        net = DinoV2Backbone(_dino_config(), taps=(1, 3), image_size=16)
        sizes = [(3, 16, 16), (3, 16, 16), (3, 32, 32)]
    else:
        null = torch.randn(1, 5, TEXT_DIM)
        net = LatentUNetBackbone(
            encoder_features(tiny_unet), VPSchedule.from_betas(), null_text_emb=null
        )
        net.probe_channels(torch.zeros(1, 4, 8, 8))
        sizes = [(4, 8, 8), (4, 8, 8), (4, 16, 16)]
    disc = FrameDiscriminator(net, TEXT_DIM, hidden=8, cmap_dim=4, kernel_size=3)
    calls = []
    encode = net.encode
    net.encode = lambda *a, **k: calls.append(a[0].shape[0]) or encode(*a, **k)
    groups = [torch.randn(n, *size) for n, size in zip((2, 3, 2), sizes)]
    for batches, n_calls in ((groups[:2], 1), (groups, 3)):
        calls.clear()
        got = disc.features_of(batches, _gen(7))
        assert len(calls) == n_calls
        g = _gen(7)
        with torch.no_grad():
            want = [disc.features(frames, g) for frames in batches]
        for got_batch, want_batch in zip(got, want):
            for a, b in zip(got_batch, want_batch):
                torch.testing.assert_close(a, b)
