"""OLS at many classes: time and peak memory of cross-entropy, dense OLS (where it fits) and top-k OLS.

The K sweep of `python -m benchmarks.loss_speed --large-k`: B = 256, K from 1,000 to 200,000, top_k = 32 (and 8,
128 at K = 100,000). Forward + backward of the loss alone in training mode (statistics accumulate), methods
interleaved per K (samples of at least 50 ms of back-to-back calls). The peak memory of each case comes from a
child process of its own: the growth of its peak resident set (VmHWM on CPU; `torch.cuda.max_memory_allocated`
on CUDA) above the inputs and one cross-entropy step, so the CE row reads about 0 and the others show what the
loss adds. Dense OLS is skipped, with the reason, where its predicted memory exceeds half of what the device
offers (its two K x K float32 matrices are 80 GB at 100,000); a failed allocation is recorded as the result.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from olsmooth import OnlineLabelSmoothing
from olsmooth.losses.topk import PENDING_ENTRIES, select_largest

from .common import grid_table, time_interleaved, timing_summary

BATCH = 256
SWEEP = ((1_000, (32,)), (10_000, (32,)), (50_000, (32,)), (100_000, (8, 32, 128)), (200_000, (32,)))
QUICK_SWEEP = ((1_000, (32,)), (10_000, (32,)))
STATE_TARGET_BYTES = 100 * 10**6  # sparse state at K = 100,000, m = 32
MAX_SPARSE_OVER_CE = 2.0  # at K = 100,000, B = 256
PRESET = "paper-cifar"
CE_STEP, DENSE_STEP = "CE step (forward + backward)", "dense OLS step"
TOPK_LOSS = "top-k OLS loss alone (eval mode)"
SELECTION = "  of which the selection (select_largest)"
FLOOR_PARTITION = "floor: np.partition of the correct rows (values only, no columns)"
FLOOR_COMPACTION = "floor: np.nonzero of one mask over the correct rows"


def dense_bytes(num_classes: int, batch: int = BATCH) -> int:
    """Predicted peak of dense OLS above the inputs: S and A (K + 1 rows), plus about four (B, K) float32 buffers
    (targets, softmax, scratch, gradient)."""
    return 4 * (2 * num_classes * num_classes + num_classes + 4 * batch * num_classes)


def available_bytes(device: torch.device) -> int:
    """Memory the device offers now: free CUDA memory, or MemAvailable of /proc/meminfo (else 0: skip dense)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as handle:
            fields = dict(line.split(":", 1) for line in handle)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 0


