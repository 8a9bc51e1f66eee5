"""`mcm app`: a web page that samples a teacher and its distilled students side by side.

    mcm app [--teacher world] [--student DIR ...] [--demo-out demo-out] [--port 7860]

The teacher runs at N guided steps, each student at the chosen step counts (1/2/4/8), all
on one prompt and seed; the page shows every video with its wall time and its speed-up
against the teacher. The models load once, at start-up; :class:`mcm.app.SideBySide` does
the sampling, this module only builds the gradio page around it. gradio is the optional
extra ``mcm[app]``.
"""

from __future__ import annotations

import argparse
import socket

from mcm.commands.arguments import count, device, integer

HELP = "a web app: a teacher and its students side by side on one prompt and seed"
INSTALL = "pip install 'mcm[app]'"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--teacher",
        default="world",
        help="teacher: diffusers directory, hub id, 'world' (the default) or 'world-wan'",
    )
    p.add_argument(
        "--student",
        action="append",
        default=[],
        help="a student: an `mcm export` folder or a training output folder holding export/ "
        "(repeatable; default: the students of --demo-out)",
    )
    p.add_argument(
        "--demo-out",
        default="demo-out",
        help="an `mcm demo` output folder whose */export students load when no --student is given",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default: loopback)")
    p.add_argument(
        "--port", type=integer(1, 65535), default=7860, help="port to serve on (default 7860)"
    )
    p.add_argument("--share", action="store_true", help="also serve on a public gradio.live link")
    p.add_argument(
        "--device", type=device, default=None, help="default: cuda if available, else cpu"
    )
    p.add_argument(
        "--threads", type=count, default=None, help="torch CPU threads (default: torch's)"
    )
    p.add_argument(
        "--out", default=None, help="folder for the videos (default: a temporary folder)"
    )


def run(args: argparse.Namespace) -> int:
    from mcm.app import demo_students, find_export
    from mcm.errors import UserError

    students = [find_export(s) for s in args.student] or demo_students(args.demo_out)
    check_address(args.host, args.port)
    try:
        import gradio as gr
    except ModuleNotFoundError as e:
        if e.name != "gradio":
            raise
        raise UserError(f"the app needs gradio, which is not installed: {INSTALL}") from None

    import torch

    from mcm.app import SideBySide

    if args.threads:
        torch.set_num_threads(args.threads)
    if not students:
        print(
            f"[app] no students: {args.demo_out}/ holds none; pass --student DIR (an `mcm "
            "export` folder) or run `mcm demo` first. Showing the teacher alone.",
            flush=True,
        )
    print("[app] loading the models ...", flush=True)
    side_by_side = SideBySide(args.teacher, students, out_dir=args.out, device=args.device)
    for student in side_by_side.students:
        print(f"[app] student {student.name}: {student.path}", flush=True)
    page = build_page(gr, side_by_side)
    page.queue(default_concurrency_limit=1)  # one sampling at a time: the models are shared
    _, local_url, share_url = page.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        allowed_paths=[str(side_by_side.out_dir)],
        show_error=True,
        quiet=True,
        prevent_thread_lock=True,
    )
    print(f"[app] serving on {local_url}" + (f" and {share_url}" if share_url else ""), flush=True)
    print("[app] Ctrl+C stops it", flush=True)
    page.block_thread()
    return 0


def check_address(host: str, port: int) -> None:
    """Fail before the models load when ``host:port`` cannot be served on.

    Raises:
        InputError: the port is taken or the host is not an address of this machine.
    """
    from mcm.errors import InputError

    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise InputError(
                f"cannot serve on {host}:{port} ({e.strerror or e}): pass another --port, or "
                "a --host this machine has (127.0.0.1, or 0.0.0.0 for every address)."
            ) from None


def slot_id(model: str, steps: int | None = None) -> str:
    """The page's element id of a video slot ("video-teacher", "video-mcm-4")."""
    name = "".join(c if c.isalnum() else "-" for c in model)
    return f"video-{name}" if steps is None else f"video-{name}-{steps}"


def timing_table(clips) -> str:
    """A markdown table of the clips' network evaluations, wall time and speed-up."""
    rows = ["| model | NFE | time | speed-up |", "|---|---:|---:|---:|"]
    rows += [f"| {c.label} | {c.nfe} | {c.seconds:.2f} s | {c.speedup:.1f}x |" for c in clips]
    return "\n".join(rows)


