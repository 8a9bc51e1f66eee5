#!/usr/bin/env bash
# The GPU rows of docs/RESULTS.md, at real clip sizes, in two parts of under 10 minutes
# each on one 80 GB card (H100/H200): run each part as one command, from the repository
# root, in the project's venv with a CUDA build of torch.
#   bash benchmarks/gpu.sh sampling   # ModelScope 16 x 256x256 and Wan2.1 1.3B 81 x 480x832, bf16
#   bash benchmarks/gpu.sh train      # one MCM step: ours vs the reference / naive structure
# Results go to benchmarks/results/*_gpu.json (the card's name is in each file).
set -euo pipefail
OUT=${OUT:-benchmarks/results}
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
case "${1:-}" in
  sampling)
    timeout 280 "$PY" benchmarks/sampling.py --models full --device cuda --dtype bf16 \
      --full-frames 16 --full-latent 32 --full-teacher-steps 50 --full-repeats 3 \
      --out "$OUT/sampling_full_gpu.json"
    timeout 300 "$PY" benchmarks/sampling.py --models wan --device cuda --dtype bf16 \
      --wan-frames 81 --wan-height 480 --wan-width 832 --full-teacher-steps 4 \
      --arms base,cached --out "$OUT/sampling_wan_gpu.json"
    ;;
  train)
    timeout 280 "$PY" benchmarks/train_step.py --models full --device cuda --dtype bf16 \
      --full-frames 16 --full-latent 32 --full-steps 3 --out "$OUT/train_step_full_gpu.json"
    timeout 300 "$PY" benchmarks/train_step.py --models wan --device cuda --dtype bf16 \
      --wan-frames 81 --wan-height 480 --wan-width 832 --out "$OUT/train_step_wan_gpu.json"
    ;;
  *)
    echo "usage: bash benchmarks/gpu.sh sampling|train" >&2
    exit 2
    ;;
esac
