"""Exports ready for a model hub: the model cards, portable teacher references, no local
paths, and the cards' loading code run as written samples the student's own video."""

import json
import math
import re
import shutil

import numpy as np
import pytest
import torch
from huggingface_hub.repocard import metadata_load
from safetensors import safe_open

from mcm import cli
from mcm.models import (
    attach_lora,
    export_student,
    load_student_pipeline,
    load_teacher,
    lora_parameters,
    sample_student,
    save_lora,
)
from mcm.models.model_card import FOLDER_PLACEHOLDER, LICENCE_PLACEHOLDER, write_model_cards
from mcm.models.provenance import describe_source, portable_reference, resolve_reference
from mcm.models.student import student_teacher
from mcm.models.tiny import save_tiny_pipeline
from mcm.paths import CONFIGS, WORLD_TEACHER
from mcm.training.config import load_train_config

FAMILIES = ["modelscope", "animatediff", "wan"]
SAMPLING = {
    "modelscope": {"num_frames": 3, "num_inference_steps": 2},
    "animatediff": {"num_frames": 3, "num_inference_steps": 2},
    "wan": {"num_frames": 5, "num_inference_steps": 2, "height": 32, "width": 32,
            "max_sequence_length": 16},
}  # fmt: skip
DEMO_METRICS = {
    "teacher@50": {"prompt_accuracy": 0.92, "frame_fd": 7.8, "nfe": 100},
    "mcm@4": {"prompt_accuracy": 0.79, "frame_fd": 11.2, "nfe": 4},
}
TEACHER_CARD = "---\nlicense: cc-by-nc-4.0\ntags:\n- text-to-video\n---\n# A teacher\n"
HUB_FILES = {".json", ".safetensors", ".md", ".txt", ".model"}  # configs, weights, cards, vocab


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """family -> (student bundle, export dir): a perturbed LoRA on each tiny teacher.
    ModelScope is exported with its training config, metrics and a motion head; the Wan
    teacher has a model card that gives its licence."""
    root = tmp_path_factory.mktemp("card")
    out = {}
    for family in FAMILIES:
        teacher = save_tiny_pipeline(family, root / f"{family}_teacher")
        if family == "wan":
            (teacher / "README.md").write_text(TEACHER_CARD)
        bundle = load_teacher(str(teacher), device="cpu", max_sequence_length=16)
        attach_lora(bundle.denoiser, rank=4, alpha=8)
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for p in lora_parameters(bundle.denoiser):
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
        extra = {}
        if family == "modelscope":
            extra = {
                "extra_modules": {"motion_head": torch.nn.Conv2d(4, 4, 1)},
                "training_config": load_train_config(str(CONFIGS / "world.yaml")),
                "metrics": DEMO_METRICS,
            }
        export = export_student(bundle, root / "runs" / family, sampling=SAMPLING[family], **extra)
        out[family] = (bundle, export)
    return out


def _code_blocks(card: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card, flags=re.S)


def _run(code: str, folder, cwd, monkeypatch) -> dict:
    """Execute a card's code as a user would, with the folder line pointing at ``folder``."""
    assert code.count(FOLDER_PLACEHOLDER) == 1
    monkeypatch.chdir(cwd)
    namespace = {"__name__": "__card__"}
    exec(compile(code.replace(f'"{FOLDER_PLACEHOLDER}"', repr(str(folder))), "card", "exec"),
         namespace)  # fmt: skip
    assert (cwd / "video.mp4").stat().st_size > 0
    (cwd / "video.mp4").unlink()
    return namespace


def _our_video(bundle, family) -> np.ndarray:
    """mcm's own sampling of the student, as the card's code returns it: [F, H, W, 3] in
    [0, 1]."""
    sampling = SAMPLING[family]
    prompt = "a panda playing the guitar by a lake"
    video = sample_student(
        bundle, [prompt], sampling["num_inference_steps"], seed=0,
        num_frames=sampling["num_frames"], height=32, width=32,
    )  # fmt: skip
    return (video[0] / 2 + 0.5).clamp(0, 1).permute(1, 2, 3, 0).numpy()


