"""Text conditioning: CLIP tokenizer + text encoder, frozen.

Encodes exactly as the stock diffusers text-to-video pipelines do (pad to the tokenizer's
``model_max_length``, truncate, last hidden state), so embeddings made here can be fed to
a stock pipeline as ``prompt_embeds`` and give the same video.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class TextEncoder(nn.Module):
    """Prompts -> text embeddings [B, L, D] (L = tokenizer.model_max_length).

    Args:
        tokenizer: a ``CLIPTokenizer`` (or any tokenizer with the same call signature).
        text_encoder: a ``CLIPTextModel``; frozen here (``requires_grad_(False)``, eval).
    """

    def __init__(self, tokenizer, text_encoder: nn.Module):
        super().__init__()
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        self._empty_cache: dict[tuple, Tensor] = {}

    @property
    def device(self) -> torch.device:
        return next(self.text_encoder.parameters()).device

    @property
    def embedding_dim(self) -> int:
        return self.text_encoder.config.hidden_size

    @property
    def max_length(self) -> int:
        return self.tokenizer.model_max_length

    def _encode(self, prompts: list[str]):
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise ValueError(
                "prompts must be a list of strings, e.g. ['a red circle moving left']."
            )
        tokens = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            return_tensors="pt",
        )
        mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            mask = tokens.attention_mask.to(self.device)
        return self.text_encoder(tokens.input_ids.to(self.device), attention_mask=mask)

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> Tensor:
        """Per-token embeddings [B, L, D] in fp32 (no gradient)."""
        return self._encode(prompts)[0].float()

    @torch.no_grad()
    def pooled(self, prompts: list[str]) -> Tensor:
        """One vector per prompt [B, D] (CLIP's pooled end-of-text state), fp32, no gradient."""
        return self._encode(prompts).pooler_output.float()

    def empty(self, batch_size: int) -> Tensor:
        """The empty-prompt embedding (the unconditional branch of CFG) [batch_size, L, D]."""
        key = (self.device, next(self.text_encoder.parameters()).dtype)
        if key not in self._empty_cache:
            self._empty_cache = {key: self([""])}
        return self._empty_cache[key].repeat(batch_size, 1, 1)