def make_batch(num_classes: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Leaf logits and labels; half the samples carry a clear margin on their label (about half correct)."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, num_classes, (BATCH,), generator=g)
    logits = torch.randn(BATCH, num_classes, generator=g)
    boosted = torch.arange(BATCH) % 2 == 0
    logits[boosted, target[boosted]] += 6.0
    return logits.to(device).requires_grad_(True), target.to(device)


def build(method: str, num_classes: int, top_k: int, device: torch.device) -> Any:
    """The loss of one case: "ce", "dense" or "sparse" (top_k entries per row), with one epoch of statistics
    already folded into S so the soft term has data-driven rows."""
    if method == "ce":
        return F.cross_entropy
    options = {} if method == "dense" else {"top_k": top_k}
    loss = OnlineLabelSmoothing.from_preset(PRESET, num_classes=num_classes, **options).to(device)
    logits, target = make_batch(num_classes, device, seed=1)
    loss(logits.detach(), target)
    loss.next_epoch()
    return loss


def state_bytes(loss: Any) -> int:
    """Bytes the loss holds between steps: S and its statistics (none for cross-entropy)."""
    return getattr(loss, "memory_bytes", 0)


def step_fn(loss: Any, logits: torch.Tensor, target: torch.Tensor):
    """A closure: forward + backward of the loss on the leaf logits."""
    def step() -> None:
        logits.grad = None
        loss(logits, target).backward()
    return step


def resident_peak() -> int:
    """This process's peak resident set in bytes: VmHWM of /proc/self/status (ru_maxrss carries over the parent's
    peak into a child on Linux, so it is only the fallback)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_child(method: str, num_classes: int, top_k: int, device: str) -> dict[str, int]:
    """In a fresh process: the peak memory growth of building the loss and three training steps with an update."""
    torch.set_num_threads(1)
    dev = torch.device(device)
    logits, target = make_batch(num_classes, dev)
    step_fn(F.cross_entropy, logits, target)()  # the gradient buffer and allocator warm-up count as inputs
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.max_memory_allocated()
    else:
        before = resident_peak()
    loss = build(method, num_classes, top_k, dev)
    step = step_fn(loss, logits, target)
    for _ in range(3):
        step()
    if hasattr(loss, "next_epoch"):
        loss.next_epoch()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resident_peak()
    return {"peak_bytes": peak - before, "state_bytes": state_bytes(loss)}


def measure_peak(method: str, num_classes: int, top_k: int, device: torch.device) -> dict[str, int]:
    """`peak_child` in a child process (a peak resident set only grows, so each case needs its own process)."""
    code = ("import json, sys; from benchmarks.large_k import peak_child; "
            f"print(json.dumps(peak_child({method!r}, {num_classes}, {top_k}, {str(device)!r})))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure_k(num_classes: int, tops: tuple[int, ...], device: torch.device, repeats: int,
              sync: Any) -> dict[str, Any]:
    """Timings (interleaved) and peak memory of CE, dense OLS where it fits, and sparse OLS at each top_k."""
    logits, target = make_batch(num_classes, device)
    need, have = dense_bytes(num_classes), available_bytes(device)
    skipped = None if need < have // 2 else (
        f"predicted {need / 2**30:.1f} GiB (two K x K float32 matrices and (B, K) buffers), more than half of the "
        f"{have / 2**30:.1f} GiB available: not tried")
    methods = [("ce", "ce", 0)] + ([("dense", "dense", 0)] if skipped is None else []) + \
        [(f"sparse_{m}", "sparse", m) for m in tops]
    losses = {}
    for name, method, m in methods:
        try:
            losses[name] = build(method, num_classes, m, device)
        except (torch.OutOfMemoryError, MemoryError, RuntimeError) as err:  # the failure is a result
            skipped = f"allocation failed: {str(err).splitlines()[0][:160]}"
    methods = [entry for entry in methods if entry[0] in losses]
    cases = {name: step_fn(loss, logits, target) for name, loss in losses.items()}
    between = [loss.next_epoch for loss in losses.values() if hasattr(loss, "next_epoch")]
    samples = time_interleaved(cases, repeats, 0.05, warmup=1, sync=sync,
                               between=lambda: [fn() for fn in between])
    memory = {name: measure_peak(method, num_classes, m, device) for name, method, m in methods}
    entry: dict[str, Any] = {"num_classes": num_classes, "batch": BATCH, "timings":
                             {name: timing_summary(values) for name, values in samples.items()},
                             "memory": memory, "dense_predicted_bytes": need}
    if skipped is not None:
        entry["dense_skipped"] = skipped
    return entry


def run_sweep(device: torch.device, quick: bool, sync: Any, classes: list[int] | None = None) -> list[dict[str, Any]]:
    """Every K of the sweep (QUICK_SWEEP with `quick`), in order; with `classes`, those K only (top_k as in the
    sweep, or 32 for a K it does not have)."""
    sweep = QUICK_SWEEP if quick else SWEEP
    if classes:
        tops_of = dict(SWEEP)
        sweep = tuple((k, tops_of.get(k, (32,))) for k in classes)
    results = []
    for num_classes, tops in sweep:
        print(f"large K: {device.type} K={num_classes} ...", file=sys.stderr, flush=True)
        repeats = 3 if quick else (21 if num_classes <= 10_000 else 7)  # fast cases: more samples of 50 ms each
        results.append({"device": device.type, **measure_k(num_classes, tops, device, repeats, sync)})
    return results


def _median_ms(fn: Any, repeats: int, prepare: Any) -> float:
    """Median ms of `fn()` over `repeats` calls, each after an untimed `prepare()`."""
    times = []
    for _ in range(repeats):
        prepare()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * sorted(times)[len(times) // 2]


def profile_topk(device: torch.device, repeats: int, sync: Any, num_classes: int = 1_000,
                 top_k: int = 32) -> dict[str, Any]:
    """Where top-k OLS spends its time against dense OLS at one K (B = BATCH): whole training steps, the loss alone
    (eval mode: no statistics), each path's statistics of one batch, the selection in them, and the merge of a
    full stage of candidates spread over the steps that fill it. Medians in ms, stages interleaved."""
    logits, target = make_batch(num_classes, device)
    dense, sparse = build("dense", num_classes, top_k, device), build("sparse", num_classes, top_k, device)
    dense_loss, sparse_loss = build("dense", num_classes, top_k, device), build("sparse", num_classes, top_k, device)
    dense_loss.eval()
    sparse_loss.eval()
    z = logits.detach()
    probs = torch.softmax(z, dim=1)
    top1 = probs.argmax(dim=1).float()
    correct = (top1 == target).nonzero().squeeze(1)
    stats = sparse._topk
    accumulator = torch.zeros(num_classes + 1, num_classes, device=device)
    sink = torch.where(top1 == target, target, num_classes)

    def stage() -> None:  # the top-k statistics of one batch, its candidates staged (the merge is timed apart)
        stats.accumulate(z, probs, top1, target, 1.0)
        stats.pending = 0

    cases = {
        CE_STEP: step_fn(F.cross_entropy, logits, target),
        DENSE_STEP: step_fn(dense, logits, target),
        f"top-k OLS step (m = {top_k})": step_fn(sparse, logits, target),
        "dense OLS loss alone (eval mode)": step_fn(dense_loss, logits, target),
        TOPK_LOSS: step_fn(sparse_loss, logits, target),
        "dense statistics: A.index_add_(softmax)": lambda: accumulator.index_add_(0, sink, probs),
        "top-k statistics: stage each correct sample's m largest": stage,
        SELECTION: lambda: select_largest(probs.index_select(0, correct), top_k),
    }
    if device.type == "cpu":  # the two passes of the cheapest exact selection of the correct rows' top_k, in numpy
        rows, kth = probs.index_select(0, correct).numpy(), num_classes - top_k
        threshold = np.partition(rows, kth, axis=1)[:, kth:kth + 1]  # each row's top_k-th largest value
        cases[FLOOR_PARTITION] = lambda: np.partition(rows, kth, axis=1)
        cases[FLOOR_COMPACTION] = lambda: np.nonzero(rows >= threshold)
    samples = time_interleaved(cases, repeats, 0.05, sync=sync,
                               between=lambda: [loss.next_epoch() for loss in (dense, sparse)])
    result = {name: timing_summary(values)["median_ms"] for name, values in samples.items()}
    per_step = len(correct) * top_k
    while stats.pending + per_step <= PENDING_ENTRIES:  # a full stage, as training fills it before each merge
        stats.accumulate(z, probs, top1, target, 1.0)
    full = stats.state_tensors()
    merge = _median_ms(stats.flush, max(3, repeats // 4), lambda: stats.load_state_tensors(full))
    steps = PENDING_ENTRIES // per_step
    result[f"top-k merge of a full stage ({steps} steps' candidates), per step"] = merge / steps
    return {"num_classes": num_classes, "top_k": top_k, "batch": BATCH, "correct": len(correct),
            "merge_ms": merge, "timings": result}


def render_profile(profile: dict[str, Any]) -> list[str]:
    """The Markdown table of `profile_topk`, and what top-k's statistics may cost for top-k to tie dense OLS."""
    timings = profile["timings"]
    lines = ["", f"Where the time goes at K = {profile['num_classes']:,}, B = {profile['batch']}, m = "
             f"{profile['top_k']} ({profile['correct']} correct samples per batch; median ms):", "",
             grid_table(["stage", "median ms"], [[name, f"{ms:.3g}"] for name, ms in timings.items()])]
    if FLOOR_PARTITION in timings:
        ce, dense = timings[CE_STEP], timings[DENSE_STEP]
        budget = dense - timings[TOPK_LOSS]
        floor = timings[FLOOR_PARTITION] + timings[FLOOR_COMPACTION]
        lines += ["", f"To tie dense OLS, top-k's statistics (selection, staging, merge) may cost at most "
                  f"{budget:.3g} ms a step (the dense step less the top-k loss alone), and "
                  f"{dense - ce:.3g} ms even with a loss as cheap as cross-entropy (the dense step less the CE step). "
                  f"The selection alone costs {timings[SELECTION]:.3g} ms; the cheapest exact selection measured, a "
                  f"threshold by np.partition and then the columns by np.nonzero, {floor:.3g} ms."]
    return lines


def verdicts(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The three targets, from the entries that measure them (None where the sweep did not reach them)."""
    out: dict[str, Any] = {"sparse_state_mb_at_100k_m32": None, "sparse_over_ce_at_100k_m32": None,
                           "sparse_over_dense_at_1k_m32": None}
    for entry in results:
        med = {name: s["median_ms"] for name, s in entry["timings"].items()}
        if entry["num_classes"] == 100_000 and "sparse_32" in med:
            out["sparse_state_mb_at_100k_m32"] = round(entry["memory"]["sparse_32"]["state_bytes"] / 1e6, 1)
            out["sparse_over_ce_at_100k_m32"] = round(med["sparse_32"] / med["ce"], 2)
        if entry["num_classes"] == 1_000 and "dense" in med:
            out["sparse_over_dense_at_1k_m32"] = round(med["sparse_32"] / med["dense"], 2)
    state, slow, small = (out[k] for k in ("sparse_state_mb_at_100k_m32", "sparse_over_ce_at_100k_m32",
                                            "sparse_over_dense_at_1k_m32"))
    out["state_target_met"] = None if state is None else state * 1e6 < STATE_TARGET_BYTES
    out["speed_target_met"] = None if slow is None else slow <= MAX_SPARSE_OVER_CE
    out["small_k_target_met"] = None if small is None else small <= 1.0
    return out


def _mb(num_bytes: int) -> str:
    return f"{num_bytes / 1e6:,.1f}"


def render(results: list[dict[str, Any]], verdict: dict[str, Any]) -> list[str]:
    """The Markdown section of the sweep: one row per K and method, the skipped dense cases, the targets."""
    rows = []
    for entry in results:
        ce = entry["timings"]["ce"]["median_ms"]
        for name, stats in entry["timings"].items():
            memory = entry["memory"][name]
            rows.append([entry["device"], f"{entry['num_classes']:,}", name.replace("_", " m="),
                         f"{stats['median_ms']:.3g}", f"{stats['median_ms'] / ce:.2f}x",
                         _mb(memory["peak_bytes"]), _mb(memory["state_bytes"])])
        if "dense_skipped" in entry:
            rows.append([entry["device"], f"{entry['num_classes']:,}", "dense", "-", "-",
                         f"skipped: {entry['dense_skipped']}", _mb(entry["dense_predicted_bytes"])])
    lines = ["", f"## Many classes (B = {BATCH}, preset `{PRESET}`, training mode)", "",
             grid_table(["device", "K", "method", "median ms", "/ CE", "peak MB above inputs", "state MB"], rows), "",
             "Targets:", "",
             f"- sparse state at K = 100,000, m = 32 under 100 MB: {verdict['sparse_state_mb_at_100k_m32']} MB "
             f"({_mark(verdict['state_target_met'])})",
             f"- sparse / CE at K = 100,000, m = 32 at most {MAX_SPARSE_OVER_CE:g}x: "
             f"{verdict['sparse_over_ce_at_100k_m32']}x ({_mark(verdict['speed_target_met'])})",
             f"- sparse / dense at K = 1,000, m = 32 at most 1x: {verdict['sparse_over_dense_at_1k_m32']}x "
             f"({_mark(verdict['small_k_target_met'])})"]
    return lines


def _mark(met: bool | None) -> str:
    return "not measured" if met is None else ("pass" if met else "FAIL")
