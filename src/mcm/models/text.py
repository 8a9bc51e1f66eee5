"""Text conditioning: a tokenizer + text encoder, frozen.

Encodes exactly as the stock diffusers text-to-video pipelines do, so embeddings made here
can be fed to a stock pipeline as ``prompt_embeds`` and give the same video:

* :class:`TextEncoder` (CLIP; ModelScope, AnimateDiff): pad to the tokenizer's
  ``model_max_length``, truncate, last hidden state.
* :class:`UMT5TextEncoder` (Wan): pad to ``max_sequence_length`` with an attention mask,
  last hidden state with the padded positions set to zero (``WanPipeline``'s encoding).
"""

from __future__ import annotations

import re
from collections import OrderedDict

import torch
from torch import Tensor, nn


def _check_prompts(prompts) -> None:
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be a list of strings, e.g. ['a red circle moving left'].")


class TextEncoder(nn.Module):
    """Prompts -> text embeddings [B, L, D] (L = tokenizer.model_max_length).

    Args:
        tokenizer: a ``CLIPTokenizer`` (or any tokenizer with the same call signature).
        text_encoder: a ``CLIPTextModel``; frozen here (``requires_grad_(False)``, eval).
        cache_size: prompts whose embeddings are kept (least recently used dropped first), so
            that a prompt sampled again (another seed, another model on the same encoder)
            is not encoded again; 0 turns the cache off. The encoder is frozen, so a cached
            embedding equals a fresh one.
    """

    def __init__(self, tokenizer, text_encoder: nn.Module, cache_size: int = 8):
        super().__init__()
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0; got {cache_size}.")
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple, Tensor] = OrderedDict()
        self._empty: dict[tuple, Tensor] = {}

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
        _check_prompts(prompts)
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

    def forward(self, prompts: list[str]) -> Tensor:
        """Per-token embeddings [B, L, D] in fp32 (no gradient); cached per prompt."""
        _check_prompts(prompts)
        key = (self.device, next(self.text_encoder.parameters()).dtype)
        missing = list(dict.fromkeys(p for p in prompts if (key, p) not in self._cache))
        if missing:
            for prompt, emb in zip(missing, self._embed(missing)):
                self._cache[(key, prompt)] = emb
        rows = []
        for p in prompts:
            self._cache.move_to_end((key, p))
            rows.append(self._cache[(key, p)])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return torch.stack(rows)

    @torch.no_grad()
    def _embed(self, prompts: list[str]) -> Tensor:
        """[B, L, D] fp32, encoded now."""
        return self._encode(prompts)[0].float()

    @torch.no_grad()
    def pooled(self, prompts: list[str]) -> Tensor:
        """One vector per prompt [B, D] (CLIP's pooled end-of-text state), fp32, no gradient."""
        return self._encode(prompts).pooler_output.float()

    def empty(self, batch_size: int) -> Tensor:
        """The empty-prompt embedding (the unconditional branch of CFG) [batch_size, L, D]."""
        key = (self.device, next(self.text_encoder.parameters()).dtype)
        if key not in self._empty:
            self._empty = {key: self._embed([""])}
        return self._empty[key].repeat(batch_size, 1, 1)


class UMT5TextEncoder(TextEncoder):
    """Prompts -> UMT5 embeddings [B, max_sequence_length, D] as ``WanPipeline`` makes them:
    whitespace collapsed, padded to ``max_sequence_length`` with an attention mask, and the
    states past each prompt's length zeroed. Wan's cross-attention has no mask, so the
    length changes the output: train and sample with one ``max_sequence_length`` (stock
    WanPipeline's default is 512).
    """

    def __init__(
        self,
        tokenizer,
        text_encoder: nn.Module,
        max_sequence_length: int = 512,
        cache_size: int = 8,
    ):
        super().__init__(tokenizer, text_encoder, cache_size)
        if max_sequence_length < 1:
            raise ValueError(f"max_sequence_length must be >= 1; got {max_sequence_length}.")
        self.max_sequence_length = max_sequence_length

    @property
    def embedding_dim(self) -> int:
        return self.text_encoder.config.d_model

    @property
    def max_length(self) -> int:
        return self.max_sequence_length

    def _states(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """Zero-padded states [B, L, D] and the attention mask [B, L]."""
        _check_prompts(prompts)
        tokens = self.tokenizer(
            [re.sub(r"\s+", " ", p).strip() for p in prompts],
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        mask = tokens.attention_mask.to(self.device)
        states = self.text_encoder(tokens.input_ids.to(self.device), mask).last_hidden_state
        return states * mask.unsqueeze(-1).to(states.dtype), mask

    @torch.no_grad()
    def _embed(self, prompts: list[str]) -> Tensor:
        return self._states(prompts)[0].float()

    @torch.no_grad()
    def pooled(self, prompts: list[str]) -> Tensor:
        """The mean of each prompt's token states [B, D] (UMT5 has no pooled output)."""
        states, mask = self._states(prompts)
        return (states.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)).float()
