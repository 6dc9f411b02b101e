#!/usr/bin/env bash
# The GPU checks in one prepared script, for a lent CUDA machine (under 5 minutes on an H100):
# the loss benchmark on CUDA, fp16/bf16 autocast training steps with OLS staying finite, and the trainer's
# images/s with AMP. Results land in $OUT (default benchmarks/out); record them in docs with the card's name.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${OUT:-benchmarks/out}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY benchmarks/loss_speed.py --out "$OUT"
$PY benchmarks/amp_check.py --out "$OUT"
$PY benchmarks/trainer_overhead.py --device cuda --amp bf16 --out "$OUT"
