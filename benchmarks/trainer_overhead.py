"""Training-loop overhead: images/s of olsmooth's Trainer against a bare PyTorch loop, same model, data and batch.

Both sides train `small_cnn` (or --model; `mlp` makes the per-step host work visible) with SGD lr 0.05, momentum
0.9, batch 128 on the same in-memory subset of real Fashion-MNIST (or --dataset), fed by one shared DataLoader, so
only the loops differ. The Trainer side times exactly what the `images_per_s` of metrics.jsonl times, through the
public API: `train_one_epoch(loader)` then `criterion.next_epoch()`, for methods `ce` and `ols` (paper-cifar).
Epochs run round-robin, the order rotated each round, on CPU and on CUDA when present, or on --device alone (CUDA
with --amp, bf16 by default). Targets: trainer-ce / bare >= 0.95 in images/s, and OLS costing < 1% more time than
CE inside the Trainer; the second is also checked below epoch noise by timing the two criteria alone on the model's
logits against the measured step time.

    .venv/bin/python -m benchmarks.trainer_overhead [--quick] [--profile] [--out DIR] [--threads N] [--device D]
        [--amp bf16] [--model NAME] [--dataset NAME] [--images N] [--cuda-images N] [--repeats N]
"""

from __future__ import annotations

import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from olsmooth.data import build_datasets
from olsmooth.engine.config import build_config
from olsmooth.engine.trainer import Trainer
from olsmooth.losses import build_loss
from olsmooth.models import create_model

from .common import (
    benchmark_devices,
    benchmark_parser,
    command_line,
    finish,
    grid_table,
    machine_info,
    paired_ratios,
    parse_benchmark_args,
    report_header,
    time_interleaved,
    timing_summary,
)
from .loss_speed import backward_step, device_sync

DATASET = "fashion-mnist"
MODEL = "small_cnn"  # default; --model mlp shows the per-step host overhead a cheap step cannot hide
BATCH = 128
LR = 0.05
MOMENTUM = 0.9
PRESET = "paper-cifar"
MIN_CE_OVER_BARE = 0.95
MAX_OLS_EXTRA = 0.01
CASES = ("bare", "trainer-ce", "trainer-ols")
PROFILE_ROWS = 15  # in the Markdown; the JSON keeps PROFILE_ROWS_JSON
PROFILE_ROWS_JSON = 60
PROFILE_EPOCHS = 3
WARMUP = 1
CLOCKS = {"wall": "wall clock", "cpu": "process CPU time"}


def load_subset(dataset: str, images: int) -> TensorDataset:
    """The first `images` training images of `dataset`, transformed once (no augmentation) into tensors."""
    bundle = build_datasets(dataset, augment="none")
    pairs = [bundle.train[i] for i in range(min(images, len(bundle.train)))]
    return TensorDataset(torch.stack([x for x, _ in pairs]), torch.tensor([y for _, y in pairs]))


def shared_loader(data: TensorDataset, device: torch.device, seed: int = 0) -> DataLoader:
    """The one loader both loops iterate: shuffled like the Trainer's (RandomSampler), no workers, pinned on CUDA."""
    sampler = RandomSampler(data, generator=torch.Generator().manual_seed(seed))
    return DataLoader(data, batch_size=BATCH, sampler=sampler, num_workers=0, pin_memory=device.type == "cuda")


def autocast(device: torch.device, amp: str) -> Any:
    """torch.autocast in `amp` (bf16) on `device`, or a no-op for none."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp == "bf16" else nullcontext()


class BareLoop:
    """The minimal hand-written loop: forward, cross-entropy, zero_grad, backward, SGD step; nothing else."""

    def __init__(self, model: str, loader: DataLoader, num_classes: int, channels: int, device: torch.device,
                 amp: str, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.model = create_model(model, num_classes=num_classes, in_chans=channels).to(device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.loader, self.device, self.amp = loader, device, amp

    def epoch(self) -> None:
        """One pass over the loader."""
        self.model.train()
        for x, y in self.loader:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with autocast(self.device, self.amp):
                logits = self.model(x)
                loss = F.cross_entropy(logits, y)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()


def make_trainer(dataset: str, model: str, method: str, device: torch.device, amp: str, out: Path) -> Trainer:
    """A Trainer with the bare loop's optimisation (constant lr, no weight decay); it writes nothing (no fit())."""
    options = {"dataset": dataset, "model": model, "method": method, "batch_size": BATCH, "lr": LR,
               "momentum": MOMENTUM, "weight_decay": 0.0, "sched": "constant", "epochs": 1000, "workers": 0,
               "amp": amp, "device": str(device), "out": str(out), "force": True}
    if method == "ols":
        options["ols_preset"] = PRESET
    return Trainer(build_config(None, options), log=lambda _msg: None)


