"""The I3D network (Carreira & Zisserman 2017, "Quo Vadis, Action Recognition?"): Inception-V1
(GoogLeNet) with every 2D convolution and pooling inflated to 3D, the feature network of FVD.

Layout: a stem (``Conv3d_1a_7x7``, ``MaxPool3d_2a_3x3``, ``Conv3d_2b_1x1``, ``Conv3d_2c_3x3``,
``MaxPool3d_3a_3x3``), nine inception blocks ``Mixed_3b`` ... ``Mixed_5c`` with max pools
between stages, then an average pool over a 2x7x7 window and a 1x1x1 convolution to the
Kinetics-400 logits, averaged over the remaining time steps.

Parameter and buffer names follow the PyTorch I3D checkpoint that VideoGPT's FVD uses
(``i3d_pretrained_400.pt``): a unit is ``<name>.conv3d`` (+ ``<name>.bn``), a block's branches
are ``b0``, ``b1a``/``b1b``, ``b2a``/``b2b``, ``b3b`` (``b3a`` is its parameter-free max pool) and
the classifier is ``logits.conv3d``; that state dict loads with ``strict=True``.

Padding is TensorFlow's "SAME" rule (the original model is a TF model), computed from the
input size at run time. The input is ``[B, 3, T, H, W]`` in ``[-1, 1]`` with ``H = W = 224``
(the standard size: the 7x7 average pool then covers the whole 7x7 map) and ``T >= 9``
(three temporal stride-2 stages must leave at least 2 steps for the 2-step average pool).

The code is TorchScript-compatible, so ``torch.jit.script`` works on it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (branch 0 1x1, branch 1 1x1 reduce, branch 1 3x3x3, branch 2 1x1 reduce, branch 2 3x3x3,
#  branch 3 pool-projection 1x1): Inception-V1's table with its 5x5 replaced by 3x3x3.
INCEPTION_CHANNELS: dict[str, tuple[int, int, int, int, int, int]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
FEATURE_CHANNELS = 1024  # output channels of Mixed_5c: the pooled feature size
MIN_FRAMES = 9  # shortest clip the network accepts (see the module docstring)
MIN_SIZE = 32  # smallest height/width (one position after the five spatial stride-2 stages)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (front, back) of one axis: the output has ceil(size / stride)
    positions; the odd pixel, if any, goes at the back."""
    if size % stride == 0:
        total = max(kernel - stride, 0)
    else:
        total = max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def pad_same(x: Tensor, kernel: list[int], stride: list[int]) -> Tensor:
    """Zero-pad x [B, C, T, H, W] for a SAME convolution or pooling with this kernel/stride."""
    t0, t1 = same_padding(x.shape[2], kernel[0], stride[0])
    h0, h1 = same_padding(x.shape[3], kernel[1], stride[1])
    w0, w1 = same_padding(x.shape[4], kernel[2], stride[2])
    return F.pad(x, [w0, w1, h0, h1, t0, t1])


class Unit3D(nn.Module):
    """SAME-padded Conv3d, then BatchNorm (eps 1e-5) and ReLU (both optional)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
        batch_norm: bool = True,
        relu: bool = True,
        bias: bool = False,
    ):
        super().__init__()
        self.kernel = list(kernel)
        self.stride = list(stride)
        self.relu = relu
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride=stride, bias=bias)
        self.bn = (
            nn.BatchNorm3d(out_channels, eps=1e-5, momentum=0.001) if batch_norm else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv3d(pad_same(x, self.kernel, self.stride)))
        return F.relu(x) if self.relu else x


class MaxPool3dSame(nn.Module):
    """SAME-padded 3D max pooling. Zero padding equals TF's -inf padding here because every
    pool in I3D follows a ReLU (inputs >= 0)."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.kernel = list(kernel)
        self.stride = list(stride)

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool3d(pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionBlock(nn.Module):
    """Four parallel branches concatenated on channels: 1x1; 1x1 -> 3x3x3; 1x1 -> 3x3x3;
    3x3x3 max pool -> 1x1."""

    def __init__(self, in_channels: int, channels: tuple[int, int, int, int, int, int]):
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3 = channels
        self.b0 = Unit3D(in_channels, c0)
        self.b1a = Unit3D(in_channels, c1a)
        self.b1b = Unit3D(c1a, c1b, kernel=(3, 3, 3))
        self.b2a = Unit3D(in_channels, c2a)
        self.b2b = Unit3D(c2a, c2b, kernel=(3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, c3)
        self.out_channels = c0 + c1b + c2b + c3

    def forward(self, x: Tensor) -> Tensor:
        branches = [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))]
        return torch.cat(branches, dim=1)


