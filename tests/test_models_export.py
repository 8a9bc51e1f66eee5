"""Export both ways, loaded back by stock diffusers, must sample what our sampler samples."""

import json

import pytest
import torch
from diffusers import DiffusionPipeline, LCMScheduler
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mcm import cli
from mcm.models import (
    attach_lora,
    export_student,
    load_student_lora,
    load_student_pipeline,
    load_teacher,
    lora_parameters,
    lora_state_dict,
    pipeline_video,
    sample_student,
    save_lora,
)
from mcm.models.tiny import save_tiny_pipeline

FAMILIES = ["modelscope", "animatediff"]
PROMPTS = ["a red circle moving left", "a blue square moving up"]
FRAMES = 3


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """family -> (teacher dir, student bundle with a perturbed LoRA, export dir)."""
    root = tmp_path_factory.mktemp("export")
    out = {}
    for family in FAMILIES:
        teacher_dir = save_tiny_pipeline(family, root / f"{family}_teacher")
        bundle = load_teacher(str(teacher_dir), device="cpu")
        attach_lora(bundle.denoiser, rank=4, alpha=8)
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for p in lora_parameters(bundle.denoiser):
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
        head = torch.nn.Conv2d(4, 4, 1)
        export_dir = export_student(
            bundle,
            root / f"{family}_student",
            sampling={"num_frames": FRAMES},
            extra_modules={"motion_head": head},
        )
        out[family] = (teacher_dir, bundle, export_dir, head)
    return out


def _our_sample(bundle, steps, seed):
    return sample_student(
        bundle, PROMPTS, steps, seed, num_frames=FRAMES, height=32, width=32, output_type="latent"
    )


def _stock_sample(pipe, steps, seed, output_type="latent"):
    return pipe(
        prompt=PROMPTS,
        num_frames=FRAMES,
        height=32,
        width=32,
        num_inference_steps=steps,
        guidance_scale=1.0,
        generator=torch.Generator().manual_seed(seed),
        output_type=output_type,
    ).frames