@pytest.mark.parametrize("family", FAMILIES)
def test_cards_carry_the_front_matter_a_hub_reads(family, exported):
    _, export = exported[family]
    for card in (export / "README.md", export / "merged" / "README.md"):
        meta = metadata_load(card)
        assert meta["library_name"] == "diffusers" and meta["pipeline_tag"] == "text-to-video"
        assert {"mcm", "motion-consistency-model", family} <= set(meta["tags"])
        assert "base_model" not in meta  # a local teacher has no hub id
        if family == "wan":  # from the teacher's own card
            assert meta["license"] == "cc-by-nc-4.0" and "license_name" not in meta
        else:  # unknown: a placeholder the user must replace
            assert {k: meta[k] for k in LICENCE_PLACEHOLDER} == LICENCE_PLACEHOLDER
    text = (export / "README.md").read_text()
    for section in ("Base model", "Method", "Sampling", "Training data", "Metrics", "Licence"):
        assert f"## {section}\n" in text
    assert "| 2 |" in text and "guidance_scale=1.0" in text
    if family == "modelscope":  # the training config and the metrics reached the card
        assert text.startswith("---") and "# MCM student of a local teacher" in text
        assert "`world:lowq_video:512` (the built-in world)" in text
        assert "frame discriminator" in text and "`learnable`" in text
        assert "| mcm@4 | 0.79 | 11.2 | 4 |" in text
    else:
        assert "without its training config" in text and "None recorded" in text


@pytest.mark.parametrize("family", FAMILIES)
def test_no_local_path_in_the_export(family, exported, tmp_path_factory):
    _, export = exported[family]
    root = str(export.parent.parent)
    card = json.loads((export / "mcm_student.json").read_text())
    assert card["teacher"] == f"../../{family}_teacher"
    assert student_teacher(export) == str(export.parent.parent / f"{family}_teacher")
    for path in export.rglob("*"):
        if path.suffix == ".safetensors":
            with safe_open(str(path), "pt") as f:
                text = json.dumps(f.metadata() or {})
        elif path.is_file():
            text = path.read_text()
        else:
            continue
        assert root not in text and str(WORLD_TEACHER.parent) not in text, path
        if path.suffix == ".json":
            assert "_name_or_path" not in text, path
            # no string value that is an absolute path (vocabularies have "/" tokens)
            assert not re.search(r'"/[\w.-]+/[\w./-]*"(?!\s*:)', text), path


@pytest.mark.parametrize("family", FAMILIES)
def test_export_folder_uploads_as_is(family, exported):
    _, export = exported[family]
    top = {p.name for p in export.iterdir()}
    assert top == {"README.md", "mcm_student.json", "lora", "merged"} | (
        {"aux"} if family == "modelscope" else set()
    )
    for path in export.rglob("*"):
        assert not path.is_symlink(), path
        assert path.is_dir() or path.is_file(), path
        assert not path.name.startswith("."), path
        if path.suffix == ".safetensors":  # the tensors and a header, nothing else
            with safe_open(str(path), "pt") as f:
                slices = [f.get_slice(k) for k in f.keys()]  # noqa: SIM118
            assert {s.get_dtype() for s in slices} == {"F32"}, path
            tensors = sum(4 * math.prod(s.get_shape()) for s in slices)
            assert tensors <= path.stat().st_size <= tensors + 2**16, path
        elif path.is_file():
            assert path.suffix in HUB_FILES, path
            assert path.stat().st_size < 2**20, path  # configs, cards, the tiny vocabulary


@pytest.mark.parametrize("family", FAMILIES)
def test_card_code_samples_the_students_video(family, exported, tmp_path, monkeypatch):
    bundle, export = exported[family]
    ours = _our_video(bundle, family)
    merged_code, lora_code = _code_blocks((export / "README.md").read_text())
    video = _run(merged_code, export, tmp_path, monkeypatch)["video"]
    assert video.shape == ours.shape and np.abs(video - ours).max() <= 1e-4
    # the merged folder's own card, with the merged folder as its folder
    (merged_only,) = _code_blocks((export / "merged" / "README.md").read_text())
    video = _run(merged_only, export / "merged", tmp_path, monkeypatch)["video"]
    assert np.abs(video - ours).max() <= 1e-4

    namespace = _run(lora_code, export, tmp_path, monkeypatch)
    assert np.abs(namespace["video"] - ours).max() <= 1e-4
    if family == "animatediff":  # the teacher's own scheduler samples another video
        assert type(namespace["pipe"].scheduler).__name__ == "LCMScheduler"
        line = next(s for s in lora_code.splitlines() if s.startswith("pipe.scheduler ="))
        stock = _run(lora_code.replace(line, ""), export, tmp_path, monkeypatch)
        assert type(stock["pipe"].scheduler).__name__ == "DDIMScheduler"
        assert np.abs(stock["video"] - ours).max() > 0.05


