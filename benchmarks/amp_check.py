"""Mixed-precision check: OLS training steps under fp16 (with a grad scaler) and bf16 autocast stay finite.

Trains `small_resnet` on synthetic 32x32 data for a few hundred steps per precision with the paper-cifar OLS
preset (K = 100 classes, batch 256, `next_epoch()` every 50 steps), and records the final loss, whether every
loss and the soft-label matrix stayed finite, and steps/s. Meant for CUDA; `--device cpu --quick` runs the same
code on CPU autocast with tiny sizes, as a dry run of the GPU check.

    .venv/bin/python -m benchmarks.amp_check [--quick] [--steps N] [--device cuda] [--out DIR] [--threads N]
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from olsmooth import OnlineLabelSmoothing
from olsmooth.models import create_model

from .common import (
    benchmark_parser,
    command_line,
    finish,
    grid_table,
    machine_info,
    parse_benchmark_args,
    report_header,
)
from .loss_speed import device_sync

MODEL = "small_resnet"
PRESET = "paper-cifar"
PRECISIONS = (torch.float16, torch.bfloat16)
EPOCHS = 6
"""`next_epoch()` is called this many times over a run, at even steps (every 50 steps of the default 300)."""


@dataclass(frozen=True)
class Size:
    """The synthetic problem: classes, batch, image side, training steps per precision."""

    classes: int
    batch: int
    side: int
    steps: int


FULL = Size(classes=100, batch=256, side=32, steps=300)
QUICK = Size(classes=10, batch=8, side=32, steps=6)


def run(device: torch.device, dtype: torch.dtype, size: Size) -> dict[str, Any]:
    """Train for `size.steps` steps under autocast(dtype) on `device`; report finiteness, final loss and speed."""
    torch.manual_seed(0)
    K, B, side = size.classes, size.batch, size.side
    model = create_model(MODEL, num_classes=K).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    crit = OnlineLabelSmoothing.from_preset(PRESET, num_classes=K).to(device)
    centers = torch.randn(K, 3, side, side, device=device)
    epoch_steps = max(size.steps // EPOCHS, 1)
    sync = device_sync(device) or (lambda: None)
    finite = True
    sync()
    start = time.perf_counter()
    for step in range(size.steps):
        y = torch.randint(0, K, (B,), device=device)
        x = (centers[y] + 0.5 * torch.randn(B, 3, side, side, device=device)).contiguous(
            memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype):
            logits = model(x)
        loss = crit(logits, y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        finite &= bool(torch.isfinite(loss))
        if (step + 1) % epoch_steps == 0:
            crit.next_epoch()
    sync()
    seconds = time.perf_counter() - start
    S = crit.soft_labels
    row_sums = S.sum(1)
    return {"dtype": str(dtype).removeprefix("torch."), "steps": size.steps, "final_loss": float(loss),
            "losses_finite": finite, "matrix_finite": bool(torch.isfinite(S).all()), "matrix_dtype": str(S.dtype),
            "rows_sum_to_one": bool(((row_sums - 1).abs() < 1e-4)[row_sums > 0].all()),
            "steps_per_s": size.steps / seconds}


def passed(result: dict[str, Any]) -> bool:
    """Every loss and the OLS matrix stayed finite."""
    return result["losses_finite"] and result["matrix_finite"]


def render(payload: dict[str, Any]) -> str:
    """The Markdown report: machine, command, and one row per precision."""
    size = payload["size"]
    lines = report_header("Mixed precision: OLS training steps stay finite", payload) + [
        f"- Device {payload['device']}; `{MODEL}`, OLS `{PRESET}`, {size['classes']} classes, batch {size['batch']}, "
        f"{size['side']}x{size['side']} synthetic images; fp16 with a grad scaler, bf16 without", ""]
    rows = [[r["dtype"], r["steps"], f"{r['final_loss']:.4f}", r["losses_finite"], r["matrix_finite"],
             r["matrix_dtype"].removeprefix("torch."), r["rows_sum_to_one"], f"{r['steps_per_s']:.1f}",
             "pass" if passed(r) else "FAIL"] for r in payload["runs"]]
    lines.append(grid_table(["autocast", "steps", "final loss", "losses finite", "matrix finite", "matrix dtype",
                             "rows sum to 1", "steps/s", "verdict"], rows))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run both precisions, print and write amp_check.json / amp_check.md; exit 1 when a run became non-finite."""
    parser = benchmark_parser(__spec__.name, __doc__, quick="tiny sizes (10 classes, batch 8, 6 steps): a dry run",
                              device="where to train (default cuda; cpu uses CPU autocast)")
    parser.add_argument("--steps", type=int, help=f"training steps per precision (default {FULL.steps}, "
                                                  f"quick {QUICK.steps})")
    args = parse_benchmark_args(parser, argv)
    device = torch.device(args.device or "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device on this machine (--device cpu runs the check on CPU autocast)")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    size = QUICK if args.quick else FULL
    if args.steps is not None:
        size = Size(size.classes, size.batch, size.side, args.steps)
    payload: dict[str, Any] = {
        "benchmark": "amp_check", "command": command_line(argv, __spec__.name), "machine": machine_info(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "size": asdict(size), "runs": [run(device, dtype, size) for dtype in PRECISIONS]}
    finish(args.out, "amp_check", payload, render)
    if not all(passed(r) for r in payload["runs"]):
        print("amp_check: a loss or the OLS matrix became non-finite", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
