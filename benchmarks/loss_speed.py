"""Speed of OnlineLabelSmoothing against cross-entropy and a per-sample loop of the released formulation.

Times forward + backward (+ statistics, in training mode) of the loss alone on a leaf logits tensor, for every
method round-robin in one run, and reports medians and ratios against the targets:
per-sample / OLS >= 5x everywhere, OLS / CE <= 2.5x at B=256, K=1000. With --large-k, the many-class sweep
instead (`benchmarks.large_k`: CE, dense and top-k OLS from K = 1,000 to 200,000, time and peak memory; --classes
for some K only; --profile adds where top-k OLS spends its time at K = 1,000).

    .venv/bin/python -m benchmarks.loss_speed [--quick] [--profile] [--large-k [--classes K ...]] [--out DIR]
        [--threads N] [--device D]
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from olsmooth import OnlineLabelSmoothing
from olsmooth.losses import ols_loss, validate_inputs
from olsmooth.losses.common import first_max_index

from . import large_k
from .common import (
    benchmark_devices,
    benchmark_parser,
    command_line,
    finish,
    grid_table,
    machine_info,
    parse_benchmark_args,
    report_header,
    time_interleaved,
    timing_summary,
)

SHAPES = ((128, 100), (256, 1000))
TARGET_SHAPE = (256, 1000)
MIN_SPEEDUP_VS_PER_SAMPLE = 5.0
MAX_SLOWDOWN_VS_CE = 2.5
PRESET = "paper-cifar"


class PerSampleOLS:
    """The authors' released formulation, sample by sample: Python loops build targets and statistics."""

    def __init__(self, num_classes: int, device: torch.device, hard_weight: float = 0.5,
                 soft_weight: float = 0.5) -> None:
        self.S = torch.zeros(num_classes, num_classes, device=device)  # paper-cifar: S starts at zero
        self.A = torch.zeros_like(self.S)
        self.n = torch.zeros(num_classes, device=device)
        self.hard_weight, self.soft_weight = hard_weight, soft_weight

    def reset(self) -> None:
        """Forget the accumulated statistics (the untimed end-of-epoch step)."""
        self.A.zero_()
        self.n.zero_()

    def __call__(self, logits: Tensor, target: Tensor) -> Tensor:
        """0.5 CE + 0.5 soft CE against S[y]; adds the softmax of each correctly classified sample to A[y]."""
        probs = torch.softmax(logits.detach(), dim=1)
        for k in range(logits.size(0)):
            if torch.argmax(probs[k]) == target[k]:  # torch.max(p, 1) in the released code: first maximum
                self.A[target[k]] += probs[k]
                self.n[target[k]] += 1
        target_prob = torch.zeros_like(logits)
        for k in range(logits.size(0)):
            target_prob[k] = self.S[target[k]]
        soft = (-F.log_softmax(logits, dim=1) * target_prob).sum(dim=1).mean()
        return self.hard_weight * F.cross_entropy(logits, target) + self.soft_weight * soft


