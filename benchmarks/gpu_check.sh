#!/usr/bin/env bash
# The GPU checks in one prepared script, for a lent CUDA machine: the loss benchmark on CUDA (with its bf16 rows),
# fp16/bf16 autocast training steps with OLS staying finite, and the Trainer's images/s against a bare loop under
# bf16 autocast. Record the results in docs with the card's name.
#
#   bash benchmarks/gpu_check.sh          # on the GPU; results in $OUT (default benchmarks/out)
#   bash benchmarks/gpu_check.sh --cpu    # dry run: every step on the CPU with quick sizes (default OUT
#                                         # benchmarks/out/dry-run); the test suite runs it
#
# Sizes on the GPU, meant to finish in under 5 minutes on one GPU: loss_speed at B x K = 128 x 100 and
# 256 x 1000, 41 samples of 50 ms per method; amp_check 300 steps per precision of small_resnet, batch 256,
# 100 classes; trainer_overhead 15 rotated rounds (+1 warm-up) of one 60,000-image epoch (469 steps of 128) for
# each of bare, trainer-ce and trainer-ols. Each step prints its seconds.
# Environment: PY (default .venv/bin/python, else python3), OUT, DATASET (trainer_overhead's images, default
# fashion-mnist; the dry run uses the embedded digits).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
    "") mode=gpu ;;
    --cpu) mode=cpu ;;
    *) echo "usage: bash benchmarks/gpu_check.sh [--cpu]" >&2; exit 2 ;;
esac
if [[ -z "${PY:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
# Both modes pass the same options; the dry run changes only the device and the sizes.
if [[ $mode == cpu ]]; then
    device=cpu OUT=${OUT:-benchmarks/out/dry-run} DATASET=digits
    quick=(--quick --threads 1)
    epochs=(--images 256 --repeats 2)
else
    device=cuda OUT=${OUT:-benchmarks/out} DATASET=${DATASET:-fashion-mnist}
    quick=()
    epochs=(--repeats 15)
fi
shared=(--device "$device" --out "$OUT" "${quick[@]}")
mkdir -p "$OUT"

step() {
    local start=$SECONDS
    echo "== $*" >&2
    "$@"
    echo "== $(( SECONDS - start ))s: $*" >&2
}

if [[ $mode == gpu ]]; then
    step nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv -f "$OUT/gpu.txt"
    cat "$OUT/gpu.txt"
fi
# the data of the last step first, so a missing dataset stops the check before any GPU time is spent
step "$PY" -c 'import sys; from olsmooth.data import build_datasets; build_datasets(sys.argv[1])' "$DATASET"
step "$PY" -m benchmarks.loss_speed "${shared[@]}"
step "$PY" -m benchmarks.amp_check "${shared[@]}"
step "$PY" -m benchmarks.trainer_overhead "${shared[@]}" --amp bf16 --dataset "$DATASET" "${epochs[@]}"
echo "gpu_check ($mode): all steps passed; results in $OUT" >&2
