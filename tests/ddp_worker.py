"""Run by tests/test_training_recipe.py under torchrun / accelerate launch:
`ddp_worker.py CONFIG OUT_DIR [RESUME]` trains, then dumps this rank's (full) weights, the
last logged loss terms and how much of the UNet this rank holds. With MCM_TEST_SIGTERM_RANK
and MCM_TEST_SIGTERM_STEP set, that rank sends itself SIGTERM after that step; the process
exits with the recipe's exit status."""

import json
import os
import signal
import sys
from pathlib import Path

from safetensors.torch import save_file

from mcm.models import lora_state_dict
from mcm.training.config import load_train_config
from mcm.training.recipe import DistillRecipe
from mcm.training.sharding import is_sharded

cfg_path, out = sys.argv[1], Path(sys.argv[2])
resume = sys.argv[3] if len(sys.argv) > 3 else None
recipe = DistillRecipe(load_train_config(cfg_path), resume=resume)
recipe.setup()
rank = recipe.accelerator.process_index
stop_at = (
    int(os.environ.get("MCM_TEST_SIGTERM_RANK", -1)),
    int(os.environ.get("MCM_TEST_SIGTERM_STEP", -1)),
)


def on_step(step: int) -> None:
    if (rank, step) == stop_at and recipe.phase == "train":
        os.kill(os.getpid(), signal.SIGTERM)


terms = recipe.train(on_step)  # the last logged step: losses, grad norms
# lora_state_dict gathers sharded weights: every rank calls it.
state = {f"lora.{k}": v for k, v in lora_state_dict(recipe.bundle.denoiser).items()}
state.update({f"motion.{k}": v for k, v in recipe.motion.state_dict().items()})
state.update({f"disc.{k}": v for k, v in recipe.discriminator.head_state_dict().items()})
save_file({k: v.contiguous() for k, v in state.items()}, str(out / f"rank{rank}.safetensors"))
unet = list(recipe.bundle.denoiser.unet.parameters())
meta = {
    "num_processes": recipe.accelerator.num_processes,
    "step": recipe.step,
    "exit_status": recipe.exit_status,
    "terms": {k: float(v) for k, v in terms.items()},
    "fsdp": recipe.fsdp is not None,
    "unet_numel": sum(p.numel() for p in unet),
    "unet_local_numel": sum(p.to_local().numel() if is_sharded(p) else p.numel() for p in unet),
}
(out / f"rank{rank}.json").write_text(json.dumps(meta))
sys.exit(recipe.exit_status)
