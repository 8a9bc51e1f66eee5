"""Load a teacher (a diffusers text-to-video pipeline) as the pieces the library uses.

The family is read from ``model_index.json``: ``TextToVideoSDPipeline`` -> ModelScope,
``AnimateDiffPipeline`` -> AnimateDiff, ``WanPipeline`` -> Wan (a flow-matching
transformer). An SD1.5 ``StableDiffusionPipeline`` becomes an AnimateDiff teacher when a
``motion_adapter`` is given. Anything else is a clear error.

A model folder is data, not code: the ``[library, class]`` pairs of its ``model_index.json``
are looked up only in the allow-listed libraries (``ALLOWED_LIBRARIES``; no other module is
imported) and must name a model, scheduler or tokenizer class there (``component_class``).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AnimateDiffPipeline,
    DiffusionPipeline,
    ModelMixin,
    MotionAdapter,
    SchedulerMixin,
    TextToVideoSDPipeline,
    UNet2DConditionModel,
    UNet3DConditionModel,
    UNetMotionModel,
    WanPipeline,
    WanTransformer3DModel,
)
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from mcm.errors import InputError
from mcm.models.denoiser import VideoDenoiser, make_denoiser
from mcm.models.precision import default_device, resolve_dtype
from mcm.models.text import TextEncoder, UMT5TextEncoder
from mcm.models.vae import VideoVAE, WanVideoVAE
from mcm.paths import resolve_teacher

PIPELINE_FAMILIES = {
    "TextToVideoSDPipeline": "modelscope",
    "AnimateDiffPipeline": "animatediff",
    "WanPipeline": "wan",
}
_IMAGE_PIPELINES = ("StableDiffusionPipeline",)

# Why an allow-list: the library names come from a file that travels with a (downloaded)
# model folder, and importing a module runs its code. Stock diffusers' from_pretrained
# likewise imports only the libraries it loads components from; here a class must also be
# an exported attribute of the library itself (no dotted paths) and a subclass of the base
# class of its component's kind, so neither a function (os.system) nor a helper class is
# reachable.
ALLOWED_LIBRARIES = ("diffusers", "transformers", "mcm")
_MODELS = (ModelMixin, PreTrainedModel)
_COMPONENT_KINDS: dict[str, tuple[str, tuple[type, ...]]] = {
    "unet": ("model", _MODELS),
    "transformer": ("model", _MODELS),
    "vae": ("model", _MODELS),
    "text_encoder": ("model", _MODELS),
    "tokenizer": ("tokenizer", (PreTrainedTokenizerBase,)),
    "scheduler": ("scheduler", (SchedulerMixin,)),
}


@dataclass
class TeacherBundle:
    """Everything a trainer or sampler needs from a teacher.

    Attributes:
        denoiser: the UNet behind :class:`VideoDenoiser` (the student once LoRA is attached).
        vae: :class:`VideoVAE`; text_encoder: :class:`TextEncoder` (tokenizer inside).
        scheduler_config: the teacher's scheduler config (dict, with ``_class_name``).
        family: "modelscope" | "animatediff" | "wan"; path: where it was loaded from;
        motion_adapter: the MotionAdapter path used for an SD1.5 base (else None).
    """

    denoiser: VideoDenoiser
    vae: VideoVAE
    text_encoder: TextEncoder
    scheduler_config: dict[str, Any]
    family: str
    path: str
    motion_adapter: str | None = None
    model_index: dict[str, Any] = field(default_factory=dict)

    @property
    def tokenizer(self):
        return self.text_encoder.tokenizer


def read_model_index(name_or_path: str) -> dict[str, Any]:
    """model_index.json of a local pipeline directory or a hub id.

    Raises:
        FileNotFoundError: a local path without model_index.json, or an unreachable hub id.
    """
    path = Path(name_or_path)
    if path.exists():
        index = path / "model_index.json"
        if not index.is_file():
            raise FileNotFoundError(
                f"{path} has no model_index.json: it is not a diffusers pipeline directory. "
                "Pass a folder written by DiffusionPipeline.save_pretrained."
            )
        try:
            return json.loads(index.read_text())
        except json.JSONDecodeError as e:
            raise InputError(
                f"{index} is not valid JSON ({e}); re-save the pipeline with save_pretrained."
            ) from None
    try:
        return dict(DiffusionPipeline.load_config(name_or_path))
    except Exception as e:  # hub errors come in many types
        raise FileNotFoundError(
            f"Cannot find teacher {name_or_path!r}: no such local directory, and the hub "
            f"lookup failed ({type(e).__name__}). Pass a local diffusers pipeline directory."
        ) from e


def detect_family(model_index: dict[str, Any], motion_adapter: str | None = None) -> str:
    """ "modelscope", "animatediff" or "wan" from a pipeline's model_index.json.

    Raises:
        ValueError: the pipeline is not a supported text-to-video pipeline.
    """
    name = model_index.get("_class_name", "<missing _class_name>")
    if name in PIPELINE_FAMILIES:
        return PIPELINE_FAMILIES[name]
    if name in _IMAGE_PIPELINES:
        if motion_adapter is not None:
            return "animatediff"
        raise InputError(
            f"{name} is an image pipeline, not a video one. To use it as an AnimateDiff "
            "teacher, also pass motion_adapter=<MotionAdapter directory or hub id>."
        )
    raise InputError(
        f"Unsupported pipeline {name!r}: mcm knows text-to-video pipelines of the types "
        f"{', '.join(PIPELINE_FAMILIES)} (ModelScopeT2V, AnimateDiff, Wan2.1)."
    )


def component_class(index: dict[str, Any], component: str, index_file: str) -> type:
    """The class that ``model_index.json`` names for ``component``, if it is a safe one.

    The library must be one of ``ALLOWED_LIBRARIES`` (checked before anything is imported),
    the class a public attribute of that library (a plain name, no dots) and a subclass of
    the component's kind: a diffusers/transformers model for ``unet``, ``vae`` and
    ``text_encoder``, a tokenizer for ``tokenizer``, a diffusers scheduler for ``scheduler``.

    Raises:
        ValueError: naming ``index_file``, the component, the library and the fix.
    """
    kind, bases = _COMPONENT_KINDS[component]
    spec = index.get(component)
    if not (
        isinstance(spec, (list, tuple)) and len(spec) == 2 and all(isinstance(x, str) for x in spec)
    ):
        raise InputError(
            f"{index_file}: component {component!r} is {spec!r}; a teacher needs it as "
            f'["library", "ClassName"], e.g. {_example(component)}. Re-save the pipeline '
            "with diffusers' save_pretrained."
        )
    library, class_name = spec
    allowed = ", ".join(ALLOWED_LIBRARIES)
    if library not in ALLOWED_LIBRARIES:
        raise InputError(
            f"{index_file}: component {component!r} names library {library!r}, which mcm does "
            f"not load classes from (allowed libraries: {allowed}); importing a library named "
            f"by a model folder would run its code. Use a pipeline whose {component} is a "
            f"{kind} class of {allowed}, or fix the entry (e.g. {_example(component)})."
        )
    cls = None
    if class_name.isidentifier() and not class_name.startswith("_"):
        try:
            cls = getattr(importlib.import_module(library), class_name, None)
        except (ImportError, RuntimeError):  # a lazily imported class whose module fails
            cls = None
    if not (isinstance(cls, type) and issubclass(cls, bases)):
        raise InputError(
            f"{index_file}: component {component!r} names [{library!r}, {class_name!r}], "
            f"which is not a {kind} class exported by {library} (allowed libraries: {allowed}). "
            f"Fix the entry to the {kind} class the folder was saved with "
            f"(e.g. {_example(component)})."
        )
    return cls


def _example(component: str) -> str:
    library, name = {
        "unet": ("diffusers", "UNet3DConditionModel"),
        "transformer": ("diffusers", "WanTransformer3DModel"),
        "vae": ("diffusers", "AutoencoderKL"),
        "text_encoder": ("transformers", "CLIPTextModel"),
        "tokenizer": ("transformers", "CLIPTokenizer"),
        "scheduler": ("diffusers", "DDIMScheduler"),
    }[component]
    return f'["{library}", "{name}"]'


def _index_file(path: str) -> str:
    """Where the model_index.json of a local folder or hub id lives (for messages)."""
    return str(Path(path) / "model_index.json")


def _load_unet(path: str, family: str, index: dict, motion_adapter: str | None, dtype):
    unet_class = index.get("unet", [None, None])[1]
    if family == "modelscope":
        if unet_class != "UNet3DConditionModel":
            raise InputError(
                f"A TextToVideoSDPipeline needs a UNet3DConditionModel; got {unet_class}."
            )
        return UNet3DConditionModel.from_pretrained(path, subfolder="unet", dtype=dtype)
    if unet_class == "UNetMotionModel":
        return UNetMotionModel.from_pretrained(path, subfolder="unet", dtype=dtype)
    adapter = (
        MotionAdapter.from_pretrained(motion_adapter, dtype=dtype)
        if motion_adapter is not None
        else MotionAdapter.from_pretrained(path, subfolder="motion_adapter", dtype=dtype)
    )
    unet2d = UNet2DConditionModel.from_pretrained(path, subfolder="unet", dtype=dtype)
    unet = UNetMotionModel.from_unet2d(unet2d, adapter)
    return unet if dtype == torch.float32 else unet.to(dtype)


def _network_component(family: str) -> str:
    return "transformer" if family == "wan" else "unet"


def _load_network(path: str, family: str, index: dict, motion_adapter: str | None, dtype):
    if family != "wan":
        return _load_unet(path, family, index, motion_adapter, dtype)
    name = index.get("transformer", [None, None])[1]
    if name != "WanTransformer3DModel":
        raise InputError(f"A WanPipeline needs a WanTransformer3DModel; got {name}.")
    return WanTransformer3DModel.from_pretrained(path, subfolder="transformer", dtype=dtype)


def load_teacher(
    name_or_path: str,
    device: torch.device | str | None = None,
    dtype_policy: str = "auto",
    motion_adapter: str | None = None,
    vae_chunk_size: int = 16,
    max_sequence_length: int = 512,
) -> TeacherBundle:
    """Load a teacher pipeline as a :class:`TeacherBundle` (all parts frozen).

    Args:
        name_or_path: a local diffusers pipeline directory, a hub id, or "world" (the
            shipped world teacher).
        device: default CUDA if available else CPU.
        dtype_policy: see :mod:`mcm.models.precision` ("auto": bf16/fp16 on GPU, fp32 on CPU).
        motion_adapter: a MotionAdapter (dir or hub id) to turn an SD1.5 pipeline, or an
            AnimateDiff pipeline saved with a UNet2DConditionModel, into AnimateDiff.
        vae_chunk_size: frames per VAE call (Wan: videos per call).
        max_sequence_length: Wan's prompt length in tokens (train and sample with one).

    Raises:
        FileNotFoundError: no such directory / not a pipeline directory.
        ValueError: not a supported text-to-video pipeline, or its model_index.json names a
            class outside ``ALLOWED_LIBRARIES`` or one that is not a model, scheduler or
            tokenizer class (see ``component_class``).
    """
    path = resolve_teacher(name_or_path)
    index = read_model_index(path)
    family = detect_family(index, motion_adapter)
    device = torch.device(device) if device is not None else default_device()
    dtype = resolve_dtype(dtype_policy, device)

    # every class is checked before any weights are read
    network = _network_component(family)
    names = [
        n
        for n in _COMPONENT_KINDS
        if n in ("vae", "text_encoder", "tokenizer", "scheduler", network)
    ]
    classes = {name: component_class(index, name, _index_file(path)) for name in names}
    unet = _load_network(path, family, index, motion_adapter, dtype)
    vae = classes["vae"].from_pretrained(path, subfolder="vae", dtype=dtype)
    text_model = classes["text_encoder"].from_pretrained(
        path, subfolder="text_encoder", dtype=dtype
    )
    tokenizer = classes["tokenizer"].from_pretrained(path, subfolder="tokenizer")
    scheduler_config = dict(classes["scheduler"].load_config(path, subfolder="scheduler"))

    denoiser = make_denoiser(family, unet.requires_grad_(False), scheduler_config).to(device)
    if family == "wan":
        text_encoder = UMT5TextEncoder(tokenizer, text_model, max_sequence_length)
        video_vae = WanVideoVAE(vae, chunk_size=vae_chunk_size)
    else:
        text_encoder = TextEncoder(tokenizer, text_model)
        video_vae = VideoVAE(vae, chunk_size=vae_chunk_size)
    return TeacherBundle(
        denoiser=denoiser,
        vae=video_vae.to(device),
        text_encoder=text_encoder.to(device),
        scheduler_config=scheduler_config,
        family=family,
        path=str(path),
        motion_adapter=motion_adapter,
        model_index=index,
    )


def load_pipeline(
    path: str, family: str, motion_adapter: str | None = None, dtype=torch.float32
) -> DiffusionPipeline:
    """The teacher as a stock diffusers pipeline (TextToVideoSD / AnimateDiff / Wan), on CPU."""
    if family == "wan":
        return WanPipeline.from_pretrained(path, dtype=dtype)
    if family == "modelscope":
        return TextToVideoSDPipeline.from_pretrained(path, dtype=dtype)
    if motion_adapter is not None:
        adapter = MotionAdapter.from_pretrained(motion_adapter, dtype=dtype)
        return AnimateDiffPipeline.from_pretrained(path, motion_adapter=adapter, dtype=dtype)
    return AnimateDiffPipeline.from_pretrained(path, dtype=dtype)
