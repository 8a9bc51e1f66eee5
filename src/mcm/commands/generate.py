"""`mcm generate`: sample videos from a teacher (guided DDIM) or a distilled student.

With ``--student DIR`` (an export written by `mcm train` / `mcm export`), the student is
sampled through *stock diffusers*: ``DiffusionPipeline.from_pretrained(DIR/merged)`` with its
LCMScheduler, exactly what a user without mcm would run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from mcm.commands.arguments import count, non_negative, number
from mcm.errors import InputError

HELP = "sample videos from a teacher or a distilled student"


def add_arguments(p: argparse.ArgumentParser) -> None:
    model = p.add_mutually_exclusive_group()
    model.add_argument(
        "--teacher",
        default=None,  # None, not "world": argparse tells a given --teacher from a default one
        help="teacher: diffusers directory, hub id, or 'world' (the default)",
    )
    model.add_argument(
        "--student", help="an exported student directory (contains merged/ and mcm_student.json)"
    )
    p.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    p.add_argument("--prompt-file", help="a text file with one prompt per line")
    p.add_argument(
        "--steps",
        type=count,
        default=None,
        help="sampling steps (student: 1-8 typical, default 4; teacher: default 50)",
    )
    p.add_argument(
        "--guidance",
        type=number(minimum=0),
        default=None,
        help="CFG scale (teacher default 9; student 1)",
    )
    p.add_argument(
        "--frames", type=count, default=None, help="frames per video (default: the model's)"
    )
    p.add_argument(
        "--size",
        type=count,
        nargs=2,
        metavar=("HEIGHT", "WIDTH"),
        default=None,
        help="video size in pixels (default: the model's; Wan: what the student was trained at)",
    )
    p.add_argument("--seed", type=non_negative, default=0)
    p.add_argument(
        "--preview-decoder",
        metavar="DIR",
        default=None,
        help="decode with a preview decoder from `mcm decoder` instead of the VAE (faster, "
        "a little less faithful)",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (they are drawn only when stderr is a terminal)",
    )
    p.add_argument("--fps", type=count, default=8)
    p.add_argument(
        "--out",
        required=True,
        help="output video (.mp4, .gif, .webm, .mkv, .mov) for one prompt, or a folder for several",
    )


def read_prompts(args) -> list[str]:
    prompts = list(args.prompt)
    if args.prompt_file:
        path = Path(args.prompt_file)
        if not path.is_file():
            raise FileNotFoundError(f"--prompt-file {str(path)!r} does not exist.")
        prompts += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts or any(not p.strip() for p in prompts):
        raise InputError("Empty prompt: give --prompt TEXT (non-empty) or --prompt-file FILE.")
    return prompts


def output_paths(out: str, n: int) -> list[Path]:
    """One file for one prompt (``--out a.mp4``), else ``--out DIR`` -> DIR/000.mp4, ...

    Nothing is created here (the videos are written once they exist); the nearest existing
    folder above the output must be writable."""
    from mcm.media import VIDEO_SUFFIXES

    path = Path(out)
    suffix = path.suffix.lower()
    if suffix and suffix not in VIDEO_SUFFIXES:
        raise InputError(
            f"--out {out!r}: mcm writes videos as {', '.join(VIDEO_SUFFIXES)}; name the file "
            "with one of these, or give a folder for several prompts."
        )
    if suffix and n > 1:
        raise InputError(
            f"--out {out!r}: {n} prompts give {n} videos; give a folder, not a file name."
        )
    paths = [path] if suffix else [path / f"{i:03d}.mp4" for i in range(n)]
    existing = next(p for p in (paths[0].parent, *paths[0].parent.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise PermissionError(
            f"--out {out!r}: {str(existing)!r} is not a writable folder; choose another location."
        )
    return paths


def run(args: argparse.Namespace) -> int:
    from mcm.media import write_video

    prompts = read_prompts(args)
    paths = output_paths(args.out, len(prompts))
    progress = not args.no_progress and bool(sys.stderr and sys.stderr.isatty())
    with loading_bars(progress):
        videos = generate(args, prompts, progress)
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    for path, video in zip(paths, videos):
        write_video(path, video, fps=args.fps)
        print(path)
    return 0


@contextlib.contextmanager
def loading_bars(shown: bool):
    """Within it, the bars diffusers and transformers draw while loading weights are shown
    only if ``shown`` (they draw them by default, on a terminal or not)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    def show(library, on: bool) -> None:
        (library.enable_progress_bar if on else library.disable_progress_bar)()

    libraries = (diffusers_logging, transformers_logging)
    before = [library.is_progress_bar_enabled() for library in libraries]
    for library in libraries:
        show(library, shown)
    try:
        yield
    finally:
        for library, on in zip(libraries, before):
            show(library, on)


def generate(args, prompts: list[str], progress: bool = False):
    """[B, 3, F, H, W] in [-1, 1] for the chosen model; ``progress``: a bar of the sampling
    steps on stderr."""
    import torch

    from mcm.paths import resolve_teacher

    if args.student:
        from mcm.models import load_student_pipeline, pipeline_video
        from mcm.models.vae import VideoVAE, WanVideoVAE

        pipe, info = load_student_pipeline(args.student)
        pipe.set_progress_bar_config(disable=not progress)
        if args.preview_decoder:  # a stock pipeline decodes with it as its VAE
            vae = WanVideoVAE(pipe.vae) if "Wan" in type(pipe).__name__ else VideoVAE(pipe.vae)
            pipe.vae = _preview_decoder(args.preview_decoder, vae).model.to(pipe.device, vae.dtype)
        steps = 4 if args.steps is None else args.steps
        grid = info.get("original_inference_steps", 50)
        if not 1 <= steps <= grid:
            raise InputError(f"--steps must be in 1..{grid} for this student; got {steps}.")
        # Wan: the size and prompt length the student was trained at (mcm_student.json)
        call = {k: info[k] for k in ("height", "width", "max_sequence_length") if k in info}
        if args.size:
            call.update(height=args.size[0], width=args.size[1])
        out = pipe(
            prompts,
            num_inference_steps=steps,
            guidance_scale=args.guidance if args.guidance is not None else 1.0,
            num_frames=info.get("num_frames", 16) if args.frames is None else args.frames,
            generator=torch.Generator().manual_seed(args.seed),
            output_type="pt",
            **call,
        )
        return pipeline_video(out)
    from mcm.models import load_teacher
    from mcm.models.sampling import sample_teacher

    teacher = resolve_teacher(args.teacher or "world")
    bundle = load_teacher(teacher)
    decoder = args.preview_decoder and _preview_decoder(args.preview_decoder, bundle.vae)
    return sample_teacher(
        bundle,
        prompts,
        steps=50 if args.steps is None else args.steps,
        guidance_scale=args.guidance if args.guidance is not None else 9.0,
        seed=args.seed,
        num_frames=args.frames,
        height=args.size[0] if args.size else None,
        width=args.size[1] if args.size else None,
        progress=progress,
        decoder=decoder or None,
    )


def _preview_decoder(path: str, vae):
    """The decoder at ``path``, checked against the model's VAE (an InputError if it does
    not fit)."""
    from mcm.models import PreviewDecoder

    decoder = PreviewDecoder.from_pretrained(path)
    try:
        decoder.check_vae(vae)
    except ValueError as e:
        raise InputError(f"--preview-decoder {path}: {e}") from None
    return decoder
