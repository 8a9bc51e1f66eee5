#!/usr/bin/env bash
# Builds the shipped world teacher on one GPU (how src/mcm/world/assets/teacher was made),
# then samples the evaluation prompts with guided DDIM-50 and DDIM-4 so the world metrics
# can be computed afterwards on a CPU (`python scripts/world_teacher_eval.py`).
#   OUT=/tmp/out bash scripts/world_gpu_build.sh
set -euo pipefail
OUT=${OUT:?set OUT to an output folder}
PY=${PY:-python3}
nvidia-smi -L || true
$PY -m mcm world build --device cuda --out "$OUT/teacher" \
  --vae-max-seconds "${VAE_SECONDS:-80}" --unet-max-seconds "${UNET_SECONDS:-360}" \
  --eval-videos 0 --no-progress
$PY - "$OUT" <<'PYEOF'
import sys, time, torch
from mcm.generate import sample_teacher
from mcm.models import load_teacher
from mcm.world.train_data import world_prompts
out = sys.argv[1]
bundle = load_teacher(f"{out}/teacher", device="cuda", dtype_policy="fp32")
prompts = world_prompts()
samples = {"prompts": prompts}
for steps in (50, 4):
    t0 = time.perf_counter()
    samples[f"ddim{steps}"] = sample_teacher(bundle, prompts, steps=steps, guidance_scale=7.5, seed=0, num_frames=8).cpu()
    print(f"DDIM-{steps} x {len(prompts)} videos: {time.perf_counter() - t0:.1f} s", flush=True)
torch.save(samples, f"{out}/teacher_samples.pt")
PYEOF
cd "$OUT" && tar -cf teacher.tar teacher && rm -rf teacher teacher.checkpoints && ls -la
