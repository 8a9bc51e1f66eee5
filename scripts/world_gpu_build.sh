#!/usr/bin/env bash
# Builds a world teacher and probes on one GPU, then records the teacher's world metrics in
# its manifest. The probes and the first two stages of the shipped teacher were made this way
# (with --prediction-type epsilon --no-zero-snr, the defaults then); its last two stages are
# CPU fine-tunes (docs/WORLD.md). The build's defaults are now their recipe.
#   OUT=/tmp/out bash scripts/world_gpu_build.sh
# The probes train in a second process beside the teacher (their batches are rendered by
# PROBE_WORKERS CPU processes). Outputs: $OUT/teacher.tar, $OUT/probes.tar, logs.
set -euo pipefail
OUT=${OUT:?set OUT to an output folder}
PY=${PY:-python3}
nvidia-smi -L || true
$PY -m mcm world build-probes --out "$OUT/probes" --device "${DEVICE:-cuda}" --steps "${PROBE_STEPS:-6000}" \
  --batch-size "${PROBE_BATCH:-64}" --workers "${PROBE_WORKERS:-12}" >"$OUT/probes.log" 2>&1 &
PROBES=$!
$PY -m mcm world build --device "${DEVICE:-cuda}" --out "$OUT/teacher" \
  --vae-max-seconds "${VAE_SECONDS:-70}" --unet-max-seconds "${UNET_SECONDS:-380}" \
  --unet-steps "${UNET_STEPS:-40000}" --lr "${LR:-1e-3}" --pool-size "${POOL:-60000}" \
  --eval-videos 0 --no-progress 2>&1 | tee "$OUT/teacher.log"
wait $PROBES || { tail -30 "$OUT/probes.log"; exit 1; }
tail -3 "$OUT/probes.log"
$PY -m mcm world teacher-metrics --teacher "$OUT/teacher" --probes "$OUT/probes" --device "${DEVICE:-cuda}" \
  --videos "${EVAL_VIDEOS:-120}" --steps 50 8 4 2 1 --write | tee "$OUT/teacher_metrics.json"
cd "$OUT" && tar -cf teacher.tar teacher && tar -cf probes.tar probes \
  && rm -rf teacher teacher.checkpoints probes && ls -la
