"""LoRA on the student: targets, teacher = adapters disabled, gradients, EMA, files."""

import copy

import pytest
import torch
from peft.tuners.tuners_utils import BaseTunerLayer

from mcm.models import (
    attach_lora,
    attach_lora_from_state_dict,
    copy_teacher,
    disable_adapters,
    load_lora_state_dict,
    load_teacher,
    lora_parameters,
    lora_state_dict,
    lora_target_modules,
    read_lora,
    save_lora,
)

FAMILIES = ["modelscope", "animatediff"]


def _student(tiny_dirs, family, rank=4, alpha=8, perturb=0.02):
    bundle = load_teacher(str(tiny_dirs[family]), device="cpu")
    teacher = copy.deepcopy(bundle.denoiser)
    attach_lora(bundle.denoiser, rank=rank, alpha=alpha)
    if perturb:
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in lora_parameters(bundle.denoiser):
                p.add_(torch.randn(p.shape, generator=g) * perturb)
    return bundle, teacher


def _inputs(bundle, batch=2, frames=3):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 4, frames, 16, 16, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    return x, t, bundle.text_encoder(["a red circle", "a blue square"][:batch])


def test_reference_target_modules(tiny_dirs):
    ms = load_teacher(str(tiny_dirs["modelscope"]), device="cpu").denoiser
    ad = load_teacher(str(tiny_dirs["animatediff"]), device="cpu").denoiser
    ms_names = lora_target_modules(ms.unet, "modelscope")
    ad_names = lora_target_modules(ad.unet, "animatediff")
    for names in (ms_names, ad_names):
        joined = "\n".join(names)
        for part in (
            "attn1.to_q",
            "attn2.to_k",
            "attn1.to_v",
            "to_out.0",
            "attentions.0.proj_in",
            "attentions.0.proj_out",
            "ff.net.0.proj",
            "ff.net.2",
            "resnets.0.conv1",
            "resnets.0.conv2",
            "conv_shortcut",
            "downsamplers.0.conv",
            "upsamplers.0.conv",
            "time_emb_proj",
        ):
            assert part in joined, part
        assert "conv_in" not in joined and "time_embedding" not in joined
    # ModelScope: the temporal 3-D convs are excluded, its temporal attention is not
    assert not any("temp_convs" in n for n in ms_names)
    assert any("temp_attentions" in n for n in ms_names)
    assert any(isinstance(m, torch.nn.Conv3d) for m in ms.unet.modules())
    # AnimateDiff: the motion modules' attention and feed-forward are included
    motion = [n for n in ad_names if "motion_modules" in n]
    assert any(n.endswith("attn1.to_q") for n in motion) and any("ff.net.2" in n for n in motion)
    assert not any(
        n.endswith(("motion_modules.0.proj_in", "motion_modules.0.proj_out")) for n in motion
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_disabling_adapters_gives_exactly_the_teacher(family, tiny_dirs):
    bundle, teacher = _student(tiny_dirs, family)
    den = bundle.denoiser
    x, t, emb = _inputs(bundle)
    den.train()
    with torch.no_grad():
        want = teacher.eval()(x, t, emb)
        student = den.eval()(x, t, emb)
        den.train()
        with disable_adapters(den):
            got = den(x, t, emb)
            assert not den.unet.training  # the teacher runs deterministically
        assert den.unet.training
        again = den.eval()(x, t, emb)
    assert torch.equal(got, want)
    assert (student - want).abs().max() > 1e-3  # the LoRA does change the output
    assert torch.equal(again, student)  # adapters are back on after the context
    assert all(p.requires_grad for p in lora_parameters(den))
    # a separate frozen teacher (when the config asks for one) is the same function
    sep = copy_teacher(den)
    assert not any(isinstance(m, BaseTunerLayer) for m in sep.modules())
    with torch.no_grad():
        assert torch.equal(sep(x, t, emb), want)
    assert all(not p.requires_grad for p in sep.parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_fresh_lora_is_the_teacher_and_init_is_seeded(family, tiny_dirs):
    bundle, teacher = _student(tiny_dirs, family, perturb=0.0)
    x, t, emb = _inputs(bundle)
    with torch.no_grad():
        assert torch.equal(bundle.denoiser(x, t, emb), teacher(x, t, emb))
    again = copy_teacher(bundle.denoiser)  # the same UNet without LoRA
    attach_lora(again, rank=4, alpha=8)
    for a, b in zip(lora_parameters(bundle.denoiser), lora_parameters(again), strict=True):
        assert torch.equal(a, b)  # LoRA A is drawn from a seeded generator, not the global RNG
    with pytest.raises(ValueError, match="already has LoRA"):
        attach_lora(bundle.denoiser)


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_reach_only_lora_parameters(family, tiny_dirs):
    bundle, _ = _student(tiny_dirs, family)
    den = bundle.denoiser
    x, t, emb = _inputs(bundle)
    den(x, t, emb).square().mean().backward()
    lora = {id(p) for p in lora_parameters(den)}
    assert len(lora) == 2 * len(den.lora_config["target_modules"])
    for name, p in den.named_parameters():
        if id(p) in lora:
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
            assert p.dtype == torch.float32
        else:
            assert not p.requires_grad and p.grad is None, name


def test_lora_files_round_trip_and_reject_the_other_family(tiny_dirs, tmp_path):
    bundle, _ = _student(tiny_dirs, "modelscope")
    path = save_lora(bundle.denoiser, tmp_path / "student.safetensors")
    weights, meta = read_lora(path)
    assert meta["mcm_family"] == "modelscope" and meta["lora_rank"] == "4"
    assert float(meta["lora_alpha"]) == 8.0
    sd = lora_state_dict(bundle.denoiser)
    assert weights.keys() == sd.keys() and all(torch.equal(weights[k], sd[k]) for k in sd)

    fresh = load_teacher(str(tiny_dirs["modelscope"]), device="cpu").denoiser
    attach_lora_from_state_dict(fresh, weights, alpha=8)
    x, t, emb = _inputs(bundle)
    with torch.no_grad():
        assert torch.equal(fresh(x, t, emb), bundle.denoiser(x, t, emb))

    other = load_teacher(str(tiny_dirs["animatediff"]), device="cpu").denoiser
    with pytest.raises(ValueError, match="not in this animatediff UNet"):
        attach_lora_from_state_dict(other, weights)
    attach_lora(other, rank=4, alpha=8)
    with pytest.raises(ValueError, match="other model family"):
        load_lora_state_dict(other, weights)
    with pytest.raises(FileNotFoundError, match="pytorch_lora_weights"):
        read_lora(tmp_path)
