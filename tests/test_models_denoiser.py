"""VideoDenoiser adapters, TextEncoder, VideoVAE and load_teacher on tiny real pipelines."""

import json

import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, DiffusionPipeline, UNet2DModel

from mcm.diffusion import VPSchedule
from mcm.models import (
    AnimateDiffDenoiser,
    ModelScopeDenoiser,
    TeacherBundle,
    attach_lora,
    detect_family,
    disable_adapters,
    load_teacher,
    lora_parameters,
    resolve_dtype,
)

FAMILIES = ["modelscope", "animatediff"]


def _inputs(batch=2, frames=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, frames, 16, 16, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    return x, t


@pytest.mark.parametrize("family", FAMILIES)
def test_load_teacher_bundle(family, tiny_dirs):
    bundle = load_teacher(str(tiny_dirs[family]), device="cpu")
    assert isinstance(bundle, TeacherBundle) and bundle.family == family
    cls = {"modelscope": ModelScopeDenoiser, "animatediff": AnimateDiffDenoiser}[family]
    assert isinstance(bundle.denoiser, cls) and bundle.denoiser.family == family
    assert bundle.denoiser.prediction_type == "epsilon"
    assert bundle.scheduler_config["_class_name"] == "DDIMScheduler"
    # the schedule is the scheduler's own alpha_bar table
    pipe = DiffusionPipeline.from_pretrained(tiny_dirs[family])
    assert isinstance(bundle.denoiser.schedule, VPSchedule)
    assert torch.equal(bundle.denoiser.schedule.alphas_cumprod, pipe.scheduler.alphas_cumprod)
    # frozen, fp32 on CPU
    assert all(not p.requires_grad for p in bundle.denoiser.parameters())
    assert all(not p.requires_grad for p in bundle.vae.parameters())
    assert (
        bundle.denoiser.dtype == torch.float32 and bundle.tokenizer is bundle.text_encoder.tokenizer
    )
    assert bundle.vae.downsample == 2 and bundle.vae.latent_channels == 4


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_is_the_unet_call_the_pipeline_makes(family, tiny_dirs):
    bundle = load_teacher(str(tiny_dirs[family]), device="cpu")
    den, unet = bundle.denoiser, bundle.denoiser.unet
    x, t = _inputs()
    emb = bundle.text_encoder(["a red circle", "a blue square"])
    with torch.no_grad():
        out = den(x, t, emb)
        # what the stock pipelines pass: ModelScope [B, L, D]; AnimateDiff [B*F, L, D]
        ctx = emb if family == "modelscope" else emb.repeat_interleave(x.shape[2], dim=0)
        ref = unet(x, t, encoder_hidden_states=ctx).sample
    assert out.shape == x.shape
    torch.testing.assert_close(out, ref, rtol=0, atol=0)

    x0, eps = den.predict_x0_eps(x, t, emb)
    a = den.schedule.alpha(t)[:, None, None, None, None]
    s = den.schedule.sigma(t)[:, None, None, None, None]
    torch.testing.assert_close(eps, out)
    torch.testing.assert_close(a * x0 + s * eps, x, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_text_encoder_matches_pipeline_encode_prompt(family, tiny_dirs):
    bundle = load_teacher(str(tiny_dirs[family]), device="cpu")
    pipe = DiffusionPipeline.from_pretrained(tiny_dirs[family])
    prompts = ["a red circle moving left", "a green triangle"]
    cond, uncond = pipe.encode_prompt(prompts, "cpu", 1, True, None)
    torch.testing.assert_close(bundle.text_encoder(prompts), cond, rtol=0, atol=0)
    torch.testing.assert_close(bundle.text_encoder.empty(2), uncond, rtol=0, atol=0)
    pooled = bundle.text_encoder.pooled(prompts)
    assert pooled.shape == (2, bundle.text_encoder.embedding_dim)
    with pytest.raises(ValueError, match="list of strings"):
        bundle.text_encoder("a red circle")


def test_vae_chunked_encode_decode(tiny_dirs):
    bundle = load_teacher(str(tiny_dirs["modelscope"]), device="cpu")
    vae = bundle.vae
    g = torch.Generator().manual_seed(0)
    video = torch.rand(2, 3, 5, 32, 32, generator=g) * 2 - 1
    z = vae.encode(video)
    assert z.shape == (2, 4, 5, 16, 16)
    # chunking changes nothing; the mean latent is scaled by the scaling factor
    vae.chunk_size = 2
    torch.testing.assert_close(vae.encode(video), z, atol=1e-6, rtol=1e-6)
    frame = video[1, :, 3][None]
    mean = vae.vae.encode(frame).latent_dist.mode()[0]
    torch.testing.assert_close(z[1, :, 3], mean * vae.scaling_factor, atol=1e-6, rtol=1e-6)
    # posterior draws come from the generator only
    a = vae.encode(video, generator=torch.Generator().manual_seed(1))
    b = vae.encode(video, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, z)
    # decode == the stock pipeline's decode_latents, and keeps gradients
    pipe = DiffusionPipeline.from_pretrained(tiny_dirs["modelscope"])
    with torch.no_grad():
        ref = pipe.decode_latents(z)
    zg = z.clone().requires_grad_(True)
    out = vae.decode(zg)
    assert out.shape == video.shape
    torch.testing.assert_close(out.detach(), ref, atol=1e-5, rtol=1e-5)
    out.sum().backward()
    assert zg.grad is not None and zg.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"\[B, 3, F, H, W\]"):
        vae.encode(video[:, :1])


@pytest.mark.parametrize("family", FAMILIES)
def test_encoder_features(family, tiny_dirs):
    bundle = load_teacher(str(tiny_dirs[family]), device="cpu")
    den, unet = bundle.denoiser, bundle.denoiser.unet
    x, t = _inputs(frames=4)
    emb = bundle.text_encoder(["a", "b"])
    x.requires_grad_(True)
    feats = den.encoder_features(x, t, emb)
    assert [f.shape for f in feats] == [(2, 32, 4, 8, 8), (2, 64, 4, 8, 8), (2, 64, 4, 8, 8)]
    # same tensors as a full forward produces, reshaped [N*F, C, h, w] -> [N, C, F, h, w]
    seen = []
    blocks = [*unet.down_blocks, unet.mid_block]
    hooks = [
        b.register_forward_hook(lambda m, a, o: seen.append(o[0] if isinstance(o, tuple) else o))
        for b in blocks
    ]
    with torch.no_grad():
        den(x, t, emb)
    for h in hooks:
        h.remove()
    for f, s in zip(feats, seen):
        torch.testing.assert_close(f.detach(), s.reshape(2, 4, *s.shape[1:]).transpose(1, 2))
    sum(f.square().mean() for f in feats).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_checkpointing_gives_the_same_gradients(family, tiny_dirs):
    grads = []
    for checkpointing in (False, True):
        bundle = load_teacher(str(tiny_dirs[family]), device="cpu")
        den = bundle.denoiser
        attach_lora(den, rank=2, alpha=2)
        with torch.no_grad():
            for p in lora_parameters(den):
                p.add_(0.01)
        if checkpointing:
            den.enable_gradient_checkpointing()
        den.eval()  # UNet3D's temporal convs have dropout 0.1: keep the runs comparable
        x, t = _inputs()
        den(x, t, bundle.text_encoder(["a", "b"])).square().mean().backward()
        grads.append([p.grad.clone() for p in lora_parameters(den)])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("family", [*FAMILIES, "wan"])
def test_teacher_features_backpropagate_through_a_checkpointed_lora_student(
    family, tiny_dirs, tmp_path
):
    """The latent discriminator's teacher features (adapters off) with gradient
    checkpointing on: the backward must not recompute the blocks with the LoRA back on."""
    from mcm.models.tiny import save_tiny_pipeline

    path = tiny_dirs.get(family) or save_tiny_pipeline(family, tmp_path / family)
    bundle = load_teacher(str(path), device="cpu", max_sequence_length=16)
    den = bundle.denoiser
    attach_lora(den, rank=2, alpha=2)
    with torch.no_grad():
        for p in lora_parameters(den):
            p.add_(0.01)
    den.enable_gradient_checkpointing()
    x = torch.randn(2, 4, 1, 8, 8 if family != "wan" else 8, requires_grad=True)
    t = torch.tensor([30, 60])
    with disable_adapters(den):
        feats = den.encoder_features(x, t, bundle.text_encoder(["a", "b"]))
    with torch.no_grad():
        again = den.encoder_features(x, t, bundle.text_encoder(["a", "b"]))  # LoRA on
    assert any(not torch.equal(a, b) for a, b in zip(feats, again))
    sum(f.square().mean() for f in feats).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_bad_inputs_name_the_problem(tiny_dirs):
    bundle = load_teacher(str(tiny_dirs["animatediff"]), device="cpu")
    den = bundle.denoiser
    x, t = _inputs()
    emb = bundle.text_encoder(["a", "b"])
    with pytest.raises(ValueError, match=r"\[B, C, F, H, W\]"):
        den(x[:, :, 0], t, emb)
    with pytest.raises(ValueError, match="t must be"):
        den(x, t[:1], emb)
    with pytest.raises(ValueError, match="one prompt per video"):
        den(x, t, emb.repeat_interleave(3, dim=0))  # per-frame embeddings are made inside
    with pytest.raises(ValueError, match="time_cond_proj_dim"):
        den(x, t, emb, timestep_cond=torch.zeros(2, 8))


def test_timestep_cond_reaches_the_unet(tmp_path):
    from mcm.models.tiny import tiny_modelscope_pipeline

    tiny_modelscope_pipeline(time_cond_proj_dim=16).save_pretrained(tmp_path)
    den = load_teacher(str(tmp_path), device="cpu").denoiser
    x, t = _inputs()
    emb = torch.randn(2, 77, 32)
    with torch.no_grad():
        a = den(x, t, emb, timestep_cond=torch.zeros(2, 16))
        b = den(x, t, emb, timestep_cond=torch.ones(2, 16))
    assert not torch.allclose(a, b)


def test_not_a_video_pipeline_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model_index.json"):
        load_teacher(str(tmp_path), device="cpu")
    with pytest.raises(FileNotFoundError, match="local diffusers pipeline directory"):
        load_teacher(str(tmp_path / "missing"), device="cpu")
    unet = UNet2DModel(
        sample_size=8,
        block_out_channels=(32, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(tmp_path / "ddpm")
    with pytest.raises(ValueError, match="Unsupported pipeline 'DDPMPipeline'"):
        load_teacher(str(tmp_path / "ddpm"), device="cpu")
    with pytest.raises(ValueError, match="motion_adapter"):
        detect_family({"_class_name": "StableDiffusionPipeline"})
    assert detect_family({"_class_name": "StableDiffusionPipeline"}, "adapter") == "animatediff"
    index = json.loads((tmp_path / "ddpm" / "model_index.json").read_text())
    assert index["_class_name"] == "DDPMPipeline"


def test_dtype_policy(tiny_dirs):
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="fp16"):
        resolve_dtype("fp16", "cpu")
    with pytest.raises(ValueError, match="Unknown dtype_policy"):
        resolve_dtype("int8", "cpu")
    # frozen parts in bf16, LoRA weights in fp32, outputs back in the caller's fp32
    bundle = load_teacher(str(tiny_dirs["modelscope"]), device="cpu", dtype_policy="bf16")
    den = bundle.denoiser
    assert den.unet.dtype == torch.bfloat16 and bundle.vae.dtype == torch.bfloat16
    attach_lora(den, rank=2, alpha=2)
    assert all(p.dtype == torch.float32 for p in lora_parameters(den))
    x, t = _inputs()
    out = den(x, t, bundle.text_encoder(["a", "b"]))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert den.schedule.alphas_cumprod.dtype == torch.float32


def test_sd15_plus_motion_adapter_is_an_animatediff_teacher(tmp_path):
    from mcm.models.tiny import tiny_sd15_pipeline_and_adapter

    sd, adapter = tiny_sd15_pipeline_and_adapter()
    sd.save_pretrained(tmp_path / "sd")
    adapter.save_pretrained(tmp_path / "adapter")
    with pytest.raises(ValueError, match="image pipeline"):
        load_teacher(str(tmp_path / "sd"), device="cpu")
    bundle = load_teacher(
        str(tmp_path / "sd"), device="cpu", motion_adapter=str(tmp_path / "adapter")
    )
    assert isinstance(bundle.denoiser, AnimateDiffDenoiser)
    assert bundle.motion_adapter == str(tmp_path / "adapter")
    # the spatial weights are the SD1.5 UNet's, the motion modules the adapter's
    sd_unet = sd.unet.state_dict()
    motion = bundle.denoiser.unet.state_dict()
    assert torch.equal(motion["conv_in.weight"], sd_unet["conv_in.weight"])
    for k, v in adapter.state_dict().items():
        assert torch.equal(motion[k], v), k
    x, t = _inputs()
    with torch.no_grad():
        out = bundle.denoiser(x, t, bundle.text_encoder(["a", "b"]))
    assert out.shape == x.shape and torch.isfinite(out).all()
