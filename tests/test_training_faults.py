"""The fault matrix: SIGTERM and kill -9 in each phase of `mcm train` (the discriminator's
warm-up, the distillation, the export), then a resume, give exactly the uninterrupted run's
student (LoRA, motion head, discriminator heads) and export."""

import multiprocessing
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mcm.media import write_image, write_video
from mcm.models.tiny import save_tiny_pipeline
from mcm.training.config import TrainConfig
from mcm.training.config_io import from_dict
from mcm.training.recipe import DistillRecipe
from mcm.world.domains import render_sample

EXPORTED = ("lora/pytorch_lora_weights.safetensors", "aux/motion_head.safetensors")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    teacher = save_tiny_pipeline("modelscope", root / "teacher")
    g = torch.Generator().manual_seed(0)
    for kind, folder in (("lowq_video", root / "clips"), ("hq_image", root / "images")):
        folder.mkdir()
        for i in range(4):
            x, caption, _ = render_sample(kind, g, num_frames=4)
            if kind == "lowq_video":
                write_video(folder / f"{i}.mp4", x)
            else:
                write_image(folder / f"{i}.png", x)
            (folder / f"{i}.txt").write_text(caption)
    return {"teacher": teacher, "clips": root / "clips", "images": root / "images"}


def config(assets, out) -> TrainConfig:
    view = {"resolution": 32, "crop": "center", "num_workers": 0}
    return from_dict(TrainConfig, {
        "output_dir": str(out),
        "model": {"teacher": str(assets["teacher"]), "lora_rank": 4, "lora_alpha": 4},
        "method": {"motion": "learnable"},
        "discriminator": {"latent_t_max": 300, "warmup_steps": 2},
        "data": {
            "video": {"source": str(assets["clips"]), "num_frames": 4, "frame_stride": 1, **view},
            "images": {"source": str(assets["images"]), **view},
        },
        "train": {"max_steps": 3, "batch_size": 1, "lr": 1e-3, "warmup_steps": 1,
                  "checkpoint_every": 1, "keep_checkpoints": 2, "log_every": 1,
                  "tracker": "none", "progress": False},
    })  # fmt: skip


def student(out: Path) -> dict[str, torch.Tensor]:
    """The final checkpoint's weights and the exported files."""
    final = max(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    tensors = {}
    for path in [*sorted(final.glob("*.safetensors")), *(out / "export" / f for f in EXPORTED)]:
        tensors.update({f"{path.name}:{k}": v for k, v in load_file(path).items()})
    return tensors


def train(cfg, resume=None, on_step=None) -> DistillRecipe:
    recipe = DistillRecipe(cfg, resume=resume)
    recipe.setup()
    recipe.train(on_step)
    return recipe


@pytest.fixture(scope="module")
def uninterrupted(assets, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    assert train(config(assets, out)).exit_status == 0
    return student(out)


def assert_same_student(out: Path, uninterrupted) -> None:
    resumed = student(out)
    assert resumed.keys() == uninterrupted.keys()
    for k, v in uninterrupted.items():
        torch.testing.assert_close(resumed[k], v, rtol=0, atol=0, msg=k)


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


@pytest.mark.slow
def test_sigterm_in_each_phase_then_resume_equals_the_uninterrupted_run(
    assets, uninterrupted, tmp_path
):
    # One run stopped three times, once in each phase, and resumed after each stop.
    cfg = config(assets, tmp_path)
    stops = {"warm-up": (1, (0, 1)), "train": (2, (2, 2)), "export": (0, (3, 2))}
    for phase, (step, stopped_at) in stops.items():
        recipe = Interruptible(cfg, phase, step, signal.SIGTERM).run()
        assert recipe.exit_status == 128 + signal.SIGTERM, phase
        assert (recipe.step, recipe.warmup_step) == stopped_at, phase
        assert (tmp_path / f"checkpoint-{recipe.step}").is_dir(), phase
        assert (tmp_path / "export").is_dir() == (phase == "export")  # an export is finished
    resumed = train(config(assets, tmp_path), resume="latest")
    assert resumed.exit_status == 0
    assert_same_student(tmp_path, uninterrupted)


def _run_then_kill_9(cfg, phase: str, step: int) -> None:
    Interruptible(cfg, phase, step, signal.SIGKILL).run()


@pytest.mark.slow
def test_kill_9_in_each_phase_then_resume_equals_the_uninterrupted_run(
    assets, uninterrupted, tmp_path
):
    # A process killed in the warm-up (before any checkpoint: the next one starts afresh),
    # then one killed in the distillation, then one killed as the export begins. Each is a
    # fork of this one (a real process, spared the imports) that kills itself.
    cfg = config(assets, tmp_path)
    fork = multiprocessing.get_context("fork")
    for phase, step in (("warm-up", 2), ("train", 2), ("export", 0)):
        process = fork.Process(target=_run_then_kill_9, args=(cfg, phase, step))
        process.start()
        process.join(timeout=300)
        assert process.exitcode == -signal.SIGKILL, phase
        assert not (tmp_path / "export").exists()  # never half an export
    resumed = train(config(assets, tmp_path), resume="latest")
    assert resumed.exit_status == 0
    assert_same_student(tmp_path, uninterrupted)
