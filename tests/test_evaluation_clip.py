"""CLIPSIM and frame FID with tiny random CLIP and DINOv2 models saved to and loaded from disk."""

import hashlib

import pytest
import torch
from transformers import CLIPConfig, CLIPModel, Dinov2Config, Dinov2Model

from mcm.evaluation.clipsim import CLIP_MEAN, CLIP_STD, CLIPSimilarity, clip_pixels
from mcm.evaluation.frame_fid import (
    ImageFeatures,
    dinov2_pixels,
    frame_fid,
    image_folder_features,
    video_frames,
)
from mcm.media import write_image
from mcm.models.tiny import build_clip_tokenizer

PROMPTS = ["a red circle moving left", "a blue square moving up", "a green triangle"]


def save_tiny_clip(directory) -> None:
    tokenizer = build_clip_tokenizer()
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    torch.manual_seed(0)
    CLIPModel(
        CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    ).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def save_tiny_dinov2(directory) -> None:
    torch.manual_seed(1)
    config = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=28,
        patch_size=14,
    )
    Dinov2Model(config).save_pretrained(directory)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_clip")
    save_tiny_clip(directory)
    return directory


@pytest.fixture(scope="module")
def dino_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_dinov2")
    save_tiny_dinov2(directory)
    return directory


def _videos(n: int, frames: int = 4, size: int = 24, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, frames, size, size, generator=g) * 2 - 1


def test_clip_pixels_is_clips_normalisation():
    grey = torch.zeros(2, 3, 20, 30)  # 0 in [-1, 1] is 0.5 in [0, 1]
    out = clip_pixels(grey, 32)
    assert out.shape == (2, 3, 32, 32)
    expected = (0.5 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(out, expected.view(1, 3, 1, 1).expand_as(out))


def test_clipsim_equals_clipmodel_cosine(clip_dir):
    scorer = CLIPSimilarity.from_pretrained(str(clip_dir))
    videos = _videos(3)
    per_video = scorer.per_video(videos, PROMPTS)
    assert per_video.shape == (3,)

    # independent route: CLIPModel's own forward gives logit_scale.exp() * cos for every pair
    model = CLIPModel.from_pretrained(clip_dir).eval()
    tokens = scorer.tokenizer(PROMPTS, padding=True, return_tensors="pt")
    frames = video_frames(videos)  # [B * F, 3, H, W], video-major
    with torch.no_grad():
        out = model(
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            pixel_values=clip_pixels(frames, 32),
        )
    cos = out.logits_per_image / model.logit_scale.exp()  # [B * F, B]
    expected = 100 * cos.reshape(3, 4, 3).mean(dim=1).diagonal()
    torch.testing.assert_close(per_video, expected, rtol=1e-4, atol=1e-4)
    assert scorer(videos, PROMPTS) == pytest.approx(expected.mean().item(), abs=1e-4)
    assert (per_video.abs() <= 100).all()

    protocol = scorer.describe()
    sha = hashlib.sha256((clip_dir / "model.safetensors").read_bytes()).hexdigest()
    assert protocol["weights"]["sha256"] == sha
    assert protocol["resolution"] == "32x32"
    with pytest.raises(ValueError, match="one prompt per video"):
        scorer.per_video(videos, PROMPTS[:2])


def test_frame_fid_with_dinov2_and_an_image_folder(dino_dir, tmp_path):
    features = ImageFeatures.from_pretrained(str(dino_dir), resolution=28)
    assert features.describe()["resolution"] == "28x28"
    videos = _videos(2, frames=3, size=24, seed=1)
    frames = video_frames(videos)
    # the same frames written as PNGs (lossless up to 8-bit quantisation) -> FID ~ 0
    folder = tmp_path / "images"
    folder.mkdir()
    quantised = ((frames + 1) * 127.5).round() / 127.5 - 1
    for i, frame in enumerate(frames):
        write_image(folder / f"{i:02d}.png", frame)
    reference = image_folder_features(features, folder)
    generated = features(quantised)
    assert generated.shape == reference.shape == (6, 32)
    torch.testing.assert_close(generated, reference, rtol=1e-4, atol=1e-4)
    assert frame_fid(generated, reference) == pytest.approx(0.0, abs=1e-3)
    # other content -> a positive distance
    other = features(video_frames(_videos(2, frames=3, size=24, seed=2) * 0.3))
    assert frame_fid(other, reference) > 1e-2


def test_dinov2_pixels_resize_then_crop():
    x = torch.zeros(1, 3, 10, 20)
    assert dinov2_pixels(x, 28).shape == (1, 3, 28, 28)


def test_image_features_from_a_clip_model(clip_dir):
    features = ImageFeatures.from_pretrained(str(clip_dir))
    out = features(video_frames(_videos(1)))
    assert out.shape == (4, 16)
    assert "clip" in features.describe()["feature_network"]


def test_unsupported_or_missing_feature_network(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(
        BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    ).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="frame FID supports"):
        ImageFeatures.from_pretrained(str(tmp_path / "bert"))
    with pytest.raises(FileNotFoundError, match="neither a local path"):
        ImageFeatures.from_pretrained("no-such-org/no-such-model")
