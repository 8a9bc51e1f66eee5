"""Layer 3: the only package that knows diffusers / transformers / peft model classes.

* :class:`VideoDenoiser` (+ ModelScope and AnimateDiff adapters), :class:`TextEncoder`,
  :class:`VideoVAE`, :func:`load_teacher` -> :class:`TeacherBundle`.
* LoRA: :func:`attach_lora`, :func:`disable_adapters` (the teacher), :func:`lora_parameters`, :func:`lora_state_dict`, :func:`save_lora`, :func:`read_lora`.
* Export: :func:`export_student`; loading an export: :func:`load_student_lora`,
  :func:`load_student_pipeline`.
* :class:`PreviewDecoder`: a tiny frame decoder distilled from a teacher's VAE (previews).
* :mod:`mcm.models.tiny`: tiny offline pipelines for tests.
"""

from mcm.models.denoiser import (
    FAMILIES,
    AnimateDiffDenoiser,
    ModelScopeDenoiser,
    VideoDenoiser,
    make_denoiser,
)
from mcm.models.export import DEFAULT_SAMPLING, export_lora, export_student, lcm_scheduler
from mcm.models.loading import TeacherBundle, detect_family, load_pipeline, load_teacher
from mcm.models.lora import (
    DEFAULT_TARGET_MODULES,
    attach_lora,
    copy_teacher,
    disable_adapters,
    fuse_lora,
    lora_parameters,
    lora_target_modules,
    remove_lora,
)
from mcm.models.lora_weights import (
    attach_lora_from_state_dict,
    load_lora_state_dict,
    lora_state_dict,
    read_lora,
    save_lora,
)
from mcm.models.precision import DTYPE_POLICIES, resolve_dtype
from mcm.models.preview_decoder import PreviewDecoder
from mcm.models.sampling import latent_shape, sample_student, sample_teacher, student_latents
from mcm.models.student import load_student_lora, load_student_pipeline, pipeline_video
from mcm.models.text import TextEncoder
from mcm.models.vae import VideoVAE

__all__ = [
    "DEFAULT_SAMPLING",
    "DEFAULT_TARGET_MODULES",
    "DTYPE_POLICIES",
    "FAMILIES",
    "AnimateDiffDenoiser",
    "ModelScopeDenoiser",
    "PreviewDecoder",
    "TeacherBundle",
    "TextEncoder",
    "VideoDenoiser",
    "VideoVAE",
    "attach_lora",
    "attach_lora_from_state_dict",
    "copy_teacher",
    "detect_family",
    "disable_adapters",
    "export_lora",
    "export_student",
    "fuse_lora",
    "lcm_scheduler",
    "load_lora_state_dict",
    "load_pipeline",
    "load_student_lora",
    "load_student_pipeline",
    "load_teacher",
    "lora_parameters",
    "lora_state_dict",
    "lora_target_modules",
    "make_denoiser",
    "pipeline_video",
    "read_lora",
    "remove_lora",
    "resolve_dtype",
    "latent_shape",
    "sample_student",
    "sample_teacher",
    "student_latents",
    "save_lora",
]