def test_teacher_references(tmp_path):
    out = tmp_path / "runs" / "a" / "export"
    assert portable_reference(str(WORLD_TEACHER), out) == "world"
    assert portable_reference("world", out) == "world"
    assert resolve_reference("world", out) == str(WORLD_TEACHER)
    assert portable_reference("org/model-1.3B", out) == "org/model-1.3B"  # a hub id
    # a folder of the hub cache is its hub id again
    snapshot = tmp_path / "hub" / "models--org--model" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    assert portable_reference(str(snapshot), out) == "org/model"
    # a local folder, relative to the export; inside it, with "./" (never a hub id)
    (tmp_path / "teacher").mkdir()
    assert portable_reference(str(tmp_path / "teacher"), out) == "../../../teacher"
    (out / "models" / "t").mkdir(parents=True)
    assert portable_reference(str(out / "models" / "t"), out) == "./models/t"
    assert resolve_reference("./models/t", out) == str(out / "models" / "t")
    assert resolve_reference("/old/absolute/teacher", out) == "/old/absolute/teacher"
    assert describe_source("/tmp/x/world-data/lowq_video-n512-seed0") == (
        "`world:lowq_video:512` (the built-in world, rendered with seed 0)"
    )
    assert describe_source("/data/clips") == "a local dataset (`clips`)"
    assert describe_source("https://user:key@host.org/s/{0..9}.tar?sig=1") == (
        "`https://host.org/s/{0..9}.tar`"
    )


def test_export_with_a_hub_teacher_names_it_as_base_model(exported, tmp_path):
    """A teacher from the hub cache: base_model is its id, the licence comes from its card."""
    _, export = exported["animatediff"]
    copy = tmp_path / "export"
    shutil.copytree(export, copy)
    student = json.loads((copy / "mcm_student.json").read_text())
    student["teacher"] = "org/animatediff-model"
    student["license"] = {"license": "apache-2.0", "source": "the teacher's model card"}
    (copy / "mcm_student.json").write_text(json.dumps(student))
    write_model_cards(copy, metrics={"metrics": {"clipsim": {"value": 0.31, "weights": {}}}})
    for card in (copy / "README.md", copy / "merged" / "README.md"):
        meta = metadata_load(card)
        assert meta["base_model"] == "org/animatediff-model" and meta["license"] == "apache-2.0"
    assert metadata_load(copy / "merged" / "README.md")["base_model_relation"] == "finetune"
    text = (copy / "README.md").read_text()
    assert 'teacher = "org/animatediff-model"' in text and "| student | 0.31 |" in text
    assert json.loads((copy / "mcm_student.json").read_text())["metrics"] == {
        "student": {"clipsim": 0.31}
    }
    _, info = load_student_pipeline(copy)
    assert info["teacher"] == "org/animatediff-model"


def test_mcm_export_reads_the_checkpoint_config_and_metrics(exported, tmp_path, capsys):
    bundle, export = exported["animatediff"]
    checkpoint = tmp_path / "run" / "checkpoint-10"
    save_lora(bundle.denoiser, checkpoint / "lora.safetensors")
    lcm = load_train_config(str(CONFIGS / "world-lcm.yaml"))
    (checkpoint / "config.yaml").write_text(
        "method:\n  motion: raw\n  w_min: 1.5\n  w_max: 3.0\ndiscriminator:\n  enabled: false\n"
        f"data:\n  video:\n    source: {lcm.data.video.source}\n    num_frames: 8\n"
    )
    (tmp_path / "metrics.json").write_text(json.dumps(DEMO_METRICS))
    teacher = student_teacher(export)
    out = tmp_path / "export"
    argv = ["export", "--teacher", teacher, "--lora", str(checkpoint), "--out", str(out),
            "--num-frames", "3", "--metrics", str(tmp_path / "metrics.json")]  # fmt: skip
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert "licence is unknown" in capsys.readouterr().err
    text = (out / "README.md").read_text()
    assert "# LCM student" in text and "lcm" in metadata_load(out / "README.md")["tags"]
    assert "Videos: `world:lowq_video:512` (the built-in world); 8 frames" in text
    assert "| teacher@50 | 0.92 | 7.8 | 100 |" in text
    assert json.loads((out / "mcm_student.json").read_text())["teacher"].startswith("../")
    assert student_teacher(out) == teacher
    bad = ["export", "--teacher", teacher, "--lora", str(checkpoint), "--out", str(tmp_path / "b")]
    assert cli.main([*bad, "--metrics", str(tmp_path / "none.json")]) == 2
    (tmp_path / "empty.json").write_text("{}")
    assert cli.main([*bad, "--metrics", str(tmp_path / "empty.json")]) == 2
    assert "hold no numbers" in capsys.readouterr().err
    assert cli.main([*bad, "--config", str(tmp_path / "none.yaml")]) == 2
    assert "--config: no such file" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
