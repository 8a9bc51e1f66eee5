"""mcm: Motion Consistency Model distillation for text-to-video diffusion models."""

__version__ = "0.1.0"
