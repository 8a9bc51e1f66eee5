"""Frechet Video Distance (Unterthiner et al. 2018): the Frechet distance between Gaussians
fitted to I3D (Kinetics-400) features of reference and generated videos.

Two incompatible I3D weight sets are in use and FVD numbers differ by which one, so the
weights file, its format and sha256 are recorded with every number:

* ``"torchscript"`` - the TorchScript port of the TF-Hub I3D (``i3d_torchscript.pt``, used
  by StyleGAN-V and most recent video papers). It is called as
  ``model(x, rescale=False, resize=False, return_features=True)`` with x
  ``[B, 3, T, 224, 224]`` in ``[-1, 1]`` and returns the 400 Kinetics logits (the "features
  before the softmax"); the keyword arguments are configurable (``call_kwargs``).
* ``"state_dict"`` - the PyTorch I3D checkpoint of VideoGPT (``i3d_pretrained_400.pt``, a
  state dict; ``.safetensors`` too) loaded into :class:`mcm.evaluation.i3d.InceptionI3d`.
  Features: the 400 logits averaged over time (``features="logits"``, VideoGPT's choice)
  or the 1024-d average-pooled Mixed_5c features (``features="pool"``).

Protocol (defaults, all recorded): frames resized so the shorter side is 224 (bilinear,
antialiased) and centre-cropped to 224x224; pixels in ``[-1, 1]`` (``input_scale=0.5``
gives VideoGPT's own ``[-0.5, 0.5]``); clips shorter than 9 frames (I3D's minimum) are
lengthened by repeating every frame (``temporal_policy="repeat"``: the world's 8-frame
clips become 16 frames with every frame shown twice) or by looping the clip ("loop").

A known check with the TF-Hub-port weights (needs the weights file, not available here):
8 all-zero vs 8 all-one 30-frame 64x64 videos ([0, 1] pixels, i.e. -1 vs +1 here) give an
FVD of about 151.2 - see :func:`constant_videos_check`.
"""

from __future__ import annotations

import json
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from mcm.evaluation.frechet import frechet_distance, gaussian_stats
from mcm.evaluation.i3d import MIN_FRAMES, InceptionI3d
from mcm.evaluation.preprocess import TEMPORAL_POLICIES, extend_clips, resize_videos
from mcm.evaluation.protocol import weights_record

I3D_FORMATS = ("auto", "torchscript", "state_dict")
I3D_FEATURES = ("logits", "pool")
TORCHSCRIPT_CALL = {"rescale": False, "resize": False, "return_features": True}


def detect_i3d_format(path: str | Path) -> str:
    """``"torchscript"`` for a TorchScript archive (a zip with ``code/`` and
    ``constants.pkl``), else ``"state_dict"`` (a torch.save'd dict or ``.safetensors``)."""
    path = Path(path)
    if path.suffix != ".safetensors" and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
    return "state_dict"


def load_i3d_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of an I3D checkpoint: ``.safetensors``, or a torch.save'd state dict read with
    ``weights_only=True`` (``{"state_dict": ...}`` wrappers and ``module.`` prefixes removed)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(
                f"{str(path)!r} is not a weights-only torch checkpoint ({e}). Give the VideoGPT "
                "i3d_pretrained_400.pt state dict, a .safetensors file, or a TorchScript archive."
            ) from e
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{str(path)!r} does not hold a state dict of tensors.")
    out = {k.removeprefix("module."): v for k, v in state.items()}
    # BatchNorm reads the module versions from here: checkpoints from torch < 0.4.1 (no
    # num_batches_tracked) still load strictly.
    metadata = getattr(state, "_metadata", None)
    if metadata is not None:
        out = OrderedDict(out)
        out._metadata = OrderedDict((k.removeprefix("module."), v) for k, v in metadata.items())
    return out


def i3d_from_state_dict(state: dict[str, Tensor]) -> InceptionI3d:
    """An :class:`InceptionI3d` with these weights, loaded with ``strict=True``."""
    if "logits.conv3d.bias" not in state:
        raise ValueError(
            "This state dict has no 'logits.conv3d.bias': it is not the VideoGPT/piergiaj I3D "
            "layout. For the TF-Hub TorchScript port (i3d_torchscript.pt) use format 'torchscript'."
        )
    model = InceptionI3d(num_classes=state["logits.conv3d.bias"].shape[0])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"The I3D state dict does not match the VideoGPT layout: {e}") from e
    return model


