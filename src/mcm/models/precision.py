"""Device and dtype policy for the frozen parts (VAE, text encoder, UNet base weights).

Policies: ``"auto"`` (bf16 on a CUDA device that supports it, else fp16 on CUDA; fp32 on
CPU and MPS), ``"fp32"``, ``"bf16"``, ``"fp16"``. Trainable LoRA weights always stay in
fp32 (see :func:`mcm.models.lora.attach_lora`); the denoiser casts its inputs to the UNet's
dtype and its outputs back, so callers work in fp32 throughout.
"""

from __future__ import annotations

import torch

DTYPE_POLICIES = ("auto", "fp32", "bf16", "fp16")
_NAMED = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def default_device() -> torch.device:
    """CUDA if available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(policy: str, device: torch.device | str) -> torch.dtype:
    """The dtype for frozen weights under ``policy`` on ``device``.

    Raises:
        ValueError: unknown policy, or half precision asked for on CPU.
    """
    if policy not in DTYPE_POLICIES:
        raise ValueError(f"Unknown dtype_policy {policy!r}; allowed: {', '.join(DTYPE_POLICIES)}.")
    device = torch.device(device)
    if policy == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and policy == "fp16":
        raise ValueError(
            "dtype_policy 'fp16' on CPU is unsupported by many kernels; use 'fp32' (or 'auto')."
        )
    return _NAMED[policy]
