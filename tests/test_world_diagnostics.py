"""The world diagnostics in benchmarks/: whether the discriminator's heads alone learn the
low-quality look, whether a teacher uses the direction word, and the frame picture."""

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import discriminator_separation  # noqa: E402
import teacher_direction  # noqa: E402


@pytest.mark.slow
def test_latent_discriminator_learns_the_low_quality_look(tmp_path):
    out = tmp_path / "sep.json"
    args = ["--out", str(out), "--lr", "2e-3", "--t-max", "50", "--steps", "50"]
    assert discriminator_separation.main(args) == 0
    (run,) = json.loads(out.read_text())["runs"]
    last = run["curve"][-1]
    assert last["step"] == 50
    # Heads alone, 50 steps: clean frames score clearly above low-quality ones.
    assert last["clean"] - last["low-quality"] > 0.5, last


def test_opposite_direction():
    assert teacher_direction.opposite_direction("a red circle moving left") == (
        "a red circle moving right"
    )
    assert teacher_direction.opposite_direction("a blue star moving down").endswith("up")


def test_teacher_direction_report(tmp_path):
    out = tmp_path / "dir.json"
    assert teacher_direction.main(["--clips", "4", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["x0_error_by_t"]) == {"300", "600", "850"}
    for row in result["x0_error_by_t"].values():
        assert row["x0_mse"] > 0 and math.isfinite(row["gap"])
    text = result["text_distance"]
    assert set(text) == {"direction", "colour", "shape", "embedding_norm"}
    assert all(v >= 0 for v in text.values()) and text["colour"] > 0


def test_world_frames_grid_and_paths(tmp_path):
    import torch
    import world_frames

    rows = [torch.zeros(3, 3, 8, 4, 4), torch.ones(3, 3, 8, 4, 4)]
    rows[0][:, :, -1] = 0.5  # last frames
    img = world_frames.frame_grid(rows)
    assert img.shape == (3, 2 * 4, 3 * 2 * 4)
    assert img[:, :4, 4:8].eq(0.5).all() and img[:, 4:].eq(1).all()
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        world_frames.merged_dir(str(tmp_path))
    (tmp_path / "export" / "merged").mkdir(parents=True)
    (tmp_path / "export" / "merged" / "model_index.json").write_text("{}")
    assert world_frames.merged_dir(str(tmp_path)).endswith("export/merged")
