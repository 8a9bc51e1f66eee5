"""wan_teacher_checkpoint.py: the pipeline it assembles from a build's last transformer
checkpoint is the pipeline the build itself saved."""

import torch
from diffusers import DiffusionPipeline

from mcm.cli import main


def test_checkpoint_pipeline_is_the_builds(tmp_path, load_script):
    out = tmp_path / "teacher"
    args = ["world", "build", "--family", "wan", "--out", str(out), "--vae-steps", "1",
            "--vae-batch-size", "36", "--unet-steps", "2", "--batch-size", "4",
            "--pool-size", "8", "--checkpoint-every", "1", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    checkpoint = tmp_path / "teacher.checkpoints" / "transformer" / "checkpoint-2"
    assemble = load_script("wan_teacher_checkpoint")["pipeline_from_checkpoint"]
    ours, built = (
        DiffusionPipeline.from_pretrained(d)
        for d in (assemble(checkpoint, tmp_path / "assembled"), out)
    )
    for name in ("vae", "transformer", "text_encoder"):
        theirs = getattr(built, name).state_dict()
        for k, v in getattr(ours, name).state_dict().items():
            assert torch.equal(v, theirs[k]), (name, k)
    assert ours.vae.config.latents_mean == built.vae.config.latents_mean