def trainer_epoch(trainer: Trainer, loader: DataLoader) -> Callable[[], None]:
    """One Trainer epoch on the shared loader, exactly what `run_epoch` times: `train_one_epoch` then the loss's
    `next_epoch()` (the shared loader's own generator shuffles, so the untimed `start_epoch` is not needed)."""
    def run() -> None:
        trainer.train_one_epoch(loader)
        trainer.criterion.next_epoch()
    return run


def profile_epochs(fn: Callable[[], None], epochs: int = PROFILE_EPOCHS) -> dict[str, tuple[int, float]]:
    """cProfile `epochs` calls of `fn`: (calls, own seconds) per function, named `file:line name` or the builtin."""
    profiler = cProfile.Profile()
    for _ in range(epochs):
        profiler.runcall(fn)
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    return {(name if path == "~" else f"{Path(path).name}:{line} {name}"): (calls, own)
            for (path, line, name), (_, calls, own, _, _) in stats.items()}


def extra_work(bare: dict[str, tuple[int, float]], trainer: dict[str, tuple[int, float]],
               steps: int) -> dict[str, Any]:
    """Trainer minus bare own time of each function the two call a different number of times, largest first.

    Own time is additive (cumulative time would count nested calls twice); functions both loops call equally often
    (the model's layers, backward, the optimiser's kernels) are taken to cost the same and skipped.
    """
    rows = []
    for name in trainer.keys() | bare.keys():
        (calls_t, own_t), (calls_b, own_b) = trainer.get(name, (0, 0.0)), bare.get(name, (0, 0.0))
        if calls_t == calls_b:
            continue
        extra = own_t - own_b
        rows.append({"function": name, "calls_bare": calls_b, "calls_trainer": calls_t, "extra_ms": extra * 1e3,
                     "extra_us_per_step": extra / steps * 1e6})
    rows.sort(key=lambda row: abs(row["extra_ms"]), reverse=True)
    total_ms = sum(own for _, own in trainer.values()) * 1e3
    net_ms = sum(row["extra_ms"] for row in rows)
    return {"trainer_epoch_ms": total_ms, "bare_epoch_ms": sum(own for _, own in bare.values()) * 1e3,
            "net_extra_ms": net_ms, "net_extra_share": net_ms / total_ms, "top": rows[:PROFILE_ROWS_JSON]}


def with_cpu_time(fn: Callable[[], None], sink: list[float]) -> Callable[[], None]:
    """`fn`, also appending the CPU seconds the process spent in each call to `sink`."""
    def run() -> None:
        start = time.process_time()
        fn()
        sink.append(time.process_time() - start)
    return run


def rotated_rounds(cases: dict[str, Callable[[], None]], repeats: int,
                   sync: Callable[[], None] | None) -> dict[str, list[float]]:
    """Seconds per call, one call per case and round, with the order rotated each round (no case always last)."""
    names = list(cases)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        one = time_interleaved({name: cases[name] for name in order}, 1, min_sample_s=0.0,
                               warmup=WARMUP if r == 0 else 0, sync=sync)
        for name, values in one.items():
            samples[name] += values
    return samples


def summarize_clock(seconds: dict[str, list[float]], images: int) -> dict[str, Any]:
    """Images/s (median, min-max) per case and the paired per-round ratios, for one clock's seconds per epoch."""
    images_per_s = {name: sorted(images / s for s in values) for name, values in seconds.items()}
    return {
        "seconds_per_epoch": seconds,
        "median_images_per_s": {name: statistics.median(ips) for name, ips in images_per_s.items()},
        "range_images_per_s": {name: [ips[0], ips[-1]] for name, ips in images_per_s.items()},
        # throughput ratio trainer / bare = time bare / time trainer, paired round by round
        "ce_over_bare": paired_ratios(seconds["bare"], seconds["trainer-ce"]),
        "ols_over_bare": paired_ratios(seconds["bare"], seconds["trainer-ols"]),
        # time of OLS over CE inside the Trainer (the extra time is this minus one)
        "ols_time_over_ce": paired_ratios(seconds["trainer-ols"], seconds["trainer-ce"]),
    }


