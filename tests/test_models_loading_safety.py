"""A teacher's model_index.json cannot make `load_teacher` import or call arbitrary code."""

import json
import re
from pathlib import Path

import pytest

from mcm.models import load_teacher
from mcm.models.loading import ALLOWED_LIBRARIES
from mcm.paths import resolve_teacher

MARKER_MODULE = """
import pathlib
pathlib.Path({marker!r}).write_text("imported")
AutoencoderKL = type("AutoencoderKL", (), {{}})
def system(*args):
    pathlib.Path({marker!r}).write_text("called")
"""


def hostile_folder(tmp_path, component: str, spec) -> str:
    """A copy of the world teacher's model_index.json with one component replaced: the
    refusal must come before any weights are read, so the folder needs nothing else."""
    index = json.loads(Path(resolve_teacher("world"), "model_index.json").read_text())
    index[component] = spec
    folder = tmp_path / "teacher"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps(index))
    return str(folder)


@pytest.mark.parametrize(
    ("component", "spec", "what"),
    [
        ("vae", ["evil_lib", "AutoencoderKL"], "names library 'evil_lib'"),  # a module on sys.path
        ("scheduler", ["os", "system"], "names library 'os'"),
        ("tokenizer", ["subprocess", "Popen"], "names library 'subprocess'"),
        ("text_encoder", ["builtins", "eval"], "names library 'builtins'"),
        ("vae", ["diffusers.utils", "AutoencoderKL"], "names library 'diffusers.utils'"),  # dotted
        ("vae", ["diffusers", "utils.testing_utils"], "not a model class"),  # an attribute path
        ("vae", ["diffusers", "utils"], "not a model class"),  # a module of the library
        ("scheduler", ["diffusers", "AutoencoderKL"], "not a scheduler class"),  # wrong kind
        ("text_encoder", ["transformers", "pipeline"], "not a model class"),  # a function
        ("text_encoder", ["transformers", "AutoModel"], "not a model class"),  # runs auto_map
        ("tokenizer", ["mcm", "cli"], "not a tokenizer class"),
        ("vae", ["diffusers", "DiffusionPipeline"], "not a model class"),
        ("vae", "diffusers.AutoencoderKL", "is 'diffusers.AutoencoderKL'"),  # not a pair
    ],
)
def test_a_hostile_model_index_is_refused_and_runs_nothing(
    tmp_path, monkeypatch, component, spec, what
):
    marker = tmp_path / "marker.txt"
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "evil_lib.py").write_text(MARKER_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(lib))  # so that an import by name would succeed
    folder = hostile_folder(tmp_path, component, spec)
    with pytest.raises(ValueError) as err:
        load_teacher(folder, device="cpu")
    message = str(err.value)
    assert what in message
    assert f"{folder}/model_index.json: component {component!r}" in message
    if isinstance(spec, list):
        assert f"allowed libraries: {', '.join(ALLOWED_LIBRARIES)}" in message
        assert repr(spec[0]) in message
    assert not marker.exists()  # nothing was imported or called


def test_the_error_says_how_to_fix_it(tmp_path):
    with pytest.raises(ValueError, match=re.escape('(e.g. ["diffusers", "DDIMScheduler"])')):
        load_teacher(hostile_folder(tmp_path, "scheduler", ["os", "system"]), device="cpu")


@pytest.mark.parametrize("family", ["modelscope", "animatediff"])
def test_real_pipelines_still_load(family, tiny_dirs):
    bundle = load_teacher(str(tiny_dirs[family]), device="cpu")  # save_tiny_pipeline folders
    assert bundle.family == family
    assert type(bundle.vae.vae).__name__ == "AutoencoderKL"
    assert type(bundle.text_encoder.tokenizer).__name__ == "CLIPTokenizer"
    assert bundle.scheduler_config["_class_name"] == "DDIMScheduler"


def test_the_world_teacher_still_loads():
    bundle = load_teacher("world", device="cpu")
    assert bundle.family == "modelscope"
    assert type(bundle.text_encoder.text_encoder).__name__ == "CLIPTextModel"
