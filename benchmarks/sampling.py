"""Where one video's time goes - text encoding, the denoising loop, the decode - and the
student's speed-up at 1/2/4/8 steps over the teacher's 50-step guided DDIM, with and without
each fixed-cost option, measured in one run.

    python benchmarks/sampling.py                    # world + full-size UNet, ~10 min on 2 CPU cores
    python benchmarks/sampling.py --world-only       # ~1 min
    python benchmarks/sampling.py --device cuda --dtype bf16 --full-frames 16 --full-latent 32

Both samplers are the library's own (``mcm.models.sampling.sample_student`` / ``sample_teacher``:
text encoding, the denoising loop and the VAE decode; one prompt, batch 1). A forward hook
on the UNet counts its calls and its rows: NFE = rows per video, so a guided step whose
cond and uncond halves go through the UNet in one batched call counts 2 NFE (1 call). The
hook also accumulates the time spent inside the UNet.

Models:

* ``world`` - the shipped world teacher (8 frames, 4x8x8 latents, 32x32 px). The student
  is the same UNet: a distilled student is the teacher's architecture with the LoRA fused
  in (``mcm export``), so its cost per step is the teacher's per call at batch 1.
* ``full`` - a ModelScopeT2V-architecture pipeline with random weights: the
  text-to-video-ms-1.7b ``UNet3DConditionModel`` (~1.41B parameters), a
  Stable-Diffusion-architecture VAE and an OpenCLIP-ViT-H-sized ``CLIPTextModel`` (the
  library's offline byte-level tokenizer, so its vocabulary is smaller: same cost per token), at a
  short clip (``--full-frames`` x ``--full-latent``^2 latents; default 2 x 16x16 = 128x128 px).
  On CPU the teacher's 50 guided steps would take minutes, so ``--full-teacher-steps``
  (default 2) steps are measured and the 50-step time is composed as
  (measured time outside the UNet) + 50 x (measured UNet time per step); the JSON marks
  such rows ``"measured": false``.

Options (``--arms``), each applied to the teacher and the student alike:

* ``base`` - every call encodes its prompt (the text encoder's cache off) and decodes with
  the teacher's VAE.
* ``cached`` - the prompt's embedding comes from the text encoder's cache
  (``TextEncoder(cache_size=...)``; filled by the warm-up call, as when a prompt is sampled
  again with another seed or model).
* ``cached+preview`` - cached, and the latents are decoded by a preview decoder
  (:class:`mcm.models.PreviewDecoder`; ``--world-preview DIR`` for a trained world decoder,
  otherwise an untrained one of the same size: the cost is the same).
* ``cached+compile`` (opt-in) - cached, with ``torch.compile`` on the UNet; the compile
  time (the warm-up calls' extra time) is reported apart, in ``compile_s``.

Each row splits its wall time into ``encode_s`` (inside the text encoder), ``decode_s``
(inside the VAE or preview decoder) and the denoising loop (the rest), and reports the fixed
part (encode + decode) in student network calls, and the speed-up against the
network-call ceiling: the teacher's UNet time over the row's (what the speed-up would be
if encoding and decoding cost nothing).

Torch threads: ``--threads`` (default 1). Timings drift run to run on a shared machine:
compare the speed-ups, measured in one run. JSON to ``--out``; a markdown table is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch

STUDENT_STEPS = (1, 2, 4, 8)
TEACHER_STEPS = 50
GUIDANCE = 9.0  # any scale > 1 costs the same: 2 NFE per step
PROMPT = "a red circle moving left"

from fullsize import MODELSCOPE_SCHEDULER, MODELSCOPE_UNET, OPENCLIP_H_TEXT, SD_VAE  # noqa: E402
from train_step import WAN_1_3B, WAN_FLOW_SHIFT, WAN_TEXT_LEN  # noqa: E402

# UMT5-XXL's encoder (google/umt5-xxl, what Wan2.1 encodes prompts with)
UMT5_XXL = dict(d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
ARMS = ("base", "cached", "cached+preview", "cached+compile")
DEFAULT_ARMS = "base,cached,cached+preview"
TEXT_CACHE = 8  # prompts, when the arm caches
PREVIEW_SIZE = {"world": (32, 2), "full": (64, 3)}  # width, blocks: TAESD's at full size


@contextlib.contextmanager
def seeded(seed: int):
    """Weights drawn under a forked RNG: the same seed builds the same model."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def full_size_bundle(device, dtype, vae_chunk: int = 8):
    """A ModelScopeT2V-architecture TeacherBundle with random weights."""
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from mcm.models import TeacherBundle, TextEncoder, VideoVAE, make_denoiser
    from mcm.models.tiny import build_clip_tokenizer

    tokenizer = build_clip_tokenizer(model_max_length=77)
    with seeded(0):
        unet = UNet3DConditionModel(**MODELSCOPE_UNET)
        vae = AutoencoderKL(**SD_VAE)
        text = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                max_position_embeddings=tokenizer.model_max_length,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                **OPENCLIP_H_TEXT,
            )
        )
    denoiser = make_denoiser("modelscope", unet.requires_grad_(False), MODELSCOPE_SCHEDULER)
    return TeacherBundle(
        denoiser=denoiser.to(device, dtype),
        # (diffusers warns on a no-op .to(float32) of a VAE: cast only when asked)
        vae=VideoVAE((vae if dtype == torch.float32 else vae.to(dtype)).to(device), vae_chunk),
        text_encoder=TextEncoder(tokenizer, text.to(device, dtype)),
        scheduler_config=MODELSCOPE_SCHEDULER,
        family="modelscope",
        path="<random weights: text-to-video-ms-1.7b architecture>",
    )