def loss_cost(trainers: dict[str, Trainer], loader: DataLoader, num_classes: int, repeats: int,
              min_sample_s: float) -> dict[str, Any]:
    """ms per call of fresh copies of the Trainers' criteria, forward + backward (+ statistics), on real logits.

    The logits are those of the model (under the run's autocast) on one batch of the loader, as a leaf tensor;
    the criteria run outside autocast as in `train_one_epoch`. Resolves the per-step OLS cost far below epoch noise.
    """
    trainer = trainers["ce"]
    device, amp = trainer.dist.device, trainer.cfg.amp
    images, labels = (t.to(device) for t in next(iter(loader)))
    with torch.no_grad(), autocast(device, amp):
        logits = trainer.model(images).detach().requires_grad_(True)
    criteria = {m: build_loss(t.cfg.method, num_classes, **t.cfg.loss_kwargs()).to(device).train()
                for m, t in trainers.items()}

    def between() -> None:
        for criterion in criteria.values():
            criterion.next_epoch()

    samples = time_interleaved({m: backward_step(c, logits, labels) for m, c in criteria.items()}, repeats,
                               min_sample_s, sync=device_sync(device), between=between)
    return {m: timing_summary(values) for m, values in samples.items()}


def measure_device(dataset: str, model: str, device: torch.device, amp: str, data: TensorDataset, num_classes: int,
                   repeats: int, loss_repeats: tuple[int, float], profile: bool) -> dict[str, Any]:
    """Interleaved epochs of the three cases on one device, timed by the wall clock and by process CPU time."""
    loader = shared_loader(data, device)
    channels = data.tensors[0].shape[1]
    bare = BareLoop(model, loader, num_classes, channels, device, amp)
    with tempfile.TemporaryDirectory(prefix="trainer_overhead-") as tmp:  # run folders; nothing writes them (no fit)
        trainers = {m: make_trainer(dataset, model, m, device, amp, Path(tmp) / m) for m in ("ce", "ols")}
        cases = {"bare": bare.epoch, **{f"trainer-{m}": trainer_epoch(t, loader) for m, t in trainers.items()}}
        cpu: dict[str, list[float]] = {name: [] for name in cases}
        timed = {name: with_cpu_time(fn, cpu[name]) for name, fn in cases.items()}
        wall = rotated_rounds(timed, repeats, device_sync(device))
        losses = loss_cost(trainers, loader, num_classes, *loss_repeats)
        profiles: dict[str, Any] = {}
        if profile:
            profiled = {name: profile_epochs(cases[name]) for name in CASES}
            profiles = {name: extra_work(profiled["bare"], profiled[name], PROFILE_EPOCHS * len(loader))
                        for name in CASES[1:]}
    cpu = {name: values[WARMUP:] for name, values in cpu.items()}  # one call per sample: drop the warm-up calls
    step_ms = statistics.median(wall["trainer-ce"]) / len(loader) * 1e3
    extra_ms = losses["ols"]["median_ms"] - losses["ce"]["median_ms"]
    return {"device": device.type, "amp": amp, "images_per_epoch": len(data), "steps_per_epoch": len(loader),
            "clocks": {"wall": summarize_clock(wall, len(data)), "cpu": summarize_clock(cpu, len(data))},
            "loss_alone": {"timings": losses, "ols_extra_ms": extra_ms, "trainer_ce_step_ms": step_ms,
                           "ols_extra_share_of_step": extra_ms / step_ms,
                           "ols_extra": "pass" if extra_ms / step_ms < MAX_OLS_EXTRA else "FAIL"},
            "profile": profiles}


