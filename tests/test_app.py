"""`mcm app`'s core without a browser: the shipped world teacher and a student exported from it
(an untrained LoRA: the teacher's weights behind the student's sampler), sampled side by side
into real mp4 files; the student folders it accepts; its errors."""

import socket
import sys

import pytest

from mcm import cli
from mcm.app import SideBySide, demo_students, find_export, teacher_settings, unique_names
from mcm.errors import InputError
from mcm.media import read_video
from mcm.models import attach_lora, export_student, load_teacher
from mcm.models.tiny import save_tiny_pipeline
from mcm.paths import WORLD_TEACHER

PROMPT = "a red circle moving left"


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    """A `mcm demo`-shaped folder: mcm/export holds a student of the world teacher, lcm/ only a
    checkpoint (a run without its export)."""
    root = tmp_path_factory.mktemp("demo-out")
    bundle = load_teacher("world", device="cpu")
    attach_lora(bundle.denoiser, rank=4, alpha=4)
    export_student(bundle, root / "mcm" / "export", sampling={"num_frames": 8})
    (root / "lcm" / "checkpoint-100").mkdir(parents=True)
    return root


def test_compare_samples_the_teacher_and_each_student_step_count(demo_out, tmp_path):
    app = SideBySide("world", [demo_out / "mcm"], out_dir=tmp_path, warm_up=False)
    assert (app.teacher_steps, app.guidance) == (50, 2.5)  # the world teacher's own
    assert PROMPT in app.prompts and len(app.prompts) == len(set(app.prompts)) > 100
    seen = []
    clips = app.compare(
        PROMPT, seed=3, teacher_steps=2, student_steps=[2, 1], progress=lambda f, _: seen.append(f)
    )
    assert [(c.model, c.steps, c.nfe) for c in clips] == [
        ("teacher", 2, 4),
        ("mcm", 1, 1),
        ("mcm", 2, 2),
    ]
    assert [c.label for c in clips] == ["teacher, 2 steps, CFG 2.5", "mcm, 1 step", "mcm, 2 steps"]
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) == 4
    teacher = clips[0]
    assert teacher.speedup == 1.0
    for clip in clips:
        assert clip.path.parent.parent == tmp_path and clip.path.suffix == ".mp4"
        assert clip.seconds > 0 and clip.speedup == pytest.approx(teacher.seconds / clip.seconds)
        video = read_video(clip.path)  # 32x32 frames enlarged 8x for the page
        assert video.shape == (3, 8, 256, 256)
    # the same seed gives the same video, in a new folder (a page may still show the old one)
    again = app.compare(PROMPT, seed=3, teacher_steps=2, student_steps=[1])
    assert again[1].path != clips[1].path
    assert (read_video(again[1].path) - read_video(clips[1].path)).abs().max() == 0


def test_compare_refuses_bad_input(demo_out, tmp_path):
    app = SideBySide("world", [demo_out / "mcm" / "export"], out_dir=tmp_path, warm_up=False)
    with pytest.raises(InputError, match="Empty prompt"):
        app.compare("  ", student_steps=[1])
    for steps in (0, 1001):
        with pytest.raises(InputError, match="Teacher steps must be in 1..1000"):
            app.compare(PROMPT, teacher_steps=steps)
    with pytest.raises(InputError, match="Student steps must be in 1..50 for mcm"):
        app.compare(PROMPT, teacher_steps=1, student_steps=[51])
    assert not any(tmp_path.iterdir())  # checked before anything is sampled


def test_the_student_folders_it_accepts(demo_out, tmp_path):
    export = demo_out / "mcm" / "export"
    assert find_export(export) == export
    assert find_export(demo_out / "mcm") == export  # a training output folder
    assert demo_students(demo_out) == [export]  # lcm/ has no export yet
    assert demo_students(tmp_path / "absent") == []
    with pytest.raises(InputError, match="is not a folder: pass an export written by `mcm export`"):
        find_export(tmp_path / "absent")
    with pytest.raises(InputError, match=r"without export/.*mcm export --teacher"):
        find_export(demo_out / "lcm")
    with pytest.raises(InputError, match="holds no student"):
        find_export(tmp_path)


def test_two_students_of_one_name_get_two_names():
    assert unique_names(["mcm", "lcm", "mcm", "teacher"]) == ["mcm", "lcm", "mcm-2", "teacher-2"]


def test_teacher_settings_come_from_a_world_manifest(tmp_path):
    settings = teacher_settings(WORLD_TEACHER)
    assert settings["num_inference_steps"] == 50 and settings["guidance_scale"] == 2.5
    assert (settings["num_frames"], settings["height"], settings["width"]) == (8, 32, 32)
    assert teacher_settings(tmp_path) == {}


def test_a_wan_teacher_samples_at_its_students_size(tmp_path):
    """A WanPipeline has no size of its own: the teacher takes its student's (the card's)."""
    teacher = save_tiny_pipeline("wan", tmp_path / "teacher")
    bundle = load_teacher(str(teacher), device="cpu", max_sequence_length=16)
    attach_lora(bundle.denoiser, rank=4, alpha=4)
    size = {"num_frames": 5, "height": 16, "width": 16}
    export_student(bundle, tmp_path / "wan", sampling={"max_sequence_length": 16, **size})
    app = SideBySide(str(teacher), [tmp_path / "wan"], out_dir=tmp_path / "videos", warm_up=False)
    assert app.teacher.sampling == size and not app.prompts  # no world manifest
    assert (app.teacher_steps, app.guidance) == (50, 9.0)
    clips = app.compare(PROMPT, teacher_steps=2, student_steps=[1])
    assert [c.model for c in clips] == ["teacher", "wan"]
    for clip in clips:
        assert read_video(clip.path).shape == (3, 5, 256, 256)


def test_mcm_app_names_a_bad_student_and_the_fix(tmp_path, capsys):
    assert cli.main(["app", "--student", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("mcm app: --student") and "mcm export" in err and len(err.splitlines()) == 1
    )


def test_mcm_app_without_gradio_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` fails as if not installed
    assert cli.main(["app", "--demo-out", str(tmp_path)]) == 2
    assert "pip install 'mcm[app]'" in capsys.readouterr().err


def test_mcm_app_refuses_a_port_in_use_before_loading(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["app", "--demo-out", str(tmp_path), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot serve on 127.0.0.1:{port}" in err and "another --port" in err
