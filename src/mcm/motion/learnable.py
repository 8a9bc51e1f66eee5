"""The learnable motion representation m(x) = x + g_phi(x).

g_phi is a small per-frame network (convs, GroupNorm, SiLU) whose last conv is
zero-initialised, so m is the identity at initialisation. The light variant uses 1x1
convs (3 layers), the heavy one 3x3 convs (5 layers). The reference's head is two layers
with a SiLU on the input as well (``num_layers=2, input_activation=True``); the default
three convs without it are ours (docs/RESULTS.md, "Deviations from the reference"). The head is trained only through
the motion loss with the student's optimiser; the target side uses an EMA copy of it
(:class:`mcm.training.ema.EMA`, decay 0.95).
"""

from __future__ import annotations

import json
import os
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor, nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "motion_head.safetensors"


class LearnableMotionHead(nn.Module):
    """m(x) = x + g_phi(x), g_phi applied to each frame independently.

    Args:
        channels (int): latent channels C.
        hidden (int): width of the hidden convs. Default: 64.
        num_layers (int): number of convs (the last maps back to C). Default: 3.
        kernel_size (int): 1 (light) or an odd size such as 3 (heavy). Default: 1.
        num_groups (int): GroupNorm groups; must divide ``hidden``. Default: 32.
        input_activation (bool): a SiLU on the input of the first conv. Default: False.

    Raises:
        ValueError: non-positive sizes, an even kernel, or groups not dividing hidden.
    """

    def __init__(
        self,
        channels: int,
        hidden: int = 64,
        num_layers: int = 3,
        kernel_size: int = 1,
        num_groups: int = 32,
        input_activation: bool = False,
    ):
        super().__init__()
        if min(channels, hidden, num_layers, kernel_size, num_groups) < 1:
            raise ValueError(
                "channels, hidden, num_layers, kernel_size and num_groups must be >= 1; got "
                f"{channels}, {hidden}, {num_layers}, {kernel_size}, {num_groups}."
            )
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same-size output); got {kernel_size}.")
        if hidden % num_groups:
            raise ValueError(f"num_groups={num_groups} must divide hidden={hidden}.")
        self.config = {
            "channels": channels,
            "hidden": hidden,
            "num_layers": num_layers,
            "kernel_size": kernel_size,
            "num_groups": num_groups,
            "input_activation": input_activation,
        }
        pad = kernel_size // 2
        layers: list[nn.Module] = [nn.SiLU()] if input_activation else []
        width = channels
        for _ in range(num_layers - 1):
            layers += [
                nn.Conv2d(width, hidden, kernel_size, padding=pad),
                nn.GroupNorm(num_groups, hidden),
                nn.SiLU(),
            ]
            width = hidden
        last = nn.Conv2d(width, channels, kernel_size, padding=pad)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.residual = nn.Sequential(*layers, last)

    def forward(self, x: Tensor) -> Tensor:
        """[B, C, F, H, W] -> [B, C, F, H, W]."""
        if x.ndim != 5 or x.shape[1] != self.config["channels"]:
            raise ValueError(
                f"Expected latents [B, {self.config['channels']}, F, H, W]; got {tuple(x.shape)}."
            )
        B, C, Fr, H, W = x.shape
        frames = x.permute(0, 2, 1, 3, 4).reshape(B * Fr, C, H, W)  # (B*F, C, H, W)
        g = self.residual(frames).reshape(B, Fr, C, H, W).permute(0, 2, 1, 3, 4)
        return x + g

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write config.json and motion_head.safetensors to ``save_directory``."""
        os.makedirs(save_directory, exist_ok=True)
        with open(os.path.join(save_directory, CONFIG_NAME), "w") as f:
            json.dump({"_class_name": type(self).__name__, **self.config}, f, indent=2)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, os.path.join(save_directory, WEIGHTS_NAME))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> LearnableMotionHead:
        """Load a head written by :meth:`save_pretrained`.

        Raises:
            FileNotFoundError: config.json or motion_head.safetensors is missing.
        """
        paths = [os.path.join(directory, n) for n in (CONFIG_NAME, WEIGHTS_NAME)]
        for p in paths:
            if not os.path.isfile(p):
                raise FileNotFoundError(
                    f"{p} not found; point to a directory written by "
                    "LearnableMotionHead.save_pretrained."
                )
        with open(paths[0]) as f:
            config: dict[str, Any] = json.load(f)
        config.pop("_class_name", None)
        head = cls(**config)
        head.load_state_dict(load_file(paths[1]))
        return head
