"""I3D architecture, its checkpoint layouts and the FVD feature extractor (random weights).

Real I3D weights cannot be downloaded here, so the literature check (8 all-zero vs 8
all-one 30-frame 64x64 videos -> FVD ~151.2 with the TF-Hub-port weights) is not run; with the
weights file at hand:

    python -c "from mcm.evaluation.fvd import *; \
    print(constant_videos_check(I3DFeatureExtractor.from_pretrained('i3d_torchscript.pt')))"

Forward passes run at 32x32 (the smallest size the network accepts) to stay fast on CPU.
"""

import math

import pytest
import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from mcm.evaluation.fvd import (
    I3DFeatureExtractor,
    detect_i3d_format,
    frechet_video_distance,
    load_i3d_state_dict,
)
from mcm.evaluation.i3d import INCEPTION_CHANNELS, InceptionI3d, same_padding
from mcm.evaluation.preprocess import extend_clips, resize_center_crop
from mcm.evaluation.protocol import sha256_file

SMALL = 32


@pytest.fixture(scope="module")
def i3d() -> InceptionI3d:
    torch.manual_seed(0)
    model = InceptionI3d().eval()
    for m in model.modules():
        # He init keeps activations O(1) through the 20-odd layers (the default init decays
        # them into denormal floats, which are slow on CPU); random BN statistics make the
        # buffers matter in the round trips below.
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def clips8() -> Tensor:
    """Two 8-frame clips (the world's length): I3D sees them with every frame repeated."""
    return _videos(2, 8, seed=1)


@pytest.fixture(scope="module")
def expected(i3d, clips8) -> dict[str, Tensor]:
    """Logits [2, 400] and pooled features [2, 1024] of the eager model on the repeated clips."""
    with torch.no_grad():
        pooled = i3d.pooled(clips8.repeat_interleave(2, dim=2))
        return {
            "logits": i3d.logits(pooled).mean(dim=(2, 3, 4)),
            "pool": pooled.mean(dim=(2, 3, 4)),
        }


def _videos(n: int, frames: int, size: int = SMALL, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, frames, size, size, generator=g) * 2 - 1


def videogpt_keys() -> dict[str, tuple[int, ...]]:
    """The VideoGPT i3d_pretrained_400.pt layout, written out from its naming rule:
    <unit>.conv3d.weight + <unit>.bn.{weight, bias, running_mean, running_var,
    num_batches_tracked}; blocks have units b0, b1a, b1b, b2a, b2b, b3b; logits.conv3d has a bias."""
    keys: dict[str, tuple[int, ...]] = {}

    def unit(name, cin, cout, k):
        keys[f"{name}.conv3d.weight"] = (cout, cin, k, k, k)
        for p in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{name}.bn.{p}"] = (cout,)
        keys[f"{name}.bn.num_batches_tracked"] = ()

    unit("Conv3d_1a_7x7", 3, 64, 7)
    unit("Conv3d_2b_1x1", 64, 64, 1)
    unit("Conv3d_2c_3x3", 64, 192, 3)
    cin = 192
    for block, (c0, c1a, c1b, c2a, c2b, c3) in INCEPTION_CHANNELS.items():
        unit(f"{block}.b0", cin, c0, 1)
        unit(f"{block}.b1a", cin, c1a, 1)
        unit(f"{block}.b1b", c1a, c1b, 3)
        unit(f"{block}.b2a", cin, c2a, 1)
        unit(f"{block}.b2b", c2a, c2b, 3)
        unit(f"{block}.b3b", cin, c3, 1)
        cin = c0 + c1b + c2b + c3
    keys["logits.conv3d.weight"] = (400, 1024, 1, 1, 1)
    keys["logits.conv3d.bias"] = (400,)
    return keys