def build_page(gr, app):
    """The gradio Blocks around ``app`` (a :class:`mcm.app.SideBySide`): the inputs, one
    video slot for the teacher and one per student and step count, and the timing table."""
    from mcm.app import DEFAULT_STUDENT_STEPS, STUDENT_STEPS
    from mcm.errors import UserError

    names = ", ".join(f"**{s.name}** (`{s.path}`)" for s in app.students) or "none"
    with gr.Blocks(title="mcm: teacher vs students", analytics_enabled=False) as page:
        gr.Markdown(
            "## mcm: a teacher and its distilled students, side by side\n"
            f"Teacher: `{app.teacher_name}`. Students: {names}. Every model samples the same "
            "prompt from the same seed; the speed-up is the teacher's wall time over the "
            "model's."
        )
        with gr.Row():
            prompt = gr.Textbox(
                label="Prompt",
                value=app.prompts[0] if app.prompts else "",
                scale=4,
                elem_id="prompt",
            )
            seed = gr.Number(label="Seed", value=0, precision=0, minimum=0, elem_id="seed")
        with gr.Row():
            teacher_steps = gr.Slider(
                1,
                max(100, app.teacher_steps),
                value=app.teacher_steps,
                step=1,
                label="Teacher steps",
                elem_id="teacher-steps",
            )
            guidance = gr.Slider(
                0,
                max(15.0, app.guidance),
                value=app.guidance,
                step=0.5,
                label="Teacher guidance (CFG scale; 1 or less: no CFG)",
                elem_id="guidance",
            )
            student_steps = gr.CheckboxGroup(
                choices=list(STUDENT_STEPS),
                value=list(DEFAULT_STUDENT_STEPS),
                label="Student steps",
                elem_id="student-steps",
            )
        button = gr.Button("Generate", variant="primary", elem_id="generate")
        if app.prompts:
            gr.Examples(
                [[p] for p in app.prompts],
                inputs=[prompt],
                label="The world's prompts",
                examples_per_page=10,
            )
        slots = {}
        with gr.Row():
            slots["teacher", None] = _video(gr, "teacher", slot_id("teacher"), True)
            timings = gr.Markdown(elem_id="timings")
        for student in app.students:
            with gr.Row():
                for n in STUDENT_STEPS:
                    label = f"{student.name}, {n} step{'s' if n > 1 else ''}"
                    visible = n in DEFAULT_STUDENT_STEPS
                    slots[student.name, n] = _video(gr, label, slot_id(student.name, n), visible)

        def show_chosen(student_steps):
            return [gr.Video(visible=n in student_steps) for (_, n) in list(slots)[1:]]

        # gradio hands its progress tracker to the parameter whose default is one; tracking
        # tqdm, it also shows the teacher's sampling steps (the sampler's bar)
        tracker = gr.Progress(track_tqdm=True)

        def generate(prompt, seed, teacher_steps, guidance, student_steps, progress=tracker):
            try:
                clips = app.compare(
                    prompt, seed or 0, teacher_steps, guidance, student_steps, progress
                )
            except UserError as e:
                raise gr.Error(str(e)) from None
            done = {(c.model, None if c.model == "teacher" else c.steps): c for c in clips}
            updates = []
            for key in slots:
                clip = done.get(key)
                if clip is None:
                    updates.append(gr.Video(value=None, visible=False))
                else:
                    label = f"{clip.label}: {clip.seconds:.2f} s, {clip.speedup:.1f}x"
                    updates.append(gr.Video(value=str(clip.path), label=label, visible=True))
            return [timing_table(clips), *updates]

        student_steps.change(show_chosen, inputs=[student_steps], outputs=list(slots.values())[1:])
        button.click(
            generate,
            inputs=[prompt, seed, teacher_steps, guidance, student_steps],
            outputs=[timings, *slots.values()],
        )
    return page


def _video(gr, label: str, elem_id: str, visible: bool):
    return gr.Video(
        label=label,
        elem_id=elem_id,
        visible=visible,
        interactive=False,
        autoplay=True,
        loop=True,
        height=240,
    )
