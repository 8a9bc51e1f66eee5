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


def test_rewriting_a_step_swaps_in_the_new_checkpoint_and_stale_temporaries_go(tmp_path):
    ckpt.write_checkpoint(tmp_path, 7, _writer(1), keep=3)
    ckpt.write_checkpoint(tmp_path, 7, _writer(2), keep=3)  # a run started again in the folder
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-7"]
    assert ckpt.load_state(tmp_path / "checkpoint-7" / "state.pt")["step"] == 2
    (tmp_path / ".checkpoint-9-abc").mkdir()  # what a crash in the middle of a write leaves
    (tmp_path / ".checkpoint-7-old-xyz").mkdir()
    (tmp_path / "notes").mkdir()
    removed = ckpt.remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".checkpoint-7-old-xyz", ".checkpoint-9-abc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-7", "notes"]


def test_resume_candidates_are_newest_first_or_the_given_path(tmp_path):
    for step in (2, 4, 6):
        ckpt.write_checkpoint(tmp_path, step, _writer(step), keep=5)
    latest = ckpt.resume_candidates(tmp_path, "latest")
    assert [p.name for p in latest] == ["checkpoint-6", "checkpoint-4", "checkpoint-2"]
    given = tmp_path / "checkpoint-4"
    assert ckpt.resume_candidates(tmp_path, str(given)) == [given]