def judge(ratio: dict[str, float], meets: Callable[[float], bool]) -> str:
    """Verdict of a paired ratio against a monotone target, judged on its 95% interval of the median.

    'pass' when the whole interval meets the target, 'FAIL' when none of it does, else 'not resolved'.
    """
    low, high = meets(ratio["ci95_low"]), meets(ratio["ci95_high"])
    return "pass" if low and high else "FAIL" if not (low or high) else "not resolved"


def verdicts(clock: dict[str, Any]) -> dict[str, str]:
    """Verdicts of one clock's paired ratios against the two targets, judged on the 95% interval of the median."""
    return {"ce_over_bare": judge(clock["ce_over_bare"], lambda r: r >= MIN_CE_OVER_BARE),
            "ols_extra": judge(clock["ols_time_over_ce"], lambda r: r - 1.0 < MAX_OLS_EXTRA)}


def spread(r: dict[str, float], fmt: str = "{:.3f}", shift: float = 0.0, scale: float = 1.0) -> str:
    """A paired ratio as 'median [95% interval]', each value mapped to (value + shift) * scale."""
    median, low, high = ((r[k] + shift) * scale for k in ("median", "ci95_low", "ci95_high"))
    return f"{fmt.format(median)} [{fmt.format(low)}, {fmt.format(high)}]"


