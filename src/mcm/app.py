"""The core of `mcm app`: a teacher and its distilled students, loaded once, sampled side by
side on one prompt and seed. No gradio here: :mod:`mcm.commands.app` builds the page around
:meth:`SideBySide.compare`, which tests call directly.

Every model samples through :func:`~mcm.models.sampling.sample_teacher` (guided DDIM, or
Euler steps on a flow teacher) or :func:`~mcm.models.sampling.sample_student` (multistep
consistency) on a bundle from :func:`~mcm.models.load_teacher`, as `mcm demo` samples the
students' merged exports. With one seed, every model starts from the same noise x_T
whenever its latent shape is the teacher's.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

from mcm.errors import InputError
from mcm.media import write_video
from mcm.models import TeacherBundle, load_teacher
from mcm.models.export import STUDENT_JSON
from mcm.models.sampling import sample_student, sample_teacher
from mcm.paths import resolve_teacher
from mcm.world.teacher import MANIFEST
from mcm.world.train_data import world_prompts

STUDENT_STEPS = (1, 2, 4, 8)  # the step counts the app offers for a student
DEFAULT_STUDENT_STEPS = (1, 2, 4)
# A teacher without a world build's manifest.json samples as `mcm generate` does
# (ModelScope's 50 guided DDIM steps at scale 9).
TEACHER_STEPS, TEACHER_GUIDANCE = 50, 9.0
DISPLAY_SIZE = 256  # videos smaller than this are enlarged (nearest neighbour) for the page
SIZE_KEYS = ("num_frames", "height", "width")

Progress = Callable[[float, str], None]  # (fraction done, what runs now)


@dataclass(frozen=True)
class Clip:
    """One sampled video of a comparison.

    Attributes:
        label: what the page shows above it ("mcm, 4 steps").
        path: the mp4 written by :func:`mcm.media.write_video`.
        seconds: wall time of the sampling call (text encoding, denoising, VAE decode).
        speedup: the teacher's seconds / these seconds (the teacher: 1).
        model: "teacher" or the student's name; steps: sampling steps; nfe: network
            evaluations (a guided teacher step costs two).
    """

    label: str
    path: Path
    seconds: float
    speedup: float
    model: str
    steps: int
    nfe: int


@dataclass
class Model:
    """A loaded model and how it samples: ``sampling`` holds the keyword arguments of its
    sampler that its card or manifest fixes (size, frames; a student's timestep scaling and
    grid)."""

    name: str
    path: Path
    bundle: TeacherBundle
    sampling: dict
    fps: float = 8
    card: dict = field(default_factory=dict)  # a student's mcm_student.json "sampling"


def find_export(path: str | Path) -> Path:
    """The export folder of ``path``: an `mcm export` folder (mcm_student.json + merged/), or a
    training output folder (`mcm train`, `mcm demo`) holding one as export/.

    Raises:
        InputError: ``path`` is neither; the message names the fix.
    """
    path = Path(path)
    if not path.is_dir():
        raise InputError(
            f"--student {str(path)!r} is not a folder: pass an export written by `mcm export` "
            "(it holds mcm_student.json and merged/) or a training output folder (with export/)."
        )
    for folder in (path, path / "export"):
        if (folder / STUDENT_JSON).is_file() and (folder / "merged" / "model_index.json").is_file():
            return folder
    if any(path.glob("checkpoint-*")):
        raise InputError(
            f"--student {str(path)!r} is a training output without export/: export a checkpoint "
            f"first (mcm export --teacher TEACHER --lora {path}/checkpoint-N --out {path}/export)."
        )
    raise InputError(
        f"--student {str(path)!r} holds no student: pass an export written by `mcm export` "
        f"(with {STUDENT_JSON} and merged/) or a training output folder of `mcm train` / "
        "`mcm demo` (with export/)."
    )


def demo_students(demo_out: str | Path) -> list[Path]:
    """The students a `mcm demo` output folder holds (its */export folders): the MCM student
    first, then the others (the LCM baseline) by name; none when the folder does not exist."""
    exports = [
        p.parent
        for p in Path(demo_out).glob(f"*/export/{STUDENT_JSON}")
        if (p.parent / "merged" / "model_index.json").is_file()
    ]
    return sorted(exports, key=lambda e: (student_name(e) != "mcm", student_name(e)))


def student_name(export: Path) -> str:
    """A training folder's name for its export/ (demo-out/mcm/export -> "mcm"), else the
    export folder's own name."""
    return export.parent.name if export.name == "export" else export.name


