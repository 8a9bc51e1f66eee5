"""Checkpoint directories: atomic writes, pruning, resolution of --resume."""

import pytest
import torch

from mcm.training import checkpoint as ckpt


def _writer(value):
    def write(tmp):
        ckpt.save_weights({"w": torch.full((2,), float(value))}, tmp / "w.safetensors")
        ckpt.save_state({"step": value, "rng": torch.get_rng_state()}, tmp / "state.pt")

    return write


def test_write_prune_and_resolve(tmp_path):
    for step in (10, 20, 30, 40):
        ckpt.write_checkpoint(tmp_path, step, _writer(step), keep=2)
    names = [p.name for p in ckpt.list_checkpoints(tmp_path)]
    assert names == ["checkpoint-30", "checkpoint-40"]
    latest = ckpt.resolve_checkpoint(tmp_path, "latest")
    assert latest.name == "checkpoint-40"
    assert ckpt.load_state(latest / "state.pt")["step"] == 40
    assert torch.equal(ckpt.load_weights(latest / "w.safetensors")["w"], torch.full((2,), 40.0))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".checkpoint")]


def test_failed_write_leaves_nothing(tmp_path):
    def broken(tmp):
        (tmp / "partial").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        ckpt.write_checkpoint(tmp_path, 5, broken, keep=3)
    assert list(tmp_path.iterdir()) == []


def test_resume_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        ckpt.resolve_checkpoint(tmp_path, "latest")
    with pytest.raises(FileNotFoundError, match="not a checkpoint"):
        ckpt.resolve_checkpoint(tmp_path, str(tmp_path))
