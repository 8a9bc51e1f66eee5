"""`mcm generate`: sample videos from a teacher (guided DDIM) or a distilled student.

With ``--student DIR`` (an export written by `mcm train` / `mcm export`), the student is
sampled through *stock diffusers*: ``DiffusionPipeline.from_pretrained(DIR/merged)`` with its
LCMScheduler, exactly what a user without mcm would run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "sample videos from a teacher or a distilled student"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--teacher", default="world", help="teacher: diffusers directory, hub id, or 'world'"
    )
    p.add_argument(
        "--student", help="an exported student directory (contains merged/ and mcm_student.json)"
    )
    p.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    p.add_argument("--prompt-file", help="a text file with one prompt per line")
    p.add_argument(
        "--steps", type=int, default=None, help="sampling steps (student: 1-8 typical; teacher: 50)"
    )
    p.add_argument(
        "--guidance", type=float, default=None, help="CFG scale (teacher default 9; student 1)"
    )
    p.add_argument(
        "--frames", type=int, default=None, help="frames per video (default: the model's)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fps", type=int, default=8)
    p.add_argument(
        "--out", required=True, help="output .mp4/.gif for one prompt, or a folder for several"
    )


def read_prompts(args) -> list[str]:
    prompts = list(args.prompt)
    if args.prompt_file:
        path = Path(args.prompt_file)
        if not path.is_file():
            raise FileNotFoundError(f"--prompt-file {str(path)!r} does not exist.")
        prompts += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts or any(not p.strip() for p in prompts):
        raise ValueError("Empty prompt: give --prompt TEXT (non-empty) or --prompt-file FILE.")
    return prompts


def output_paths(out: str, n: int) -> list[Path]:
    """One file for one prompt (``--out a.mp4``), else ``--out DIR`` -> DIR/000.mp4, ..."""
    path = Path(out)
    if n == 1 and path.suffix in (".mp4", ".gif"):
        paths = [path]
    else:
        if path.suffix:
            raise ValueError(f"--out {out!r}: several prompts need a folder, not a file name.")
        paths = [path / f"{i:03d}.mp4" for i in range(n)]
    target = paths[0].parent
    target.mkdir(parents=True, exist_ok=True)
    if not _writable(target):
        raise PermissionError(
            f"--out {out!r}: {str(target)!r} is not writable; choose another location."
        )
    return paths


def _writable(folder: Path) -> bool:
    import os

    return os.access(folder, os.W_OK)


def run(args: argparse.Namespace) -> int:
    try:
        prompts = read_prompts(args)
        paths = output_paths(args.out, len(prompts))
        videos = generate(args, prompts)
    except (ValueError, FileNotFoundError, PermissionError) as e:
        print(f"mcm generate: {e}", file=sys.stderr)
        return 2
    from mcm.media import write_video

    for path, video in zip(paths, videos):
        write_video(path, video, fps=args.fps)
        print(path)
    return 0


def generate(args, prompts: list[str]):
    """[B, 3, F, H, W] in [-1, 1] for the chosen model."""
    import torch

    from mcm.paths import resolve_teacher

    if args.student:
        from mcm.models import load_student_pipeline, pipeline_video

        pipe, info = load_student_pipeline(args.student)
        steps = args.steps or 4
        grid = info.get("original_inference_steps", 50)
        if not 1 <= steps <= grid:
            raise ValueError(f"--steps must be in 1..{grid} for this student; got {steps}.")
        out = pipe(
            prompts,
            num_inference_steps=steps,
            guidance_scale=args.guidance if args.guidance is not None else 1.0,
            num_frames=args.frames or info.get("num_frames", 16),
            generator=torch.Generator().manual_seed(args.seed),
            output_type="pt",
        )
        return pipeline_video(out)
    from mcm.models import load_teacher
    from mcm.models.sampling import sample_teacher

    teacher = resolve_teacher(args.teacher)
    bundle = load_teacher(teacher)
    return sample_teacher(
        bundle,
        prompts,
        steps=args.steps or 50,
        guidance_scale=args.guidance if args.guidance is not None else 9.0,
        seed=args.seed,
        num_frames=args.frames,
    )
