"""The fault matrix's recipe (tests/test_training_faults.py): the distillation recipe,
sending its own process a real signal - SIGKILL included - at a chosen point.

Run as `fault_worker.py CONFIG PHASE STEP SIGNAL` it trains CONFIG (resuming its latest
checkpoint, if any) and signals itself when PHASE ("warm-up", "train" or "export")
reaches STEP."""

import os
import sys

from mcm.training.config import load_train_config
from mcm.training.recipe import DistillRecipe


class Interruptible(DistillRecipe):
    """Sends this process ``signum`` when ``phase`` reaches ``step`` (the export: as it
    begins)."""

    def __init__(self, cfg, phase: str, step: int, signum: int):
        super().__init__(cfg, resume="latest")
        self.at, self.signum = (phase, step), signum

    def export(self):
        if self.at[0] == "export":
            os.kill(os.getpid(), self.signum)
        return super().export()

    def run(self) -> "Interruptible":
        self.setup()
        self.train(
            lambda n: os.kill(os.getpid(), self.signum) if (self.phase, n) == self.at else None
        )
        return self


if __name__ == "__main__":
    path, phase, step, signum = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    sys.exit(Interruptible(load_train_config(path), phase, step, signum).run().exit_status)
