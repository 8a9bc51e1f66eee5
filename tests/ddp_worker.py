"""Run by tests/test_training_recipe.py under torchrun: train, then dump this rank's weights."""

import json
import sys
from pathlib import Path

from safetensors.torch import save_file

from mcm.models import lora_state_dict
from mcm.training.config import load_train_config
from mcm.training.recipe import DistillRecipe

cfg_path, out = sys.argv[1], Path(sys.argv[2])
recipe = DistillRecipe(load_train_config(cfg_path))
recipe.setup()
recipe.train()
rank = recipe.accelerator.process_index
state = {f"lora.{k}": v for k, v in lora_state_dict(recipe.bundle.denoiser).items()}
state.update({f"motion.{k}": v for k, v in recipe.motion.state_dict().items()})
state.update({f"disc.{k}": v for k, v in recipe.discriminator.head_state_dict().items()})
save_file({k: v.contiguous() for k, v in state.items()}, str(out / f"rank{rank}.safetensors"))
(out / f"rank{rank}.json").write_text(
    json.dumps({"num_processes": recipe.accelerator.num_processes, "step": recipe.step})
)