def wan_bundle(device, dtype, text_layers: int):
    """A Wan2.1-T2V-1.3B-architecture TeacherBundle with random weights: the transformer,
    the real-size ``AutoencoderKLWan`` and a UMT5-XXL-width encoder of ``text_layers``
    layers (24 in UMT5-XXL) over the offline byte-level tokenizer's vocabulary."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from mcm.models import TeacherBundle, make_denoiser
    from mcm.models.text import UMT5TextEncoder
    from mcm.models.tiny import build_clip_tokenizer, wan_scheduler
    from mcm.models.vae import WanVideoVAE

    tokenizer = build_clip_tokenizer(model_max_length=WAN_TEXT_LEN)
    scheduler = wan_scheduler(WAN_FLOW_SHIFT)
    with seeded(0):
        transformer = WanTransformer3DModel(**WAN_1_3B)
        vae = AutoencoderKLWan()
        config = UMT5Config(vocab_size=len(tokenizer), **{**UMT5_XXL, "num_layers": text_layers})
        text = UMT5EncoderModel(config)
    denoiser = make_denoiser("wan", transformer.requires_grad_(False), scheduler)
    return TeacherBundle(
        denoiser=denoiser.to(device, dtype),
        vae=WanVideoVAE((vae if dtype == torch.float32 else vae.to(dtype)).to(device), 1),
        text_encoder=UMT5TextEncoder(tokenizer, text.to(device, dtype), WAN_TEXT_LEN),
        scheduler_config=dict(scheduler.config),
        family="wan",
        path="<random weights: Wan2.1-T2V-1.3B architecture>",
    )


class UNetMeter:
    """Counts a UNet's calls and rows and the wall time spent inside it."""

    def __init__(self, unet, cuda: bool):
        self.cuda = cuda
        self.reset()
        unet.register_forward_pre_hook(self._pre, with_kwargs=True)
        unet.register_forward_hook(self._post)

    def reset(self):
        self.calls, self.rows, self.seconds = 0, 0, 0.0

    def _sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def _pre(self, module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        self.calls += 1
        self.rows += sample.shape[0]
        self._sync()
        self._t = time.perf_counter()

    def _post(self, module, args, output):
        self._sync()
        self.seconds += time.perf_counter() - self._t


class Timer:
    """Seconds spent inside a module's forward (hooks)."""

    def __init__(self, module, cuda: bool):
        self.cuda, self.seconds = cuda, 0.0
        module.register_forward_pre_hook(lambda *_: self._start())
        module.register_forward_hook(lambda *_: self._stop())

    def _sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def _start(self):
        self._sync()
        self._t = time.perf_counter()

    def _stop(self):
        self._sync()
        self.seconds += time.perf_counter() - self._t


class TimedDecoder:
    """A decoder (``decode(latents) -> pixels``) whose time is added up."""

    def __init__(self, decoder, cuda: bool):
        self.decoder, self.cuda, self.seconds = decoder, cuda, 0.0

    def decode(self, latents):
        if self.cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = self.decoder.decode(latents)
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t
        return out


def measure(fn, meter: UNetMeter, text: Timer, decoder: TimedDecoder, repeats: int) -> dict:
    """Median wall time of ``fn()`` (one video) and what the UNet, the text encoder and the
    decoder did in it."""
    runs = []
    for _ in range(repeats):
        meter.reset()
        text.seconds = decoder.seconds = 0.0
        if meter.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t, c = time.perf_counter(), time.process_time()
        fn()
        if meter.cuda:
            torch.cuda.synchronize()
        runs.append(
            dict(
                wall=time.perf_counter() - t,
                cpu=time.process_time() - c,
                unet=meter.seconds,
                calls=meter.calls,
                rows=meter.rows,
                encode=text.seconds,
                decode=decoder.seconds,
                peak=torch.cuda.max_memory_allocated() / 2**30 if meter.cuda else None,
            )
        )
    best = sorted(runs, key=lambda r: r["wall"])[len(runs) // 2]  # the median run
    return {
        "wall_s": best["wall"],
        "cpu_s": statistics.median(r["cpu"] for r in runs),
        "unet_s": best["unet"],
        "unet_calls": best["calls"],
        "nfe": best["rows"],  # batch 1: rows per video
        "encode_s": best["encode"],
        "decode_s": best["decode"],
        "peak_gpu_gb": best["peak"],  # CUDA only
        "repeats": repeats,
    }


def preview_decoder(name: str, bundle, args):
    """The arm's preview decoder: a trained one (``--world-preview``) or a fresh one."""
    from mcm.models import PreviewDecoder

    if name == "world" and args.world_preview:
        decoder = PreviewDecoder.from_pretrained(args.world_preview)
    else:
        decoder = PreviewDecoder.for_vae(bundle.vae, *PREVIEW_SIZE[name])
    return decoder.to(bundle.denoiser.device, bundle.vae.dtype).eval()


def bench_model(name: str, args) -> list[dict]:
    """Every arm's rows for one model (students, then the teacher)."""
    from mcm.models.sampling import latent_shape, sample_student, sample_teacher

    world = name == "world"
    device = torch.device(args.world_device if world else args.device)
    cuda = device.type == "cuda"
    if world:
        from mcm.models import load_teacher

        bundle = load_teacher("world", device=device, dtype_policy="fp32")
        clip = dict(num_frames=8)
    elif name == "full":
        bundle = full_size_bundle(device, DTYPES[args.dtype], args.vae_chunk)
        d = bundle.vae.downsample
        size = args.full_latent * d
        clip = dict(num_frames=args.full_frames, height=size, width=size)
    else:
        bundle = wan_bundle(device, DTYPES[args.dtype], args.wan_text_layers)
        clip = dict(num_frames=args.wan_frames, height=args.wan_height, width=args.wan_width)
    meter = UNetMeter(bundle.denoiser.unet, cuda)
    text = Timer(bundle.text_encoder.text_encoder, cuda)
    repeats = args.world_repeats if world else args.full_repeats
    shape = latent_shape(bundle, 1, clip["num_frames"], clip.get("height"), clip.get("width"))
    unet = bundle.denoiser.unet
    n_params = sum(p.numel() for p in unet.parameters())

    # Fewer text-encoder layers than the model's: its time is scaled up to all of them.
    text_scale = UMT5_XXL["num_layers"] / args.wan_text_layers if name == "wan" else 1.0
    rows = []
    for arm in args.arms:
        if arm.endswith("preview") and name == "wan":
            continue  # a frame decoder cannot decode Wan's causal latents
        bundle.text_encoder.cache_size = TEXT_CACHE if arm.startswith("cached") else 0
        decoder = TimedDecoder(
            preview_decoder(name, bundle, args) if arm.endswith("preview") else bundle.vae, cuda
        )
        bundle.denoiser.unet = torch.compile(unet) if arm.endswith("compile") else unet
        student = partial(sample_student, bundle, [PROMPT], decoder=decoder, **clip)
        teacher_call = partial(
            sample_teacher, bundle, [PROMPT], guidance_scale=GUIDANCE, decoder=decoder, **clip
        )
        # warm-up: fills the cache; compiles for the student's batch and the teacher's
        # guided (doubled) batch
        t = time.perf_counter()
        student(steps=1)
        teacher_call(steps=1)
        warm_s = time.perf_counter() - t
        arm_rows = []
        for n in STUDENT_STEPS:
            r = measure(partial(student, steps=n), meter, text, decoder, repeats)
            arm_rows.append(dict(sampler="student", steps=n, measured=True, **r))

        k = TEACHER_STEPS if world else args.full_teacher_steps
        r = measure(partial(teacher_call, steps=k), meter, text, decoder, repeats if world else 1)
        if k != TEACHER_STEPS:  # compose 50 steps from the measured per-step UNet time
            scale = TEACHER_STEPS / k
            r = dict(
                r,
                measured_steps=k,
                measured_wall_s=r["wall_s"],
                wall_s=r["wall_s"] + (scale - 1) * r["unet_s"],
                cpu_s=None,
                unet_s=scale * r["unet_s"],
                unet_calls=round(scale * r["unet_calls"]),
                nfe=round(scale * r["nfe"]),
            )
        arm_rows.append(
            dict(
                sampler="teacher",
                steps=TEACHER_STEPS,
                guidance=GUIDANCE,
                measured=k == TEACHER_STEPS,
            )
            | r
        )
        for row in arm_rows:
            if text_scale != 1.0 and row["encode_s"] > 0:  # composed from fewer layers
                extra = (text_scale - 1) * row["encode_s"]
                row.update(wall_s=row["wall_s"] + extra, encode_s=row["encode_s"] + extra)
                row["text_layers_measured"] = args.wan_text_layers
        teacher = arm_rows[-1]
        one_call = arm_rows[0]["unet_s"] / arm_rows[0]["unet_calls"]  # a student call
        for row in arm_rows:
            fixed = row["encode_s"] + row["decode_s"]
            speedup = teacher["wall_s"] / row["wall_s"]
            ceiling = teacher["unet_s"] / row["unet_s"]
            row.update(
                model=name,
                arm=arm,
                device=str(device),
                dtype="fp32" if world else args.dtype,
                latent_shape=list(shape),
                vae_chunk=bundle.vae.chunk_size,
                unet_parameters=n_params,
                unet_s_per_call=row["unet_s"] / row["unet_calls"],
                denoise_s=row["wall_s"] - fixed,
                fixed_s=fixed,
                fixed_in_student_calls=fixed / one_call,
                speedup_vs_teacher=speedup,
                network_ceiling=ceiling,
                speedup_of_ceiling=speedup / ceiling,
                nfe_ratio_vs_teacher=teacher["nfe"] / row["nfe"],
            )
            if arm.endswith("compile"):  # the warm-up beyond its two calls' own time
                teacher_step = teacher["wall_s"] - (1 - 1 / TEACHER_STEPS) * teacher["unet_s"]
                row["compile_s"] = warm_s - arm_rows[0]["wall_s"] - teacher_step
            for key, v in list(row.items()):
                if isinstance(v, float):
                    row[key] = round(v, 4)
        rows += arm_rows
    bundle.denoiser.unet = unet
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| model | arm | sampler | steps | NFE | s / video | encode s | denoise s | decode s "
        "| fixed (student calls) | speed-up | ceiling | of ceiling | measured |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['arm']} | {r['sampler']} | {r['steps']} | {r['nfe']} "
            f"| {r['wall_s']:.3f} | {r['encode_s']:.3f} | {r['denoise_s']:.3f} "
            f"| {r['decode_s']:.3f} | {r['fixed_in_student_calls']:.2f} "
            f"| {r['speedup_vs_teacher']:.1f}x | {r['network_ceiling']:.1f}x "
            f"| {r['speedup_of_ceiling']:.0%} "
            f"| {'yes' if r['measured'] else 'composed from ' + str(r['measured_steps']) + ' steps'} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="NFE and wall time per video: student 1/2/4/8 steps vs teacher 50 guided steps.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--out", default="benchmarks/results/sampling.json")
    ap.add_argument("--world-only", action="store_true", help="skip the full-size model (~1 min)")
    ap.add_argument("--models", default="world,full", help="comma-separated among world, full, wan")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--device", default="cpu", help="device of the full-size model (cpu, cuda)")
    ap.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="full-size weights")
    ap.add_argument("--world-device", default="cpu", help="device of the world model")
    ap.add_argument("--world-repeats", type=int, default=3, help="runs per setting (median)")
    ap.add_argument("--full-repeats", type=int, default=1)
    ap.add_argument(
        "--full-teacher-steps",
        type=int,
        default=2,
        help="teacher steps measured at full size (50 = measure all; fewer: composed)",
    )
    ap.add_argument("--full-frames", type=int, default=2, help="frames of the full-size clip")
    ap.add_argument("--full-latent", type=int, default=16, help="latent height = width (x8 px)")
    ap.add_argument(
        "--vae-chunk", type=int, default=8, help="frames per VAE decode call (full size)"
    )
    ap.add_argument("--wan-frames", type=int, default=5, help="frames (4k + 1) of the Wan clip")
    ap.add_argument("--wan-height", type=int, default=64)
    ap.add_argument("--wan-width", type=int, default=64)
    ap.add_argument(
        "--wan-text-layers",
        type=int,
        default=24,
        help="UMT5-XXL layers built (24 = all; fewer: their time is scaled to 24)",
    )
    ap.add_argument("--arms", default=DEFAULT_ARMS, help=f"comma-separated among {', '.join(ARMS)}")
    ap.add_argument(
        "--world-preview", default=None, help="a trained world preview decoder (mcm decoder)"
    )
    args = ap.parse_args(argv)
    args.arms = [a.strip() for a in args.arms.split(",")]
    if not args.arms or any(a not in ARMS for a in args.arms):
        raise ValueError(f"--arms must name arms among {', '.join(ARMS)}; got {args.arms!r}.")

    models = ["world"] if args.world_only else [m.strip() for m in args.models.split(",")]
    if not models or any(m not in ("world", "full", "wan") for m in models):
        raise ValueError(f"--models must name models among world, full, wan; got {args.models!r}.")
    if not 1 <= args.full_teacher_steps <= TEACHER_STEPS:
        raise ValueError(f"--full-teacher-steps must be in 1..{TEACHER_STEPS}.")
    if "cuda" in args.device and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked but CUDA is not available; use --device cpu.")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    rows = []
    for name in models:
        t = time.perf_counter()
        rows += bench_model(name, args)
        print(f"{name}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
    result = {
        "benchmark": "sampling",
        "command": "python " + " ".join(sys.argv),
        "what": "one video (batch 1, one prompt): text encoding + denoising loop + decode, "
        "per arm (fixed-cost options); NFE = UNet rows per video (a batched cond+uncond call "
        "is 2 NFE, 1 call); network_ceiling = teacher UNet s / row UNet s",
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "threads": args.threads,
        },
        "configs": {
            "modelscope_unet": MODELSCOPE_UNET,
            "sd_vae": SD_VAE,
            "text_encoder": OPENCLIP_H_TEXT,
            "wan_transformer": WAN_1_3B,
            "wan_text_encoder": UMT5_XXL,
            "wan_vae": "AutoencoderKLWan() defaults (base_dim 96, z_dim 16)",
        },
        "results": rows,
        "total_s": round(time.perf_counter() - t0, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(table(rows))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