def unique_names(names: list[str]) -> list[str]:
    """``names`` with a repeated one (or "teacher") numbered: [mcm, mcm] -> [mcm, mcm-2]."""
    taken, out = {"teacher"}, []
    for name in names:
        unique, k = name, 1
        while unique in taken:
            k += 1
            unique = f"{name}-{k}"
        taken.add(unique)
        out.append(unique)
    return out


def teacher_settings(path: str | Path) -> dict:
    """How a teacher is meant to be sampled, from a world build's manifest.json
    (``num_inference_steps``, ``guidance_scale``, ``num_frames``, ``height``, ``width``, Wan's
    ``max_sequence_length``); empty for any other teacher."""
    manifest = Path(path) / MANIFEST
    if not manifest.is_file():
        return {}
    return json.loads(manifest.read_text()).get("sampling", {})


def load_student(export: Path, device=None) -> Model:
    """An export's merged pipeline as a bundle, with the sampling settings of its card."""
    card = json.loads((export / STUDENT_JSON).read_text())["sampling"]
    bundle = load_teacher(
        str(export / "merged"),
        device=device,
        max_sequence_length=card.get("max_sequence_length", 512),
    )
    keys = ("timestep_scaling", "original_inference_steps", *SIZE_KEYS)
    sampling = {k: card[k] for k in keys if k in card}
    return Model(student_name(export), export, bundle, sampling, card.get("fps", 8), card)


