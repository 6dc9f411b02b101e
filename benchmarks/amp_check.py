"""Mixed-precision check on CUDA: OLS training steps under fp16 (with a grad scaler) and bf16 autocast stay finite.

Trains `small_resnet` on synthetic 32x32 data for a few hundred steps per precision with the paper-cifar OLS
preset, and records the loss, whether every loss and the soft-label matrix stayed finite, and steps/s.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from olsmooth import OnlineLabelSmoothing
from olsmooth.models import create_model


def run(dtype: torch.dtype, steps: int, K: int = 100, B: int = 256) -> dict:
    """Train for `steps` steps under autocast(dtype); report finiteness, final loss and speed."""
    torch.manual_seed(0)
    dev = torch.device("cuda")
    model = create_model("small_resnet", num_classes=K).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    crit = OnlineLabelSmoothing.from_preset("paper-cifar", num_classes=K)
    centers = torch.randn(K, 3, 32, 32, device=dev)
    finite = True
    torch.cuda.synchronize()
    start = time.perf_counter()
    for step in range(steps):
        y = torch.randint(0, K, (B,), device=dev)
        x = (centers[y] + 0.5 * torch.randn(B, 3, 32, 32, device=dev)).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=dtype):
            logits = model(x)
        loss = crit(logits, y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        finite &= bool(torch.isfinite(loss))
        if (step + 1) % 50 == 0:
            crit.next_epoch()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    S = crit.soft_labels
    row_sums = S.sum(1)
    return {"dtype": str(dtype), "steps": steps, "final_loss": float(loss), "losses_finite": finite,
            "matrix_finite": bool(torch.isfinite(S).all()), "matrix_dtype": str(S.dtype),
            "rows_sum_to_one": bool(((row_sums - 1).abs() < 1e-4)[row_sums > 0].all()),
            "steps_per_s": steps / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", default="benchmarks/out")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("amp_check: no CUDA device; nothing to check")
    results = {"device": torch.cuda.get_device_name(0),
               "runs": [run(torch.float16, args.steps), run(torch.bfloat16, args.steps)]}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "amp_check.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    if not all(r["losses_finite"] and r["matrix_finite"] for r in results["runs"]):
        raise SystemExit("amp_check: a loss or the OLS matrix became non-finite")


if __name__ == "__main__":
    main()
