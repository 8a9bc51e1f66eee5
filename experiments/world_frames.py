"""First and last frames of the world teacher's and students' videos, one row per model,
as a PNG (docs/images/demo_frames.png, shown in docs/RESULTS.md, "The demo").

    python experiments/world_frames.py --scale 3 --student demo-out/lcm --student demo-out/mcm \
        --out docs/images/demo_frames.png

Row 1 is the shipped teacher (guided DDIM-50), then each ``--student`` run (its
``export/merged`` pipeline, or an export folder itself) at ``--steps`` steps; columns are
the first ``--prompts`` evaluation prompts of the demo, each as frame 0 | last frame.
Same seed for every row.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch


def merged_dir(path: str) -> str:
    p = Path(path)
    for candidate in (p / "export" / "merged", p / "merged", p):
        if (candidate / "model_index.json").is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"No merged student pipeline under {path} (export/merged/model_index.json)."
    )


def frame_grid(rows: list[torch.Tensor]) -> torch.Tensor:
    """rows of videos [N, 3, F, H, W] -> image [3, rows*H, N*2*W] (frame 0 | last frame)."""
    return torch.cat(
        [torch.cat([torch.cat([v[:, 0], v[:, -1]], dim=2) for v in r], dim=2) for r in rows], dim=1
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--student",
        action="append",
        default=[],
        help="a training run or export folder (repeatable)",
    )
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--scale", type=int, default=3, help="pixel magnification")
    ap.add_argument("--out", default="runs/world_frames.png")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)

    from PIL import Image

    from mcm.demo import TEACHER_GUIDANCE, evaluation_prompts
    from mcm.models import load_teacher
    from mcm.models.sampling import sample_student, sample_teacher

    prompts = evaluation_prompts(args.prompts)
    rows = [
        sample_teacher(load_teacher("world"), prompts, 50, TEACHER_GUIDANCE, seed=0, num_frames=8)
    ]
    for run in args.student:
        rows.append(
            sample_student(load_teacher(merged_dir(run)), prompts, args.steps, seed=0, num_frames=8)
        )
    img = ((frame_grid(rows).clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    h, w = img.shape[:2]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).resize((w * args.scale, h * args.scale), Image.NEAREST).save(out)
    print(f"wrote {out}: rows teacher@50, " + ", ".join(f"{r}@{args.steps}" for r in args.student))
    print("columns: " + " | ".join(prompts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