def test_state_dict_has_the_videogpt_layout(i3d):
    expected = videogpt_keys()
    got = {k: tuple(v.shape) for k, v in i3d.state_dict().items()}
    assert got == expected
    assert len(got) == 344
    assert sum(p.numel() for p in i3d.parameters()) == 12_697_264


@pytest.mark.parametrize(
    "size,stride,kernel", [(224, 2, 7), (16, 1, 3), (9, 2, 3), (7, 2, 2), (5, 2, 1)]
)
def test_same_padding_gives_ceil_size_over_stride(size, stride, kernel):
    front, back = same_padding(size, kernel, stride)
    assert back - front in (0, 1)
    out = (size + front + back - kernel) // stride + 1
    assert out == math.ceil(size / stride)


def test_too_short_or_small_clip_is_a_clear_error(i3d):
    with pytest.raises(ValueError, match="at least 9 frames"):
        i3d(_videos(1, 8))
    with pytest.raises(ValueError, match="224x224 is the standard"):
        i3d(_videos(1, 9, size=16))


def test_state_dict_round_trip_safetensors_and_torch_save(i3d, clips8, expected, tmp_path):
    st_path = tmp_path / "i3d.safetensors"
    pt_path = tmp_path / "i3d_pretrained_400.pt"
    save_file({k: v.contiguous() for k, v in i3d.state_dict().items()}, st_path)
    torch.save(i3d.state_dict(), pt_path)
    assert detect_i3d_format(st_path) == "state_dict"
    assert detect_i3d_format(pt_path) == "state_dict"
    # strict load into a fresh model reproduces every tensor
    original = i3d.state_dict()
    extractors = {}
    for path in (st_path, pt_path):
        extractors[path] = I3DFeatureExtractor.from_pretrained(path, resolution=SMALL)
        fresh = extractors[path].model.state_dict()
        assert fresh.keys() == original.keys()
        assert all(torch.equal(fresh[k], v) for k, v in original.items())
        assert set(load_i3d_state_dict(path)) == set(original)

    ext = extractors[st_path]
    torch.testing.assert_close(ext(clips8), expected["logits"], rtol=1e-5, atol=1e-5)
    protocol = ext.describe()
    assert protocol["weights"]["sha256"] == sha256_file(st_path)
    assert protocol["weights"]["format"] == "state_dict"
    assert "400 logits" in protocol["feature_network"]


