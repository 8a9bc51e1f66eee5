"""Layer 5: configs, the distillation step and the training loop."""
