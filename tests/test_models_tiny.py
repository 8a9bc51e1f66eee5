"""Tiny offline pipelines: tokenizer, builders, save/load round trip with stock diffusers."""

import time

import pytest
import torch
from diffusers import (
    AnimateDiffPipeline,
    DiffusionPipeline,
    TextToVideoSDPipeline,
    UNet3DConditionModel,
    UNetMotionModel,
)
from transformers import CLIPTokenizer

from mcm.models.tiny import (
    build_clip_tokenizer,
    save_tiny_pipeline,
    tiny_animatediff_pipeline,
    tiny_modelscope_pipeline,
)

FAMILIES = {
    "modelscope": (tiny_modelscope_pipeline, TextToVideoSDPipeline, UNet3DConditionModel),
    "animatediff": (tiny_animatediff_pipeline, AnimateDiffPipeline, UNetMotionModel),
}


def test_tokenizer_is_byte_level_and_round_trips(tmp_path):
    tok = build_clip_tokenizer()
    ids = tok(
        ["a red circle", ""], padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids
    assert ids.shape == (2, 77)
    # <bos>, one token per character (the last of each word carries </w>), <eos> padding.
    assert ids[0, 0].item() == tok.bos_token_id == 512
    assert ids[0, 1].item() == 256 + ord("a")  # "a</w>"
    assert ids[0, 2].item() == ord("r")
    assert ids[0, 13].item() == tok.eos_token_id == 513
    assert (ids[1, 1:] == tok.eos_token_id).all()
    tok.save_pretrained(tmp_path)
    again = CLIPTokenizer.from_pretrained(tmp_path)
    text = ["A Blue Square moving up, fast!"]
    assert again(text).input_ids == tok(text).input_ids


@pytest.mark.parametrize("family", list(FAMILIES))
def test_tiny_pipeline_builds_fast_and_round_trips(family, tmp_path):
    build, pipe_cls, unet_cls = FAMILIES[family]
    start = time.perf_counter()
    pipe = build()
    # ~0.15 s on a quiet 2-core machine; the bound leaves room for a loaded CI box.
    assert time.perf_counter() - start < 5.0
    assert isinstance(pipe, pipe_cls) and isinstance(pipe.unet, unet_cls)

    save_tiny_pipeline(family, tmp_path / family)
    loaded = DiffusionPipeline.from_pretrained(tmp_path / family)
    assert type(loaded) is pipe_cls and type(loaded.unet) is unet_cls
    for (name, a), b in zip(pipe.unet.state_dict().items(), loaded.unet.state_dict().values()):
        assert torch.equal(a, b), name

    out = loaded(
        prompt="a red circle moving left",
        num_frames=3,
        height=32,
        width=32,
        num_inference_steps=1,
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
    ).frames
    assert out.shape == (1, 4, 3, 16, 16) and torch.isfinite(out).all()


def test_tiny_builders_are_seeded_and_leave_global_rng_alone():
    state = torch.get_rng_state()
    a, b, c = tiny_modelscope_pipeline(0), tiny_modelscope_pipeline(0), tiny_modelscope_pipeline(1)
    assert torch.equal(torch.get_rng_state(), state)
    wa, wb, wc = (p.unet.conv_in.weight for p in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_save_tiny_pipeline_rejects_unknown_family(tmp_path):
    with pytest.raises(ValueError, match="modelscope"):
        save_tiny_pipeline("cogvideox", tmp_path)
