"""The text encoder's prompt cache: a prompt sampled again is not encoded again, and a
cached embedding equals a fresh one (CLIP and UMT5)."""

from __future__ import annotations

import pytest
import torch

from mcm.models.text import TextEncoder, UMT5TextEncoder
from mcm.models.tiny import build_clip_tokenizer, tiny_text_encoder, tiny_umt5


def counted(encoder: TextEncoder) -> list[int]:
    """A list whose length is the number of prompts the wrapped model has encoded."""
    seen: list[int] = []
    encoder.text_encoder.register_forward_hook(
        lambda m, args, out: seen.extend([0] * args[0].shape[0])
    )
    return seen


@pytest.mark.parametrize("kind", ["clip", "umt5"])
def test_cached_embeddings_equal_fresh_ones_and_skip_the_encoder(kind):
    tokenizer = build_clip_tokenizer()
    if kind == "clip":
        cached = TextEncoder(tokenizer, tiny_text_encoder(tokenizer), cache_size=2)
        fresh = TextEncoder(tokenizer, cached.text_encoder, cache_size=0)
    else:
        cached = UMT5TextEncoder(tokenizer, tiny_umt5(tokenizer), 16, cache_size=2)
        fresh = UMT5TextEncoder(tokenizer, cached.text_encoder, 16, cache_size=0)
    a, b, c = "a red circle", "a blue square", "a green star"
    reference = fresh([a, b, a])
    seen = counted(cached)  # the two share the model: counts both

    first = cached([a, b, a])  # a duplicate within one call is encoded once
    assert len(seen) == 2
    torch.testing.assert_close(first, reference, rtol=0, atol=0)
    again = cached([b, a])
    assert len(seen) == 2  # both cached
    torch.testing.assert_close(again, first[[1, 0]], rtol=0, atol=0)

    again[0].zero_()  # the caller owns what it gets: the cache is untouched
    torch.testing.assert_close(cached([b]), first[1:2], rtol=0, atol=0)

    cached([c])  # cache of 2: the least recently used prompt (a) goes
    assert len(seen) == 3
    cached([b])
    assert len(seen) == 3
    cached([a])
    assert len(seen) == 4

    fresh([a]), fresh([a])  # cache_size 0: encoded every time
    assert len(seen) == 6


def test_cache_size_must_not_be_negative():
    tokenizer = build_clip_tokenizer()
    with pytest.raises(ValueError, match="cache_size must be >= 0"):
        TextEncoder(tokenizer, tiny_text_encoder(tokenizer), cache_size=-1)