@pytest.mark.parametrize("family", FAMILIES)
def test_merged_folder_is_a_plain_diffusers_pipeline(family, exported):
    _, bundle, export_dir, _ = exported[family]
    merged = export_dir / "merged"
    index = json.loads((merged / "model_index.json").read_text())
    assert (
        index["_class_name"]
        == {
            "modelscope": "TextToVideoSDPipeline",
            "animatediff": "AnimateDiffPipeline",
        }[family]
    )
    assert index["scheduler"] == ["diffusers", "LCMScheduler"]
    unet_config = json.loads((merged / "unet" / "config.json").read_text())
    assert unet_config["_class_name"] in ("UNet3DConditionModel", "UNetMotionModel")
    with safe_open(str(merged / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        keys = list(f.keys())  # noqa: SIM118
    assert not any("lora" in k or "base_layer" in k for k in keys)

    pipe = DiffusionPipeline.from_pretrained(merged)
    assert isinstance(pipe.scheduler, LCMScheduler)
    assert pipe.scheduler.config.timestep_scaling == 4.0
    assert pipe.scheduler.config.original_inference_steps == 50
    pipe.scheduler.set_timesteps(4)
    assert pipe.scheduler.timesteps.tolist() == [999, 759, 499, 259]
    assert not any(isinstance(m, BaseTunerLayer) for m in pipe.unet.modules())

    # student outputs from our adapter == the stock UNet of the merged export
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, FRAMES, 16, 16, generator=g)
    t = torch.tensor([999, 259])
    emb = bundle.text_encoder(PROMPTS)
    ctx = emb if family == "modelscope" else emb.repeat_interleave(FRAMES, dim=0)
    with torch.no_grad():
        ours = bundle.denoiser(x, t, emb)
        stock = pipe.unet(x, t, encoder_hidden_states=ctx).sample
    assert (ours - stock).abs().max() <= 1e-5
    if family == "animatediff":  # the saved motion adapter carries the fused motion modules
        unet_sd = pipe.unet.state_dict()
        for k, v in pipe.motion_adapter.state_dict().items():
            assert torch.equal(v, unet_sd[k]), k


@pytest.mark.parametrize("family", FAMILIES)
def test_stock_lora_route_samples_exactly_our_frames(family, exported):
    teacher_dir, bundle, export_dir, _ = exported[family]
    pipe = DiffusionPipeline.from_pretrained(teacher_dir)
    if family == "animatediff":  # stock diffusers, no mcm code
        pipe.load_lora_weights(export_dir / "lora")
        pipe.scheduler = LCMScheduler.from_config(
            pipe.scheduler.config, timestep_scaling=4.0, clip_sample=False
        )
    else:  # diffusers 0.42 cannot load LoRA into UNet3D: our one-call loader
        load_student_lora(pipe, export_dir / "lora")
    assert isinstance(pipe.scheduler, LCMScheduler)
    for steps, seed in ((1, 0), (4, 1)):
        ours = _our_sample(bundle, steps, seed)
        stock = _stock_sample(pipe, steps, seed)
        assert stock.shape == ours.shape == (2, 4, FRAMES, 16, 16)
        assert (ours - stock).abs().max() <= 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_merged_route_samples_our_frames(family, exported):
    _, bundle, export_dir, _ = exported[family]
    pipe = DiffusionPipeline.from_pretrained(export_dir / "merged")
    latents = _our_sample(bundle, 4, 7)
    # Fusing LoRA changes fp32 rounding (~1e-6 per UNet call); x0 = (x - sigma eps) / alpha
    # at t = 999 (alpha ~ 0.07) amplifies it, hence a looser bound on the sampled latents.
    assert (latents - _stock_sample(pipe, 4, 7)).abs().max() <= 1e-4
    frames = _stock_sample(pipe, 4, 7, output_type="pt")  # [B, F, 3, H, W] in [0, 1]
    ours = (bundle.vae.decode(latents) / 2 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4)
    assert frames.shape == ours.shape == (2, FRAMES, 3, 32, 32)
    assert (frames - ours).abs().max() <= 1e-4
    # the same through the helpers `mcm generate` uses
    student, info = load_student_pipeline(export_dir)
    assert info["family"] == family and info["timestep_scaling"] == 4.0
    assert info["num_frames"] == FRAMES and info["original_inference_steps"] == 50
    video = pipeline_video(_stock_sample(student, 4, 7, output_type="pt"))
    assert video.shape == (2, 3, FRAMES, 32, 32)
    assert (video - bundle.vae.decode(latents).clamp(-1, 1)).abs().max() <= 2e-4
    with pytest.raises(FileNotFoundError, match="mcm export"):
        load_student_pipeline(export_dir / "lora")


@pytest.mark.parametrize("family", FAMILIES)
def test_student_card_and_aux_modules(family, exported):
    _, _, export_dir, head = exported[family]
    card = json.loads((export_dir / "mcm_student.json").read_text())
    assert card["family"] == family
    assert card["scheduler"] == {
        "_class_name": "LCMScheduler",
        "timestep_scaling": 4.0,
        "original_inference_steps": 50,
    }
    assert card["sampling"]["guidance_scale"] == 1.0 and card["sampling"]["num_frames"] == FRAMES
    assert card["timesteps"]["4"] == [999, 759, 499, 259]
    assert card["timesteps"]["2"] == [999, 499] and card["timesteps"]["1"] == [999]
    assert card["lora"] == {
        "file": "lora/pytorch_lora_weights.safetensors",
        "rank": 4,
        "alpha": 8.0,
        "alpha_folded_into_lora_B": True,
        "modules": card["lora"]["modules"],
    }
    restored = torch.nn.Conv2d(4, 4, 1)
    restored.load_state_dict(load_file(str(export_dir / card["aux_modules"]["motion_head"])))
    assert all(torch.equal(a, b) for a, b in zip(restored.parameters(), head.parameters()))


def test_lora_for_the_other_family_fails_clearly(exported):
    ad_teacher, _, _, _ = exported["animatediff"]
    _, _, ms_export, _ = exported["modelscope"]
    pipe = DiffusionPipeline.from_pretrained(ad_teacher)
    with pytest.raises(ValueError, match="made for a modelscope UNet but the model is animatediff"):
        load_student_lora(pipe, ms_export / "lora")
    # without our metadata the module names still give it away
    weights = load_file(str(ms_export / "lora" / "pytorch_lora_weights.safetensors"))
    bare = ms_export.parent / "bare.safetensors"
    save_file(weights, str(bare))
    with pytest.raises(ValueError, match="made for a modelscope UNet"):
        load_student_lora(pipe, bare)


def test_load_student_lora_fuse_gives_a_plain_unet(exported):
    teacher_dir, bundle, export_dir, _ = exported["modelscope"]
    pipe = load_student_lora(
        DiffusionPipeline.from_pretrained(teacher_dir), export_dir / "lora", fuse=True
    )
    assert not any(isinstance(m, BaseTunerLayer) for m in pipe.unet.modules())
    assert (_our_sample(bundle, 2, 5) - _stock_sample(pipe, 2, 5)).abs().max() <= 1e-4


def test_mcm_export_cli(exported, tmp_path, capsys):
    teacher_dir, bundle, export_dir, head = exported["modelscope"]
    lora_file = save_lora(bundle.denoiser, tmp_path / "ckpt" / "student_lora.safetensors")
    save_file(head.state_dict(), str(tmp_path / "head.safetensors"))
    out = tmp_path / "cli_out"
    argv = ["export", "--teacher", str(teacher_dir), "--lora", str(lora_file), "--out", str(out)]
    rc = cli.main(
        [
            *argv,
            "--num-frames",
            str(FRAMES),
            "--aux",
            f"motion_head={tmp_path / 'head.safetensors'}",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    # same files as the API export of the same student
    for rel in (
        "lora/pytorch_lora_weights.safetensors",
        "merged/unet/diffusion_pytorch_model.safetensors",
    ):
        a, b = load_file(str(out / rel)), load_file(str(export_dir / rel))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), rel
    assert json.loads((out / "mcm_student.json").read_text())["aux_modules"] == {
        "motion_head": "aux/motion_head.safetensors"
    }
    # re-exporting from the exported folder (alpha already folded) gives the same LoRA
    rc = cli.main(
        [
            "export",
            "--teacher",
            str(teacher_dir),
            "--lora",
            str(out),
            "--out",
            str(tmp_path / "again"),
        ]
    )
    assert rc == 0
    a = load_file(str(tmp_path / "again" / "lora" / "pytorch_lora_weights.safetensors"))
    b = load_file(str(out / "lora" / "pytorch_lora_weights.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)

    # a training checkpoint folder (lora.safetensors without metadata) needs --lora-alpha
    ckpt = tmp_path / "checkpoint-000010"
    ckpt.mkdir()
    save_file(
        {k: v.contiguous() for k, v in lora_state_dict(bundle.denoiser).items()},
        str(ckpt / "lora.safetensors"),
    )
    rc = cli.main(
        [
            "export",
            "--teacher",
            str(teacher_dir),
            "--lora",
            str(ckpt),
            "--out",
            str(tmp_path / "c"),
            "--lora-alpha",
            "8",
        ]
    )
    assert rc == 0
    a = load_file(str(tmp_path / "c" / "lora" / "pytorch_lora_weights.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)

    assert cli.main(argv) == 2  # --out is not empty
    assert "not empty" in capsys.readouterr().err
    ad_teacher = exported["animatediff"][0]
    rc = cli.main(
        [
            "export",
            "--teacher",
            str(ad_teacher),
            "--lora",
            str(lora_file),
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert rc == 2
    assert "made for a modelscope UNet but the model is animatediff" in capsys.readouterr().err
    rc = cli.main(
        [
            "export",
            "--teacher",
            str(tmp_path),
            "--lora",
            str(lora_file),
            "--out",
            str(tmp_path / "y"),
        ]
    )
    assert rc == 2 and "no model_index.json" in capsys.readouterr().err


def test_export_onto_sd15_plus_motion_adapter(exported, tmp_path):
    from mcm.models.tiny import tiny_sd15_pipeline_and_adapter

    sd, adapter = tiny_sd15_pipeline_and_adapter()
    sd.save_pretrained(tmp_path / "sd")
    adapter.save_pretrained(tmp_path / "adapter")
    lora = exported["animatediff"][2] / "lora"
    argv = [
        "export",
        "--teacher",
        str(tmp_path / "sd"),
        "--lora",
        str(lora),
        "--out",
        str(tmp_path / "out"),
    ]
    assert cli.main(argv) == 2  # an image pipeline needs its motion adapter
    assert cli.main([*argv, "--motion-adapter", str(tmp_path / "adapter")]) == 0
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "out" / "merged")
    assert (
        type(pipe).__name__ == "AnimateDiffPipeline"
        and type(pipe.unet).__name__ == "UNetMotionModel"
    )
    card = json.loads((tmp_path / "out" / "mcm_student.json").read_text())
    assert card["motion_adapter"] == "../adapter" and card["teacher"] == "../sd"  # portable
