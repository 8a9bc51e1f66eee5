#!/usr/bin/env bash
# Builds the flow-matching world teacher (`mcm world build --family wan`) on one GPU in one
# command of under 10 minutes, then scores it at 50 and 4 Euler steps:
#   OUT=/tmp/out bash scripts/world_wan_gpu_build.sh
# INIT_VAE (default: the VAE trained in CPU parts, experiments/results/wan_world/vae, when
# it exists) starts the VAE stage from a saved VAE, for VAE_STEPS more steps (0: keep it).
# The same build runs on a CPU in parts (docs/WORLD.md, "A flow-matching world teacher").
# Outputs: $OUT/teacher.tar (the pipeline and its manifest), $OUT/teacher.log.
set -euo pipefail
OUT=${OUT:?set OUT to an output folder}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
INIT_VAE=${INIT_VAE-experiments/results/wan_world/vae}
mkdir -p "$OUT"
nvidia-smi -L || true
init=()
[ -n "$INIT_VAE" ] && [ -e "$INIT_VAE" ] && init=(--init-from "$INIT_VAE")
$PY -m mcm world build --family wan --device "$DEVICE" --out "$OUT/teacher" "${init[@]}" \
  --vae-steps "${VAE_STEPS:-3000}" --vae-batch-size "${VAE_BATCH:-256}" \
  --vae-max-seconds "${VAE_SECONDS:-120}" \
  --unet-steps "${UNET_STEPS:-40000}" --batch-size "${BATCH:-256}" --lr "${LR:-5e-4}" \
  --unet-max-seconds "${UNET_SECONDS:-300}" --pool-size "${POOL:-20000}" \
  --top-noise-fraction "${TOP_FRACTION:-0.1}" \
  --checkpoint-every "${CHECKPOINT_EVERY:-1000}" --eval-videos 0 --no-progress 2>&1 | tee "$OUT/teacher.log"
$PY -m mcm world teacher-metrics --teacher "$OUT/teacher" --device "$DEVICE" \
  --videos "${EVAL_VIDEOS:-48}" --steps 50 4 --write | tee "$OUT/teacher_metrics.json"
cd "$OUT" && tar -cf teacher.tar teacher && rm -rf teacher teacher.checkpoints && ls -la