class I3DFeatureExtractor:
    """Videos ``[B, 3, F, H, W]`` in ``[-1, 1]`` -> I3D features ``[B, D]`` for FVD.

    Build it with :meth:`from_pretrained` (a weights file) or :meth:`from_model` (a module
    you hold, e.g. randomly initialised in tests). Calling it preprocesses (resize, crop,
    lengthen, scale) and runs the network in chunks of ``batch_size`` under ``no_grad``.

    Args:
        model: an :class:`InceptionI3d` or a TorchScript module.
        kind: ``"state_dict"`` (our InceptionI3d) or ``"torchscript"``.
        weights: :func:`~mcm.evaluation.protocol.weights_record` of the weights.
        features: ``"logits"`` or ``"pool"`` (InceptionI3d only; the TorchScript port returns
            whatever ``call_kwargs`` ask for).
        call_kwargs: keyword arguments of a TorchScript model's call (default
            ``rescale=False, resize=False, return_features=True``).
        resolution: frame size fed to the network (224 is the standard).
        input_scale: pixels in [-1, 1] are multiplied by this (0.5: VideoGPT's [-0.5, 0.5]).
        min_frames: clips shorter than this are lengthened with ``temporal_policy``.
        temporal_policy: ``"repeat"`` or ``"loop"`` (see
            :func:`mcm.evaluation.preprocess.extend_clips`).
        batch_size: videos per forward pass.
        device: where the network runs.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        kind: str,
        weights: dict,
        features: str = "logits",
        call_kwargs: dict | None = None,
        resolution: int = 224,
        input_scale: float = 1.0,
        min_frames: int = MIN_FRAMES,
        temporal_policy: str = "repeat",
        batch_size: int = 8,
        device: str | torch.device = "cpu",
    ):
        if kind not in ("state_dict", "torchscript"):
            raise ValueError(f"kind must be 'state_dict' or 'torchscript', got {kind!r}.")
        if features not in I3D_FEATURES:
            raise ValueError(f"features must be one of {I3D_FEATURES}, got {features!r}.")
        if kind == "torchscript" and features != "logits":
            raise ValueError(
                "features='pool' needs the VideoGPT-layout I3D; for the TorchScript port choose "
                "its output with call_kwargs instead."
            )
        if temporal_policy not in TEMPORAL_POLICIES:
            raise ValueError(
                f"temporal_policy must be one of {TEMPORAL_POLICIES}, got {temporal_policy!r}."
            )
        if min_frames < MIN_FRAMES:
            raise ValueError(
                f"min_frames must be >= {MIN_FRAMES} (I3D's shortest clip), got {min_frames}."
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.kind = kind
        self.weights = weights
        self.features = features
        self.call_kwargs = dict(TORCHSCRIPT_CALL if call_kwargs is None else call_kwargs)
        self.resolution = resolution
        self.input_scale = input_scale
        self.min_frames = min_frames
        self.temporal_policy = temporal_policy
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(
        cls, path: str | Path, format: str = "auto", **kwargs
    ) -> I3DFeatureExtractor:
        """Load I3D weights from ``path`` (see the module docstring for the two formats).

        Args:
            path: ``i3d_torchscript.pt`` (TorchScript), ``i3d_pretrained_400.pt`` (state
                dict) or a ``.safetensors`` conversion of the latter.
            format: ``"auto"`` (detect), ``"torchscript"`` or ``"state_dict"``.
            kwargs: the other arguments of :class:`I3DFeatureExtractor`.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"I3D weights {str(path)!r} not found. Give the TF-Hub TorchScript port "
                "(i3d_torchscript.pt) or VideoGPT's i3d_pretrained_400.pt with --i3d."
            )
        if format not in I3D_FORMATS:
            raise ValueError(f"format must be one of {I3D_FORMATS}, got {format!r}.")
        kind = detect_i3d_format(path) if format == "auto" else format
        if kind == "torchscript":
            model = torch.jit.load(str(path), map_location="cpu")
        else:
            model = i3d_from_state_dict(load_i3d_state_dict(path))
        return cls(model, kind, weights_record(path), **kwargs)

    @classmethod
    def from_model(cls, model: torch.nn.Module, weights_path: str | Path | None = None, **kwargs):
        """Wrap a module you hold (an :class:`InceptionI3d` or a TorchScript module)."""
        kind = "torchscript" if isinstance(model, torch.jit.ScriptModule) else "state_dict"
        return cls(model, kind, weights_record(weights_path), **kwargs)

    def preprocess(self, videos: Tensor) -> Tensor:
        """[B, 3, F, H, W] in [-1, 1] -> network input [B, 3, F', R, R] (R = resolution)."""
        if videos.ndim != 5 or videos.shape[1] != 3:
            raise ValueError(
                f"videos must be [B, 3, F, H, W] in [-1, 1], got {tuple(videos.shape)}."
            )
        x = resize_videos(videos.float(), self.resolution, mode="bilinear").clamp(-1, 1)
        x = extend_clips(x, self.min_frames, self.temporal_policy)
        return x * self.input_scale

    @torch.no_grad()
    def __call__(self, videos: Tensor) -> Tensor:
        """videos [B, 3, F, H, W] in [-1, 1] -> features [B, D] (float32, on the CPU)."""
        out = []
        for i in range(0, videos.shape[0], self.batch_size):
            x = self.preprocess(videos[i : i + self.batch_size]).to(self.device)
            out.append(self._forward(x).float().cpu())
        return torch.cat(out)

    def _forward(self, x: Tensor) -> Tensor:
        if self.kind == "torchscript":
            y = self.model(x, **self.call_kwargs)
            if not isinstance(y, Tensor):
                raise ValueError(
                    f"The TorchScript I3D returned {type(y).__name__}, not a tensor; set its call "
                    f"keyword arguments (now {json.dumps(self.call_kwargs)}) so it returns features."
                )
            return y.reshape(y.shape[0], -1)
        return self.model(x) if self.features == "logits" else self.model.forward_features(x)

    def describe(self) -> dict:
        """The protocol of these features: network, output, weights, input size and policies."""
        if self.kind == "torchscript":
            network = f"I3D (Kinetics-400), TF-Hub TorchScript port, called with {json.dumps(self.call_kwargs)}"
        else:
            if self.features == "logits":
                output = f"{self.model.num_classes} logits averaged over time"
            else:
                output = "1024-d avg-pooled Mixed_5c features averaged over time"
            network = f"I3D (Kinetics-400), VideoGPT PyTorch layout, {output}"
        return {
            "feature_network": network,
            "weights": {**self.weights, "format": self.kind},
            "resize_policy": (
                f"shorter side to {self.resolution} (bilinear, antialiased), centre crop "
                f"{self.resolution}x{self.resolution}; clips under {self.min_frames} frames: "
                f"{self.temporal_policy} each {'frame' if self.temporal_policy == 'repeat' else 'clip'} "
                f"ceil({self.min_frames}/F) times"
            ),
            "input_range": [-self.input_scale, self.input_scale],
        }


def frechet_video_distance(features_generated: Tensor, features_reference: Tensor) -> float:
    """FVD from I3D features of generated [N, D] and reference [M, D] videos (N, M >= 2).

    Like every Frechet distance it is biased by the sample counts: compare numbers computed
    from the same N and M (both are recorded by the `mcm evaluate` protocol).
    """
    return frechet_distance(
        *gaussian_stats(features_generated), *gaussian_stats(features_reference)
    )


def constant_videos_check(extractor: I3DFeatureExtractor) -> float:
    """The literature's sanity check: FVD between 8 all-black and 8 all-white 30-frame 64x64
    videos. With the TF-Hub-port weights it is about 151.2 (reported as 151.17 by
    common_metrics_on_video_quality); run it once per new weights file::

        python -c "from mcm.evaluation.fvd import *; \\
        print(constant_videos_check(I3DFeatureExtractor.from_pretrained('i3d_torchscript.pt')))"
    """
    zeros = torch.full((8, 3, 30, 64, 64), -1.0)
    ones = torch.full((8, 3, 30, 64, 64), 1.0)
    return frechet_video_distance(extractor(zeros), extractor(ones))