def render(payload: dict[str, Any]) -> str:
    """The Markdown report: machine, command, images/s per case and the two ratios against their targets."""
    lines = report_header("Trainer overhead: olsmooth's training loop vs a bare PyTorch loop", payload) + [
             f"- Mode: {payload['mode']}; {payload['repeats']} interleaved rounds of one epoch per case, the order "
             "rotated each round (bare, trainer-ce, trainer-ols; trainer-ce, trainer-ols, bare; ...), after one "
             f"warm-up epoch each; an epoch is the first N {payload['dataset']} training images (N and steps of "
             f"{BATCH} in column 'epoch'), pre-transformed in memory; `{payload['model']}`, SGD lr {LR} "
             f"momentum {MOMENTUM}",
             "- Ratios are medians over rounds of per-round ratios [distribution-free 95% interval of that median]; "
             "a target is passed or failed only when the whole interval is on one side of it, else 'not resolved'; "
             "images/s are medians (min-max); each epoch is timed by the wall clock and by the CPU time the process "
             "spent in it"]
    if payload["repeats"] < 6:
        lines.append(f"- Only {payload['repeats']} rounds: each interval is the full range (coverage "
                     f"{1 - 2.0 ** (1 - payload['repeats']):.0%}, not 95%); a smoke run, not a measurement")
    lines.append("")
    headers = ["device", "amp", "epoch", "clock", *(f"{c} img/s" for c in CASES),
               f"trainer-ce / bare (>= {MIN_CE_OVER_BARE})", "trainer-ols / bare",
               f"OLS extra time vs CE (< {MAX_OLS_EXTRA:.0%})"]
    rows = []
    for e in payload["results"]:
        for clock, label in CLOCKS.items():
            r = e["clocks"][clock]
            v = r["verdict"]
            ips = [f"{r['median_images_per_s'][c]:.0f} ({r['range_images_per_s'][c][0]:.0f}-"
                   f"{r['range_images_per_s'][c][1]:.0f})" for c in CASES]
            rows.append([e["device"], e["amp"], f"{e['images_per_epoch']:,} / {e['steps_per_epoch']}", label, *ips,
                         f"{spread(r['ce_over_bare'])} {v['ce_over_bare']}", spread(r["ols_over_bare"]),
                         f"{spread(r['ols_time_over_ce'], '{:+.2f}', -1.0, 100.0)} % {v['ols_extra']}"])
    lines.append(grid_table(headers, rows))
    lines += ["", "OLS cost per step resolved below epoch noise: fresh copies of the two criteria, forward + backward "
              f"(+ statistics) on the model's logits for one batch, {payload['loss_repeats'][0]} interleaved samples "
              "of back-to-back calls, median ms; the difference over a median trainer-ce step:", ""]
    rows = []
    for e in payload["results"]:
        la = e["loss_alone"]
        rows.append([e["device"], e["amp"], f"{la['timings']['ce']['median_ms']:.3f}",
                     f"{la['timings']['ols']['median_ms']:.3f}", f"{la['ols_extra_ms']:+.3f}",
                     f"{la['trainer_ce_step_ms']:.2f}",
                     f"{la['ols_extra_share_of_step']:+.2%} {la['ols_extra']}"])
    lines.append(grid_table(["device", "amp", "CE loss ms", "OLS loss ms", "OLS - CE ms", "trainer-ce step ms",
                                 f"OLS extra per step (< {MAX_OLS_EXTRA:.0%})"], rows))
    for e in payload["results"]:
        for name, prof in e["profile"].items():
            lines += ["", f"cProfile, {PROFILE_EPOCHS} epochs each on {e['device']}: own time of the calls `{name}` "
                      f"makes more often than the bare loop (+) or less often (-); net {prof['net_extra_ms']:+.1f} ms "
                      f"= {prof['net_extra_share']:+.2%} of its {prof['trainer_epoch_ms']:.0f} ms (bare "
                      f"{prof['bare_epoch_ms']:.0f} ms; profiling inflates Python-level calls); top {PROFILE_ROWS} "
                      "by size:", ""]
            lines.append(grid_table(["function", "calls bare", f"calls {name}", "extra ms", "extra us/step"],
                                        [[r["function"], r["calls_bare"], r["calls_trainer"], f"{r['extra_ms']:+.2f}",
                                          f"{r['extra_us_per_step']:+.0f}"] for r in prof["top"][:PROFILE_ROWS]]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the Markdown table and write trainer_overhead.json / trainer_overhead.md."""
    parser = benchmark_parser(__spec__.name, __doc__, quick="small subset, few rounds: a smoke run, not a measurement",
                              device="cpu or cuda[:N] alone (default: the CPU, and CUDA when present)",
                              profile="also cProfile a few epochs of each case")
    parser.add_argument("--model", default=MODEL, help=f"model of both loops (default {MODEL})")
    parser.add_argument("--dataset", default=DATASET, help=f"training images of both loops (default {DATASET})")
    parser.add_argument("--amp", choices=("none", "bf16"), default="bf16",
                        help="mixed precision of the CUDA runs (CPU runs are float32); default bf16")
    parser.add_argument("--images", type=int, default=None,
                        help="training images per CPU epoch (default 1,280; quick 512)")
    parser.add_argument("--cuda-images", type=int, default=None,
                        help="training images per CUDA epoch (default 60,000, the whole split; quick 6,400)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 30; quick 3)")
    args = parse_benchmark_args(parser, argv)

    repeats = args.repeats or (3 if args.quick else 30)
    loss_repeats = (5, 0.005) if args.quick else (21, 0.05)
    runs = [(device, "none", args.images or (512 if args.quick else 1280)) if device.type == "cpu"
            else (device, args.amp, args.cuda_images or (6400 if args.quick else 60_000))
            for device in benchmark_devices(args.device)]
    data = load_subset(args.dataset, max(images for _, _, images in runs))
    num_classes = int(data.tensors[1].max()) + 1
    payload: dict[str, Any] = {
        "benchmark": "trainer_overhead", "command": command_line(argv, __spec__.name),
        "mode": "quick" if args.quick else "full", "repeats": repeats, "loss_repeats": loss_repeats,
        "machine": machine_info(), "dataset": args.dataset, "model": args.model, "batch_size": BATCH, "lr": LR,
        "momentum": MOMENTUM, "ols_preset": PRESET,
        "stderr_is_tty": sys.stderr.isatty(),  # a terminal turns the Trainer's tqdm bar on (a .item() per 10 steps)
        "targets": {"ce_over_bare_min": MIN_CE_OVER_BARE, "ols_extra_time_max": MAX_OLS_EXTRA}, "results": [],
    }
    for device, amp, images in runs:
        print(f"measuring {device.type} (amp {amp}): {repeats} rounds of {images} images ...", file=sys.stderr,
              flush=True)
        subset = TensorDataset(*(t[:images] for t in data.tensors))
        entry = measure_device(args.dataset, args.model, device, amp, subset, num_classes, repeats, loss_repeats,
                               args.profile)
        for clock in entry["clocks"].values():
            clock["verdict"] = verdicts(clock)
        payload["results"].append(entry)
    return finish(args.out, "trainer_overhead", payload, render)


if __name__ == "__main__":
    sys.exit(main())