def make_batch(batch: int, num_classes: int, device: torch.device, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Leaf logits (requires grad) and labels; half the samples get a clear margin so about half are correct."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, num_classes, (batch,), generator=g)
    logits = torch.randn(batch, num_classes, generator=g)
    boosted = torch.arange(batch) % 2 == 0
    logits[boosted, target[boosted]] += 6.0
    return logits.to(device).requires_grad_(True), target.to(device)


def backward_step(loss_fn: Callable[[Tensor, Tensor], Tensor], logits: Tensor, target: Tensor,
                  autocast: torch.autocast | None = None) -> Callable[[], None]:
    """A closure running loss forward + backward on the leaf logits (gradient cleared first)."""
    def step() -> None:
        logits.grad = None
        with autocast if autocast is not None else contextlib.nullcontext():
            loss = loss_fn(logits, target)
        loss.backward()
    return step


def check_same_computation(num_classes: int, logits: Tensor, target: Tensor) -> None:
    """Guard: OLS and the per-sample loop give the same loss, gradient and statistics on one batch."""
    ols = OnlineLabelSmoothing.from_preset(PRESET, num_classes=num_classes).to(logits.device)
    ref = PerSampleOLS(num_classes, logits.device)
    ols(logits.detach(), target)  # one epoch on this batch gives a data-driven S (uniform rows where empty)
    ols.next_epoch()
    ref.S.copy_(ols.soft_labels)
    grads = []
    for fn in (ols, ref):
        z = logits.detach().clone().requires_grad_(True)
        loss = fn(z, target)
        loss.backward()
        grads.append((loss.detach(), z.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-5, atol=1e-6)
    state = ols.state_dict()
    torch.testing.assert_close(state["counts"], ref.n)
    torch.testing.assert_close(state["accumulator"], ref.A, rtol=1e-5, atol=1e-6)


def measure_shape(device: torch.device, batch: int, num_classes: int, repeats: int, min_sample_s: float,
                  bf16: bool = False) -> dict[str, dict[str, float]]:
    """Median/quartile ms per call of every method at one shape and device, measured interleaved.

    With `bf16`, CE and OLS also run on bfloat16 logits under autocast (what a model under AMP hands the loss).
    """
    logits, target = make_batch(batch, num_classes, device)
    check_same_computation(num_classes, logits, target)
    ols = OnlineLabelSmoothing.from_preset(PRESET, num_classes=num_classes).to(device)
    ols_unchecked = OnlineLabelSmoothing.from_preset(PRESET, num_classes=num_classes, check_inputs=False).to(device)
    ref = PerSampleOLS(num_classes, device)
    cases = {
        "ce": backward_step(F.cross_entropy, logits, target),
        "ols": backward_step(ols, logits, target),
        "ols_unchecked": backward_step(ols_unchecked, logits, target),
        "per_sample": backward_step(ref, logits, target),
    }
    resets: list[Callable[[], None]] = [ols.next_epoch, ols_unchecked.next_epoch, ref.reset]
    if bf16:
        low = logits.detach().to(torch.bfloat16).requires_grad_(True)
        ols_bf16 = OnlineLabelSmoothing.from_preset(PRESET, num_classes=num_classes).to(device)
        amp = torch.autocast(device.type, dtype=torch.bfloat16)
        cases["ce_bf16"] = backward_step(F.cross_entropy, low, target, amp)
        cases["ols_bf16"] = backward_step(ols_bf16, low, target, amp)
        resets.append(ols_bf16.next_epoch)

    def between() -> None:
        for reset in resets:
            reset()

    samples = time_interleaved(cases, repeats, min_sample_s, sync=device_sync(device), between=between)
    return {name: timing_summary(values) for name, values in samples.items()}


def device_sync(device: torch.device) -> Callable[[], None] | None:
    """What to call before reading the clock: a CUDA synchronize, or nothing on CPU."""
    return torch.cuda.synchronize if device.type == "cuda" else None


def profile_shape(device: torch.device, batch: int, num_classes: int, repeats: int,
                  min_sample_s: float) -> dict[str, dict[str, float]]:
    """Where OLS spends its time: cumulative stages from plain CE to the full module, then single operations."""
    logits, target = make_batch(batch, num_classes, device)
    soft_labels = torch.softmax(torch.randn(num_classes, num_classes, device=device), dim=1)
    full = OnlineLabelSmoothing.from_preset(PRESET, num_classes=num_classes).to(device)
    unchecked = OnlineLabelSmoothing.from_preset(PRESET, num_classes=num_classes, check_inputs=False).to(device)
    z = logits.detach()
    probs = torch.softmax(z, dim=1)
    top_prob, scratch = probs.amax(dim=1), torch.empty_like(probs)
    accumulator = torch.zeros_like(soft_labels)

    def ce_by_parts(x: Tensor, y: Tensor) -> Tensor:
        return F.nll_loss(F.log_softmax(x, dim=1), y)

    cases: dict[str, Callable[[], Any]] = {
        "1 F.cross_entropy": backward_step(F.cross_entropy, logits, target),
        "2 log_softmax + nll_loss": backward_step(ce_by_parts, logits, target),
        "3 ols_loss (hard + soft term)": backward_step(lambda x, y: ols_loss(x, y, soft_labels), logits, target),
        "4 + statistics (OLS, check_inputs=False)": backward_step(unchecked, logits, target),
        "5 + input validation (OLS)": backward_step(full, logits, target),
        "validate_inputs (one host sync)": lambda: validate_inputs(z, target, num_classes),
        "torch.isfinite(logits).all()": lambda: torch.isfinite(z).all(),
        "log_softmax": lambda: F.log_softmax(z, dim=1),
        "soft_labels.index_select(0, target)": lambda: soft_labels.index_select(0, target),
        "probs.argmax(1) == target": lambda: probs.argmax(dim=1) == target,
        "first_max_index(probs, top) == target": lambda: first_max_index(probs, top_prob, scratch) == target,
        "accumulator.index_add_(0, target, probs)": lambda: accumulator.index_add_(0, target, probs),
    }

    def between() -> None:
        full.next_epoch()
        unchecked.next_epoch()
        accumulator.zero_()

    samples = time_interleaved(cases, repeats, min_sample_s, sync=device_sync(device), between=between)
    return {name: timing_summary(values) for name, values in samples.items()}


def state_memory(class_counts: tuple[int, ...] = (1_000, 20_000)) -> list[dict[str, int]]:
    """Bytes of OLS's persistent state per K (S, A and n in float32), checked against a real instance at K=100."""
    held = {k: v.numel() * v.element_size() for k, v in OnlineLabelSmoothing(100).state_dict().items() if v.dim()}
    if sum(held.values()) != 2 * 100 * 100 * 4 + 100 * 4:
        raise RuntimeError(f"OLS state is not S + A + n in float32 any more: {held}")
    return [{"num_classes": k, "matrix_bytes": 4 * k * k, "held_bytes": 2 * 4 * k * k + 4 * k,
             "three_matrices_bytes": 3 * 4 * k * k} for k in class_counts]


def size(num_bytes: int) -> str:
    """Exact bytes with a binary-prefixed reading."""
    scaled, unit = (num_bytes / 2**30, "GiB") if num_bytes >= 2**30 else (num_bytes / 2**20, "MiB")
    return f"{num_bytes:,} B ({scaled:.2f} {unit})"


def ratio(numerator: float, denominator: float) -> float:
    """A rounded ratio of two timings."""
    return round(numerator / denominator, 2)


def verdicts(shape: tuple[int, int], stats: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Ratios against the targets for one shape and device."""
    med = {name: s["median_ms"] for name, s in stats.items()}
    speedup = ratio(med["per_sample"], med["ols"])
    slowdown = ratio(med["ols"], med["ce"])
    result: dict[str, Any] = {
        "per_sample_over_ols": speedup,
        "per_sample_target_met": speedup >= MIN_SPEEDUP_VS_PER_SAMPLE,
        "ols_over_ce": slowdown,
        "ols_unchecked_over_ce": ratio(med["ols_unchecked"], med["ce"]),
        "ols_over_ce_target_met": slowdown <= MAX_SLOWDOWN_VS_CE if shape == TARGET_SHAPE else None,
    }
    if "ols_bf16" in med:
        result["ols_bf16_over_ce_bf16"] = ratio(med["ols_bf16"], med["ce_bf16"])
    return result


def fmt(value: float) -> str:
    """Milliseconds with three significant digits."""
    return f"{value:.3g}"


def verdict_cell(value: float, met: bool | None, bound: str) -> str:
    """A ratio with its pass/fail mark against the target (or none where no target applies)."""
    if met is None:
        return f"{value:.2f}x"
    return f"{value:.2f}x ({'pass' if met else 'FAIL'}, {bound})"


def render(payload: dict[str, Any]) -> str:
    """The Markdown report: machine, command, main table, and the profile when it was run."""
    lines = report_header("Loss speed: OnlineLabelSmoothing vs cross-entropy vs a per-sample loop", payload) + [
             f"- Mode: {payload['mode']}; {payload['repeats']} interleaved samples per method, "
             f"each {payload['min_sample_s'] * 1e3:.0f} ms of back-to-back calls; median ms per call",
             f"- OLS preset `{PRESET}`, training mode (statistics accumulate; `next_epoch()` untimed between "
             "rounds); forward + backward of the loss only, logits are a leaf tensor", ""]
    headers = ["device", "B x K", "CE ms", "OLS ms", "OLS no-checks ms", "per-sample ms",
               "per-sample / OLS (>= 5x)", "OLS / CE (<= 2.5x at 256 x 1000)", "OLS no-checks / CE"]
    rows = []
    for entry in payload["results"]:
        med = {name: s["median_ms"] for name, s in entry["timings"].items()}
        v = entry["verdict"]
        rows.append([entry["device"], f"{entry['batch']} x {entry['num_classes']}", fmt(med["ce"]), fmt(med["ols"]),
                     fmt(med["ols_unchecked"]), fmt(med["per_sample"]),
                     verdict_cell(v["per_sample_over_ols"], v["per_sample_target_met"], ">= 5x"),
                     verdict_cell(v["ols_over_ce"], v["ols_over_ce_target_met"], "<= 2.5x"),
                     f"{v['ols_unchecked_over_ce']:.2f}x"])
    lines.append(grid_table(headers, rows))
    bf16 = [e for e in payload["results"] if "ols_bf16" in e["timings"]]
    if bf16:
        lines += ["", "bfloat16 logits under `torch.autocast(device, torch.bfloat16)`:", ""]
        lines.append(grid_table(
            ["device", "B x K", "CE bf16 ms", "OLS bf16 ms", "OLS / CE"],
            [[e["device"], f"{e['batch']} x {e['num_classes']}", fmt(e["timings"]["ce_bf16"]["median_ms"]),
              fmt(e["timings"]["ols_bf16"]["median_ms"]), f"{e['verdict']['ols_bf16_over_ce_bf16']:.2f}x"]
             for e in bf16]))
    lines += ["", "Persistent OLS state (S and A as K x K float32, plus n), against three K x K matrices:", ""]
    lines.append(grid_table(["K", "one K x K matrix", "OLS holds (S + A + n)", "three matrices"],
                                [[f"{m['num_classes']:,}", size(m["matrix_bytes"]), size(m["held_bytes"]),
                                  size(m["three_matrices_bytes"])] for m in payload["memory"]]))
    for entry in payload.get("profile", []):
        lines += ["", f"Profile, {entry['device']}, B x K = {entry['batch']} x {entry['num_classes']} "
                  "(stages 1-5 are cumulative, forward + backward; the rows after them are forward-only parts):", ""]
        lines.append(grid_table(["stage", "median ms", "q1-q3 ms"],
                                    [[name, fmt(s["median_ms"]), f"{fmt(s['q1_ms'])}-{fmt(s['q3_ms'])}"]
                                     for name, s in entry["timings"].items()]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the Markdown table and write loss_speed.json / loss_speed.md."""
    parser = benchmark_parser(__spec__.name, __doc__, quick="few samples: a smoke check, not a measurement",
                              device="cpu or cuda[:N] alone (default: the CPU, and CUDA when present)",
                              profile="also break OLS time down by stage (with --large-k: top-k OLS at K = 1,000)")
    parser.add_argument("--large-k", action="store_true", help="the many-class sweep of top-k OLS instead")
    parser.add_argument("--classes", type=int, nargs="+", metavar="K",
                        help="with --large-k: these class counts only (default: the whole sweep)")
    args = parse_benchmark_args(parser, argv)
    if args.classes and (not args.large_k or min(args.classes) < 2):
        parser.error("--classes takes class counts of at least 2, with --large-k")
    if args.large_k:
        return main_large_k(args, argv)

    repeats, min_sample_s = (5, 0.005) if args.quick else (41, 0.05)
    devices = benchmark_devices(args.device)
    payload: dict[str, Any] = {
        "benchmark": "loss_speed", "command": command_line(argv, __spec__.name),
        "mode": "quick" if args.quick else "full",
        "repeats": repeats, "min_sample_s": min_sample_s, "machine": machine_info(), "preset": PRESET,
        "targets": {"per_sample_over_ols_min": MIN_SPEEDUP_VS_PER_SAMPLE, "ols_over_ce_max": MAX_SLOWDOWN_VS_CE,
                    "ols_over_ce_shape": list(TARGET_SHAPE)},
        "results": [], "profile": [], "memory": state_memory(),
    }
    for device in devices:
        for batch, num_classes in SHAPES:
            print(f"measuring {device.type} B={batch} K={num_classes} ...", file=sys.stderr, flush=True)
            timings = measure_shape(device, batch, num_classes, repeats, min_sample_s, bf16=device.type == "cuda")
            payload["results"].append({"device": device.type, "batch": batch, "num_classes": num_classes,
                                       "timings": timings, "verdict": verdicts((batch, num_classes), timings)})
            if args.profile:
                payload["profile"].append({"device": device.type, "batch": batch, "num_classes": num_classes,
                                           "timings": profile_shape(device, batch, num_classes, repeats,
                                                                    min_sample_s)})
    return finish(args.out, "loss_speed", payload, render)


def main_large_k(args: Any, argv: list[str] | None) -> int:
    """The --large-k sweep: write loss_speed_large_k.json / .md."""
    payload: dict[str, Any] = {"benchmark": "loss_speed_large_k", "command": command_line(argv, __spec__.name),
                               "mode": "quick" if args.quick else "full", "machine": machine_info(), "results": []}
    for device in benchmark_devices(args.device):
        payload["results"] += large_k.run_sweep(device, args.quick, device_sync(device), args.classes)
        if args.profile:
            print(f"large K: {device.type} profile of top-k OLS at K=1000 ...", file=sys.stderr, flush=True)
            payload.setdefault("profile", []).append(
                {"device": device.type, **large_k.profile_topk(device, 5 if args.quick else 21, device_sync(device))})
    payload["verdict"] = large_k.verdicts(payload["results"])

    def render_large_k(data: dict[str, Any]) -> str:
        title = "Loss speed at many classes: cross-entropy, dense OLS and top-k OLS"
        lines = report_header(title, data) + large_k.render(data["results"], data["verdict"])
        for profile in data.get("profile", []):
            lines += large_k.render_profile(profile)
        return "\n".join(lines)

    return finish(args.out, "loss_speed_large_k", payload, render_large_k)


if __name__ == "__main__":
    sys.exit(main())