class InceptionI3d(nn.Module):
    """Inflated Inception-V1 (I3D), RGB stream.

    Args:
        num_classes: size of the logits layer (400 for Kinetics-400).
        in_channels: input channels (3 for RGB).

    ``forward(x [B, in_channels, T, H, W] in [-1, 1]) -> logits [B, num_classes]`` (averaged
    over time); ``forward_features(x) -> [B, 1024]`` (the average-pooled Mixed_5c features,
    averaged over time: the input of the logits layer).
    """

    def __init__(self, num_classes: int = 400, in_channels: int = 3):
        super().__init__()
        self.num_classes = num_classes
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, kernel=(7, 7, 7), stride=(2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, kernel=(3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionBlock(192, INCEPTION_CHANNELS["Mixed_3b"])
        self.Mixed_3c = InceptionBlock(self.Mixed_3b.out_channels, INCEPTION_CHANNELS["Mixed_3c"])
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        self.Mixed_4b = InceptionBlock(self.Mixed_3c.out_channels, INCEPTION_CHANNELS["Mixed_4b"])
        self.Mixed_4c = InceptionBlock(self.Mixed_4b.out_channels, INCEPTION_CHANNELS["Mixed_4c"])
        self.Mixed_4d = InceptionBlock(self.Mixed_4c.out_channels, INCEPTION_CHANNELS["Mixed_4d"])
        self.Mixed_4e = InceptionBlock(self.Mixed_4d.out_channels, INCEPTION_CHANNELS["Mixed_4e"])
        self.Mixed_4f = InceptionBlock(self.Mixed_4e.out_channels, INCEPTION_CHANNELS["Mixed_4f"])
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = InceptionBlock(self.Mixed_4f.out_channels, INCEPTION_CHANNELS["Mixed_5b"])
        self.Mixed_5c = InceptionBlock(self.Mixed_5b.out_channels, INCEPTION_CHANNELS["Mixed_5c"])
        self.min_frames = MIN_FRAMES
        self.min_size = MIN_SIZE
        self.logits = Unit3D(FEATURE_CHANNELS, num_classes, batch_norm=False, relu=False, bias=True)

    def pooled(self, x: Tensor) -> Tensor:
        """x [B, C, T, H, W] -> average-pooled Mixed_5c activations [B, 1024, T', H', W']
        (T' = ceil(T / 8) - 1, H' = max(ceil(H / 32) - 6, 1))."""
        if x.shape[2] < self.min_frames or x.shape[3] < self.min_size or x.shape[4] < self.min_size:
            raise ValueError(
                f"I3D needs clips of at least {self.min_frames} frames of at least "
                f"{self.min_size}x{self.min_size} pixels (224x224 is the standard size); got "
                f"{x.shape[2]} frames of {x.shape[3]}x{x.shape[4]}."
            )
        x = self.MaxPool3d_2a_3x3(self.Conv3d_1a_7x7(x))
        x = self.MaxPool3d_3a_3x3(self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x)))
        x = self.MaxPool3d_4a_3x3(self.Mixed_3c(self.Mixed_3b(x)))
        x = self.Mixed_4f(self.Mixed_4e(self.Mixed_4d(self.Mixed_4c(self.Mixed_4b(x)))))
        x = self.Mixed_5c(self.Mixed_5b(self.MaxPool3d_5a_2x2(x)))
        # The original's 2x7x7 average pool (stride 1); maps smaller than 7x7 (inputs below
        # 193 pixels: tests, quick runs) are pooled whole instead of failing.
        kernel = [2, min(7, x.shape[3]), min(7, x.shape[4])]
        return F.avg_pool3d(x, kernel, [1, 1, 1])

    def forward_features(self, x: Tensor) -> Tensor:
        """x [B, C, T, H, W] -> pooled features [B, 1024] (mean over time and space)."""
        return self.pooled(x).mean(dim=(2, 3, 4))

    def forward(self, x: Tensor) -> Tensor:
        """x [B, C, T, H, W] -> logits [B, num_classes], averaged over time (and space, which
        is 1x1 at 224x224). Dropout of the original is omitted: it is inactive at evaluation."""
        return self.logits(self.pooled(x)).mean(dim=(2, 3, 4))