def test_checkpoint_from_old_torch_without_num_batches_tracked_loads(i3d, tmp_path):
    # piergiaj's / VideoGPT's I3D weights predate BatchNorm's num_batches_tracked buffer
    state = {k: v for k, v in i3d.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pt")
    model = I3DFeatureExtractor.from_pretrained(tmp_path / "old.pt").model
    assert torch.equal(model.Mixed_5c.b3b.bn.running_var, i3d.Mixed_5c.b3b.bn.running_var)
    # a torch.save'd state dict keeps its version metadata through our loader
    torch.save(i3d.state_dict(), tmp_path / "new.pt")
    assert hasattr(load_i3d_state_dict(tmp_path / "new.pt"), "_metadata")


def test_wrong_checkpoint_is_rejected_with_the_reason(i3d, tmp_path):
    state = {k: v.contiguous() for k, v in i3d.state_dict().items()}
    del state["Mixed_4c.b1b.conv3d.weight"]
    save_file(state, tmp_path / "broken.safetensors")
    with pytest.raises(ValueError, match="Mixed_4c.b1b.conv3d.weight"):
        I3DFeatureExtractor.from_pretrained(tmp_path / "broken.safetensors")
    save_file({"weight": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="torchscript"):
        I3DFeatureExtractor.from_pretrained(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError, match="--i3d"):
        I3DFeatureExtractor.from_pretrained(tmp_path / "missing.pt")


class TFHubPortStandIn(nn.Module):
    """Our I3D behind the calling convention of the TF-Hub TorchScript port:
    forward(x [B, 3, T, H, W], rescale, resize, return_features)."""

    def __init__(self, i3d: InceptionI3d):
        super().__init__()
        self.i3d = i3d

    def forward(
        self, x: Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ) -> Tensor:
        if rescale:
            x = x / 127.5 - 1
        if resize:
            x = torch.nn.functional.interpolate(x, size=[x.shape[2], 224, 224], mode="trilinear")
        logits = self.i3d(x)
        return logits if return_features else logits.softmax(dim=-1)


def test_torchscript_port_path(i3d, clips8, expected, tmp_path):
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(TFHubPortStandIn(i3d)).save(str(path))
    assert detect_i3d_format(path) == "torchscript"

    ext = I3DFeatureExtractor.from_pretrained(path, resolution=SMALL)
    assert ext.kind == "torchscript"
    # (one clip per call: the TorchScript interpreter is slower than eager mode on CPU)
    torch.testing.assert_close(ext(clips8[:1]), expected["logits"][:1], rtol=1e-4, atol=1e-4)
    # the call keywords are passed through: asking for probabilities changes the output
    call = {"rescale": False, "resize": False, "return_features": False}
    probs = I3DFeatureExtractor.from_model(ext.model, path, resolution=SMALL, call_kwargs=call)(
        clips8[:1]
    )
    torch.testing.assert_close(probs, expected["logits"][:1].softmax(dim=-1), rtol=1e-4, atol=1e-6)
    assert "TorchScript" in ext.describe()["feature_network"]
    with pytest.raises(ValueError, match="VideoGPT-layout"):
        I3DFeatureExtractor.from_pretrained(path, features="pool")


def test_short_clips_are_repeated_to_the_minimum(i3d, clips8, expected):
    ext = I3DFeatureExtractor.from_model(i3d, resolution=SMALL, features="pool")
    x = ext.preprocess(clips8)
    assert x.shape == (2, 3, 16, SMALL, SMALL)
    assert torch.equal(x[:, :, 0::2], clips8) and torch.equal(x[:, :, 1::2], clips8)
    features = ext(clips8)
    assert features.shape == (2, 1024)
    torch.testing.assert_close(features, expected["pool"])
    # different clips give different features (the random network is not degenerate)
    assert (expected["pool"][0] - expected["pool"][1]).abs().max() > 1e-3
    assert "repeat each frame" in ext.describe()["resize_policy"]
    assert ext.weights["sha256"] is None  # random weights are recorded as such


def test_extend_clips_policies():
    v = torch.arange(3.0).view(1, 1, 3, 1, 1)
    assert extend_clips(v, 7, "repeat").flatten().tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert extend_clips(v, 7, "loop").flatten().tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2]
    assert extend_clips(v, 3, "repeat") is v
    with pytest.raises(ValueError, match="temporal policy"):
        extend_clips(v, 7, "pad")


def test_resize_center_crop_keeps_the_centre_of_wide_frames():
    frame = -torch.ones(1, 3, 20, 40)
    frame[..., 6:34] = 1.0  # the centre (and a margin for the antialiasing filter) white
    out = resize_center_crop(frame, 10)
    assert out.shape == (1, 3, 10, 10)
    torch.testing.assert_close(out, torch.ones_like(out))
    constant = torch.full((2, 3, 8, 8), 0.25)
    torch.testing.assert_close(
        resize_center_crop(constant, 224), torch.full((2, 3, 224, 224), 0.25)
    )


def test_frechet_video_distance_closed_form():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    shift = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    # same covariance, shifted mean: FVD = |shift|^2 (up to sampling error)
    value = frechet_video_distance(a, a + shift)
    assert value == pytest.approx(float(shift @ shift), rel=1e-9)
    assert frechet_video_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # scaled by 2: d^2 = tr(S) + tr(4S) - 2 tr(2S) = tr(S) ~ 3
    b = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    assert frechet_video_distance(a, 2 * b) == pytest.approx(3.0, rel=0.1)
