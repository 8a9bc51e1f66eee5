"""Cost of the world teacher's building blocks on this machine (CPU by default).

    python experiments/world_teacher_cost.py [--device cpu] [--threads 1] [--out world_teacher_cost.json]

Times (median of a few repeats, after a warm-up) of: a VAE training step, a UNet + text
encoder training step, one UNet forward and forward+backward at batch 2 (what one
distillation step is built from), and one guided DDIM-50 sample. On CPU it reports process
CPU time as well as wall time: with one thread, CPU time is what the step costs on an idle
core even when other jobs share the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from mcm.world.pipeline import world_pipeline, world_teacher_components
from mcm.world.teacher_training import diffusion_loss, prompt_tokens, vae_loss
from mcm.world.train_data import vae_frame_batch


def timed(fn, repeats: int, device: torch.device) -> dict:
    fn()  # warm-up
    walls, cpus = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        w, c = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return {
        "wall_s": round(statistics.median(walls), 4),
        "cpu_s": round(statistics.median(cpus), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="world_teacher_cost.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    c = world_teacher_components()
    vae, unet, text = (c[n].to(device) for n in ("vae", "unet", "text_encoder"))
    from mcm.diffusion.schedules import VPSchedule

    schedule = VPSchedule.from_config(c["scheduler"].config)
    g = torch.Generator(device).manual_seed(0)
    tokens = prompt_tokens(c["tokenizer"], device)
    results = {}

    for n in (32, 64):
        frames = vae_frame_batch(n, g)

        def vae_step(frames=frames):
            vae.zero_grad(set_to_none=True)
            vae_loss(vae, frames, 1e-6, g).backward()

        results[f"vae_train_step_b{n}_frames"] = timed(vae_step, args.repeats, device)

    for b in (8, 16, 32):
        z0 = torch.randn(b, 4, 8, 8, 8, generator=g, device=device)

        def unet_step(z0=z0, b=b):
            unet.zero_grad(set_to_none=True)
            text.zero_grad(set_to_none=True)
            diffusion_loss(unet, text, schedule, z0, tokens[:b], g).backward()

        results[f"unet_text_train_step_b{b}_clips"] = timed(unet_step, args.repeats, device)

    x = torch.randn(2, 4, 8, 8, 8, generator=g, device=device)
    t = torch.tensor([500, 700], device=device)
    ctx = text(tokens[:2]).last_hidden_state.detach()

    def unet_forward():
        with torch.no_grad():
            unet(x, t, encoder_hidden_states=ctx)

    def unet_forward_backward():
        unet.zero_grad(set_to_none=True)
        unet(x, t, encoder_hidden_states=ctx).sample.square().mean().backward()

    results["unet_forward_b2"] = timed(unet_forward, args.repeats, device)
    results["unet_forward_backward_b2"] = timed(unet_forward_backward, args.repeats, device)

    pipe = world_pipeline({**c, "vae": vae, "unet": unet, "text_encoder": text})
    pipe.set_progress_bar_config(disable=True)

    def ddim50():
        pipe(
            "a red circle moving left",
            num_inference_steps=50,
            guidance_scale=7.5,
            num_frames=8,
            generator=torch.Generator(device).manual_seed(0),
            output_type="pt",
        )

    results["sample_ddim50_guided_1_video"] = timed(ddim50, 1, device)
    results["_meta"] = {"device": str(device), "threads": args.threads, "torch": torch.__version__}
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    for k, v in results.items():
        if not k.startswith("_"):
            print(f"{k:40s} wall {v['wall_s']:8.3f} s   cpu {v['cpu_s']:8.3f} s")


if __name__ == "__main__":
    main()
