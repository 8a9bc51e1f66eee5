"""Run by tests/test_training_faults.py in a subprocess: `fault_worker.py CONFIG PHASE STEP
SIGNAL` trains CONFIG (resuming its latest checkpoint, if any) and sends itself SIGNAL - a
real signal, SIGKILL included - when PHASE ("warm-up", "train" or "export") reaches STEP."""

import os
import sys

from mcm.training.config import load_train_config
from mcm.training.recipe import DistillRecipe

cfg_path, phase, at_step, signum = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])


class Recipe(DistillRecipe):
    def export(self):
        if phase == "export":
            os.kill(os.getpid(), signum)
        return super().export()


recipe = Recipe(load_train_config(cfg_path), resume="latest")
recipe.setup()
recipe.train(
    lambda step: os.kill(os.getpid(), signum) if (recipe.phase, step) == (phase, at_step) else None
)
sys.exit(recipe.exit_status)
