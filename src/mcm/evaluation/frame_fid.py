"""Frame FID: the Frechet distance between features of generated frames and of an image
folder (e.g. the high-quality image set a student should look like).

Inception-v3, the FID standard, is not used: no weights can be shipped or fetched here, so
the feature network is given by path or hub id (CLIP's image tower or DINOv2) and recorded
with every number. These are therefore "FD_CLIP" / "FD_DINOv2" numbers, comparable with each
other under one protocol, not with published Inception FIDs.

DINOv2 preprocessing (its own recipe): shorter side to 256/224 of the crop size, bicubic,
antialiased, centre crop (224 by default), ImageNet mean/std. CLIP: as for CLIPSIM.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import torch
from torch import Tensor

from mcm.evaluation.clipsim import _as_tensor, clip_pixels
from mcm.evaluation.frechet import frechet_distance, gaussian_stats
from mcm.evaluation.preprocess import normalize, resize_center_crop
from mcm.evaluation.protocol import resolve_pretrained, weights_record

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def dinov2_pixels(frames: Tensor, size: int) -> Tensor:
    """Frames [N, 3, H, W] in [-1, 1] -> DINOv2 input [N, 3, size, size]: shorter side to
    round(size * 256 / 224), bicubic, centre crop to size, ImageNet mean/std."""
    x = resize_center_crop(frames.float(), round(size * 256 / 224), mode="bicubic").clamp(-1, 1)
    top = (x.shape[-2] - size) // 2
    left = (x.shape[-1] - size) // 2
    return normalize(x[..., top : top + size, left : left + size], IMAGENET_MEAN, IMAGENET_STD)


class ImageFeatures:
    """An image feature network for frame FID: frames [N, 3, H, W] in [-1, 1] -> [N, D].

    Supported (chosen by the model's ``config.model_type``):

    * ``clip`` (a CLIPModel): the projected image embedding (``get_image_features``);
    * ``clip_vision_model`` (a CLIPVisionModel): the pooled, layer-normed CLS token;
    * ``dinov2`` (a Dinov2Model): the layer-normed CLS token (``pooler_output``).

    Args:
        model: one of the models above.
        weights: :func:`~mcm.evaluation.protocol.weights_record`.
        name: how the model was named (path or hub id).
        resolution: DINOv2 input size (default 224); CLIP always uses its config's size.
        batch_size: frames per forward pass.
        device: where the model runs.
    """

    def __init__(
        self,
        model,
        weights: dict,
        name: str,
        resolution: int = 224,
        batch_size: int = 64,
        device="cpu",
    ):
        self.model_type = model.config.model_type
        if self.model_type not in ("clip", "clip_vision_model", "dinov2"):
            raise ValueError(
                f"Unsupported frame-FID feature network {self.model_type!r}: give a CLIPModel, "
                "CLIPVisionModel or Dinov2Model directory (or cached hub id)."
            )
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.weights = weights
        self.name = name
        self.batch_size = batch_size
        if self.model_type == "dinov2":
            self.resolution = resolution
        else:
            vision = model.config.vision_config if self.model_type == "clip" else model.config
            self.resolution = int(vision.image_size)

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs) -> ImageFeatures:
        """Load a CLIPModel / CLIPVisionModel / Dinov2Model from a directory or cached hub id."""
        from transformers import AutoConfig, CLIPModel, CLIPVisionModel, Dinov2Model

        path, model_id = resolve_pretrained(name_or_path)
        model_type = AutoConfig.from_pretrained(path).model_type
        classes = {"clip": CLIPModel, "clip_vision_model": CLIPVisionModel, "dinov2": Dinov2Model}
        if model_type not in classes:
            raise ValueError(
                f"{name_or_path!r} is a {model_type!r} model; frame FID supports {sorted(classes)}."
            )
        model = classes[model_type].from_pretrained(path)
        return cls(model, weights_record(path, model_id), name=name_or_path, **kwargs)

    def pixels(self, frames: Tensor) -> Tensor:
        """Frames [N, 3, H, W] in [-1, 1] -> network input [N, 3, R, R]."""
        if self.model_type == "dinov2":
            return dinov2_pixels(frames, self.resolution)
        return clip_pixels(frames, self.resolution)

    @torch.no_grad()
    def embed(self, pixels: Tensor) -> Tensor:
        """Network input [N, 3, R, R] (from :meth:`pixels`) -> features [N, D] (float32, CPU)."""
        out = []
        for i in range(0, pixels.shape[0], self.batch_size):
            x = pixels[i : i + self.batch_size].to(self.device)
            if self.model_type == "clip":
                y = _as_tensor(self.model.get_image_features(pixel_values=x))
            else:
                y = self.model(pixel_values=x).pooler_output
            out.append(y.float().cpu())
        return torch.cat(out)

    def __call__(self, frames: Tensor) -> Tensor:
        """frames [N, 3, H, W] in [-1, 1] -> features [N, D] (float32, CPU)."""
        return torch.cat(
            [
                self.embed(self.pixels(frames[i : i + self.batch_size]))
                for i in range(0, len(frames), self.batch_size)
            ]
        )

    def describe(self) -> dict:
        output = {
            "clip": "projected image embedding",
            "clip_vision_model": "pooled CLS token",
            "dinov2": "CLS token (pooler_output)",
        }[self.model_type]
        if self.model_type == "dinov2":
            resize = (
                f"shorter side to {round(self.resolution * 256 / 224)} (bicubic, antialiased), "
                f"centre crop {self.resolution}x{self.resolution}, ImageNet mean/std"
            )
        else:
            resize = f"shorter side to {self.resolution} (bicubic, antialiased), centre crop, CLIP mean/std"
        return {
            "feature_network": f"{self.model_type} {self.name}: {output}",
            "weights": self.weights,
            "resolution": f"{self.resolution}x{self.resolution}",
            "resize_policy": resize,
        }


def read_image(path: str | Path) -> Tensor:
    """An image file (png, jpeg, webp, ... decoded with PyAV) -> [3, H, W] in [-1, 1]."""
    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
            rgb = frame.to_ndarray(format="rgb24")
    except (av.error.FFmpegError, StopIteration, OSError) as e:
        raise ValueError(
            f"Cannot decode the image {str(path)!r}: {e}. Remove or replace the file."
        ) from e
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 127.5 - 1


def image_paths(folder: str | Path) -> list[Path]:
    """The image files (png, jpg, jpeg, webp, bmp) directly in ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Image folder {str(folder)!r} does not exist; give a folder of images."
        )
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(paths) < 2:
        raise ValueError(
            f"{str(folder)!r} has {len(paths)} image(s) ({', '.join(IMAGE_SUFFIXES)}); a Frechet "
            "distance needs at least 2 (thousands for a stable number)."
        )
    return paths


def image_folder_features(features: ImageFeatures, folder: str | Path, chunk: int = 256) -> Tensor:
    """Features [N, D] of every image in ``folder`` (images of any size; read in chunks)."""
    paths = image_paths(folder)
    out = []
    for i in range(0, len(paths), chunk):
        # each image is brought to the network size on its own: sizes may differ
        pixels = [features.pixels(read_image(p)[None]) for p in paths[i : i + chunk]]
        out.append(features.embed(torch.cat(pixels)))
    return torch.cat(out)


def video_frames(videos: Tensor) -> Tensor:
    """[B, 3, F, H, W] -> all frames [B * F, 3, H, W]."""
    B, C, Fr, H, W = videos.shape
    return videos.permute(0, 2, 1, 3, 4).reshape(B * Fr, C, H, W)


def frame_fid(features_generated: Tensor, features_reference: Tensor) -> float:
    """Frechet distance between frame features [N, D] and image features [M, D] (N, M >= 2)."""
    return frechet_distance(
        *gaussian_stats(features_generated), *gaussian_stats(features_reference)
    )