def enlarge(video: Tensor, size: int = DISPLAY_SIZE) -> Tensor:
    """[3, F, H, W] -> [3, F, kH, kW] by repeating pixels, k = size // max(H, W) (>= 1): a
    32x32 world clip stays sharp on the page instead of being smoothed by the browser."""
    k = max(1, size // max(video.shape[-2:]))
    return video.repeat_interleave(k, dim=-2).repeat_interleave(k, dim=-1)


class SideBySide:
    """A teacher and its students, loaded once; :meth:`compare` samples them all.

    Args:
        teacher: a diffusers pipeline folder, hub id, "world" or "world-wan".
        students: export folders or training output folders (see :func:`find_export`).
        out_dir: where the videos go (default: a new temporary folder).
        device: torch device (default: CUDA if available, else CPU).
        warm_up: sample each model once at 1 step, so that the first comparison's times are
            not those of a cold start.
    """

    def __init__(
        self,
        teacher: str = "world",
        students: Sequence[str | Path] = (),
        out_dir: str | Path | None = None,
        device=None,
        warm_up: bool = True,
    ):
        exports = [find_export(s) for s in students]  # every path checked before any loading
        names = unique_names([student_name(e) for e in exports])
        path = resolve_teacher(teacher)
        settings = teacher_settings(path)
        self.teacher_steps = int(settings.get("num_inference_steps", TEACHER_STEPS))
        self.guidance = float(settings.get("guidance_scale", TEACHER_GUIDANCE))
        self.is_world = bool(settings)
        self.students = [load_student(e, device) for e in exports]
        for student, name in zip(self.students, names):
            student.name = name
        # What the teacher's manifest does not fix (a Wan transformer has no size of its
        # own), it takes from the first student's card: the size the students were trained at.
        for key in (*SIZE_KEYS, "max_sequence_length"):
            given = [s.card[key] for s in self.students if key in s.card]
            if key not in settings and given:
                settings[key] = given[0]
        bundle = load_teacher(
            path, device=device, max_sequence_length=settings.get("max_sequence_length", 512)
        )
        size = {k: settings[k] for k in SIZE_KEYS if k in settings}
        self.teacher = Model("teacher", Path(path), bundle, size)
        self.teacher_name = teacher  # as given: "world", a folder, a hub id
        self.out_dir = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="mcm-app-"))
        self.runs = 0
        if warm_up:
            self._sample(self.teacher, ["warm-up"], 1, self.guidance, 0)
            for student in self.students:
                self._sample(student, ["warm-up"], 1, None, 0)

    @property
    def prompts(self) -> list[str]:
        """Example prompts: the world's vocabulary for a world teacher, else none."""
        return world_prompts() if self.is_world else []

    def _sample(
        self, model: Model, prompts: list[str], steps: int, guidance: float | None, seed: int
    ) -> Tensor:
        """[B, 3, F, H, W] in [-1, 1] on the CPU; ``guidance`` None: a student."""
        if guidance is None:
            video = sample_student(model.bundle, prompts, steps, seed=seed, **model.sampling)
        else:
            video = sample_teacher(
                model.bundle, prompts, steps, guidance, seed=seed, **model.sampling
            )
        return video.cpu()

    def compare(
        self,
        prompt: str,
        seed: int = 0,
        teacher_steps: int | None = None,
        guidance: float | None = None,
        student_steps: Sequence[int] = DEFAULT_STUDENT_STEPS,
        progress: Progress | None = None,
    ) -> list[Clip]:
        """Sample ``prompt`` with ``seed``: the teacher at ``teacher_steps`` with CFG scale
        ``guidance`` (default: the teacher's own, e.g. 50 and 2.5 for the world teacher), then
        each student at each of ``student_steps``, and write each video as an mp4.

        Returns:
            the clips, the teacher's first, then by student and step count.

        Raises:
            InputError: an empty prompt, a negative seed or guidance, or a step count out of
                a model's range.
        """
        prompt = prompt.strip() if isinstance(prompt, str) else ""
        if not prompt:
            raise InputError("Empty prompt: type what the video should show.")
        seed = int(seed)
        steps = self.teacher_steps if teacher_steps is None else int(teacher_steps)
        guidance = self.guidance if guidance is None else float(guidance)
        student_steps = sorted({int(n) for n in student_steps})
        T = self.teacher.bundle.denoiser.schedule.num_train_timesteps
        if seed < 0 or guidance < 0:
            raise InputError(
                f"The seed and the guidance scale must be >= 0; got {seed}, {guidance}."
            )
        if not 1 <= steps <= T:
            raise InputError(f"Teacher steps must be in 1..{T}; got {steps}.")
        for student in self.students:
            grid = student.sampling.get("original_inference_steps", 50)
            if any(not 1 <= n <= grid for n in student_steps):
                raise InputError(
                    f"Student steps must be in 1..{grid} for {student.name}; got {student_steps}."
                )
        run = self.out_dir / f"{self.runs:04d}"
        self.runs += 1
        jobs = [(self.teacher, steps, guidance)]
        jobs += [(s, n, None) for s in self.students for n in student_steps]
        clips, teacher_seconds = [], None
        for i, (model, n, scale) in enumerate(jobs):
            label = self._label(model, n, scale)
            if progress is not None:
                progress(i / len(jobs), f"sampling {label}")
            start = time.perf_counter()
            video = self._sample(model, [prompt], n, scale, seed)
            seconds = time.perf_counter() - start
            teacher_seconds = teacher_seconds or seconds
            path = write_video(
                run / f"{i:02d}-{n}-steps.mp4",
                enlarge(video[0]),
                fps=model.fps,
                pixel_format="yuv420p",  # what every browser decodes (yuv444p is High 4:4:4)
                faststart=True,
            )
            nfe = n * (2 if scale is not None and scale > 1 else 1)
            clips.append(Clip(label, path, seconds, teacher_seconds / seconds, model.name, n, nfe))
        if progress is not None:
            progress(1.0, "done")
        return clips

    @staticmethod
    def _label(model: Model, steps: int, guidance: float | None) -> str:
        plural = "s" if steps > 1 else ""
        if guidance is None:
            return f"{model.name}, {steps} step{plural}"
        cfg = f", CFG {guidance:g}" if guidance > 1 else ", no CFG"
        return f"{model.name}, {steps} step{plural}{cfg}"


__all__ = [
    "DEFAULT_STUDENT_STEPS",
    "STUDENT_STEPS",
    "Clip",
    "SideBySide",
    "demo_students",
    "enlarge",
    "find_export",
    "student_name",
    "teacher_settings",
    "unique_names",
]
