"""CLIPSIM: how well videos match their prompts in CLIP's embedding space.

CLIPSIM of a video = the mean over its frames of 100 x cos(CLIP image embedding of the frame,
CLIP text embedding of the prompt) (Wu et al. 2021, GODIVA); the reported number is the mean
over videos. No clamping at 0 (unlike CLIPScore's 2.5 max(cos, 0)). The backbone varies by
paper, so it is a parameter: a ``transformers`` CLIPModel directory or a cached hub id
(``openai/clip-vit-base-patch32`` and ``openai/clip-vit-large-patch14`` are common).

Preprocessing is CLIP's, written in torch (no CLIPProcessor, no torchvision): shorter side to
the model's image size (224) with antialiased bicubic resampling, centre crop, clamp to
[0, 1], CLIP mean/std normalisation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mcm.evaluation.preprocess import normalize, resize_center_crop
from mcm.evaluation.protocol import resolve_pretrained, weights_record

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _as_tensor(out) -> Tensor:
    """transformers 5 returns a ModelOutput from get_*_features; older versions a tensor."""
    return out if isinstance(out, Tensor) else out.pooler_output


def clip_pixels(frames: Tensor, size: int) -> Tensor:
    """Frames [N, 3, H, W] in [-1, 1] -> CLIP input [N, 3, size, size] (see module docstring)."""
    x = resize_center_crop(frames.float(), size, mode="bicubic").clamp(-1, 1)
    return normalize(x, CLIP_MEAN, CLIP_STD)


class CLIPSimilarity:
    """CLIP image-text similarity of videos and prompts.

    Args:
        model: a ``transformers.CLIPModel``.
        tokenizer: its tokenizer (``CLIPTokenizer`` or the fast one).
        weights: :func:`~mcm.evaluation.protocol.weights_record` of the model.
        name: how the model was named (path or hub id), for the protocol.
        batch_size: frames per image-tower forward pass.
        device: where the model runs.
    """

    def __init__(
        self,
        model,
        tokenizer,
        weights: dict,
        name: str = "CLIPModel",
        batch_size: int = 64,
        device="cpu",
    ):
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.tokenizer = tokenizer
        self.weights = weights
        self.name = name
        self.batch_size = batch_size
        self.image_size = int(model.config.vision_config.image_size)

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs) -> CLIPSimilarity:
        """A CLIPModel and tokenizer from a directory (save_pretrained layout) or cached hub id."""
        from transformers import AutoTokenizer, CLIPModel

        path, model_id = resolve_pretrained(name_or_path)
        model = CLIPModel.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        return cls(model, tokenizer, weights_record(path, model_id), name=name_or_path, **kwargs)

    @torch.no_grad()
    def text_embeddings(self, prompts: list[str]) -> Tensor:
        """Prompts -> unit-norm text embeddings [B, D] (truncated to the model's context)."""
        max_length = int(self.model.config.text_config.max_position_embeddings)
        tokens = self.tokenizer(
            prompts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        ).to(self.device)
        emb = _as_tensor(
            self.model.get_text_features(
                input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
            )
        )
        return torch.nn.functional.normalize(emb.float(), dim=-1)

    @torch.no_grad()
    def image_embeddings(self, frames: Tensor) -> Tensor:
        """Frames [N, 3, H, W] in [-1, 1] -> unit-norm image embeddings [N, D]."""
        out = []
        for i in range(0, frames.shape[0], self.batch_size):
            pixels = clip_pixels(frames[i : i + self.batch_size], self.image_size).to(self.device)
            out.append(_as_tensor(self.model.get_image_features(pixel_values=pixels)).float())
        return torch.nn.functional.normalize(torch.cat(out), dim=-1).cpu()

    def per_video(self, videos: Tensor, prompts: list[str]) -> Tensor:
        """CLIPSIM of each video [B]: mean over frames of 100 x cos(frame, prompt).

        Args:
            videos: [B, 3, F, H, W] in [-1, 1].
            prompts: B prompts, one per video.
        """
        if videos.ndim != 5 or videos.shape[1] != 3:
            raise ValueError(
                f"videos must be [B, 3, F, H, W] in [-1, 1], got {tuple(videos.shape)}."
            )
        B, C, Fr, H, W = videos.shape
        if len(prompts) != B:
            raise ValueError(
                f"Got {B} videos but {len(prompts)} prompts; pass one prompt per video."
            )
        text = self.text_embeddings(prompts).cpu()  # [B, D]
        frames = videos.permute(0, 2, 1, 3, 4).reshape(B * Fr, C, H, W)
        image = self.image_embeddings(frames).reshape(B, Fr, -1)  # [B, F, D]
        return 100 * torch.einsum("bfd,bd->bf", image, text).mean(dim=1)

    def __call__(self, videos: Tensor, prompts: list[str]) -> float:
        """Mean CLIPSIM over videos (see :meth:`per_video`)."""
        return self.per_video(videos, prompts).mean().item()

    def describe(self) -> dict:
        return {
            "feature_network": f"CLIP {self.name}: 100 x cos(image, text) per frame, mean over frames, then videos",
            "weights": self.weights,
            "resolution": f"{self.image_size}x{self.image_size}",
            "resize_policy": (
                f"shorter side to {self.image_size} (bicubic, antialiased), centre crop, "
                "clamp to [0, 1], CLIP mean/std; every frame"
            ),
        }
