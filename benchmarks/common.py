"""Shared helpers for benchmarks: one argument parser, machine description, interleaved timing, result files."""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from olsmooth import analysis
from olsmooth.engine.config import OPTIONS
from olsmooth.errors import UserInputError
from olsmooth.fileio import atomic_write_bytes, atomic_write_text
from olsmooth.studies.publish import PUBLISHED_PAGES

DEFAULT_OUT = "benchmarks/out"
PROVENANCE = ("Machine: ", "Command: ")
"""Lines of a page regenerated from its CSV that say where the CSV was measured: a page regenerated from the CSV
takes them from the page beside it (they are not in the CSV)."""


def exit_status(module: str, work: Callable[[], int]) -> int:
    """A benchmark's exit status: `work()`'s, or for bad input (a UserInputError: a study file, an option value, a
    missing file) one line `python -m MODULE: error: ...` on stderr and 2, as the toolkit's commands do."""
    try:
        return work()
    except UserInputError as err:
        print(f"python -m {module}: error: {err}", file=sys.stderr)
        return 2


def device_name(text: str) -> str:
    """An argparse type: what the toolkit's --device accepts (cpu, cuda or cuda:N)."""
    try:
        return OPTIONS["device"].check(text, "--device")
    except UserInputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def benchmark_parser(module: str, doc: str, *, quick: str, device: str, out: str = DEFAULT_OUT,
                     threads: int | None = 2, profile: str | None = None) -> argparse.ArgumentParser:
    """The options every benchmark shares: --quick, --out, --threads, --device, and --profile where `profile` says
    what it adds; each script adds its own options to the parser returned. `module` is the `python -m` name."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--out", default=out, help=f"folder for the result files (default {out})")
    threads_text = "torch's choice" if threads is None else str(threads)
    parser.add_argument("--threads", type=int, default=threads, help=f"torch CPU threads (default {threads_text})")
    parser.add_argument("--device", type=device_name, help=device)
    if profile is not None:
        parser.add_argument("--profile", action="store_true", help=profile)
    return parser


def parse_benchmark_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse argv, refuse --device cuda on a machine without CUDA (usage error), and set torch's CPU threads."""
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if args.device is not None and args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device on this machine")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return args


def benchmark_devices(requested: str | None) -> list[torch.device]:
    """The devices a speed benchmark measures: the one asked for, else the CPU and CUDA when present."""
    if requested is not None:
        return [torch.device(requested)]
    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, or the platform's best guess elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """What a reader needs to interpret timings: CPU, cores, threads, load, library versions, GPU."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": usable,
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "revision": source_revision(),
    }
    return info


def source_revision() -> str | None:
    """The repository's commit, with "+changes" when the working tree differs from it; None outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "src"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+changes" if dirty else "")


def machine_line(info: Mapping[str, Any]) -> str:
    """One Markdown line describing the machine, for the top of a result file."""
    gpu = f", GPU {info['cuda_device']}" if info.get("cuda_device") else ", no GPU"
    threads = info["torch_threads"]
    return (f"{info['cpu']}, {info['cpu_cores_usable']} usable cores, torch {info['torch']} "
            f"({threads} CPU thread{'' if threads == 1 else 's'}), Python {info['python']}{gpu}, "
            f"olsmooth at {info.get('revision')}; 1-min load average at start {info['load_average_1min']}")


def time_interleaved(cases: Mapping[str, Callable[[], None]], repeats: int, min_sample_s: float = 0.02,
                     warmup: int = 3, sync: Callable[[], None] | None = None,
                     between: Callable[[], None] | None = None) -> dict[str, list[float]]:
    """Seconds per call of each case, `repeats` samples each, measured round-robin so drift hits all alike.

    A sample calls the case back to back until `min_sample_s` has passed (so a machine slowed down by other work
    lengthens no sample by more than one call); `sync` (e.g. a CUDA synchronize) runs before the clock starts and
    before it stops; `between` runs untimed after each round.
    """
    sync = sync or (lambda: None)
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            sync()
            start = time.perf_counter()
            calls = 0
            while calls == 0 or time.perf_counter() - start < min_sample_s:
                fn()
                calls += 1
            sync()
            samples[name].append((time.perf_counter() - start) / calls)
        if between is not None:
            between()
    return samples


def timing_summary(seconds: Sequence[float]) -> dict[str, float]:
    """Median and quartiles of per-call times, in milliseconds."""
    ms = sorted(s * 1e3 for s in seconds)
    q1, _, q3 = statistics.quantiles(ms, n=4) if len(ms) > 1 else (ms[0], ms[0], ms[0])
    return {"median_ms": statistics.median(ms), "q1_ms": q1, "q3_ms": q3, "samples": len(ms)}


def median_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median: order statistics from binomial(n, 1/2) tails.

    With too few values for the level (n <= 5 at 95%) it is the full range, whose coverage is 1 - 2^(1-n).
    """
    xs = sorted(values)
    n, tail, k = len(xs), (1.0 - level) / 2, 0
    while k < n // 2 and sum(math.comb(n, i) for i in range(k + 1)) / 2**n <= tail:
        k += 1
    return xs[max(k - 1, 0)], xs[n - max(k, 1)]


def paired_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> dict[str, float]:
    """Median, min, max and 95% interval of the median of per-round ratios numerator[i] / denominator[i].

    Pairing by round cancels drift that hits both cases of a round alike, which a ratio of medians does not.
    """
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError("paired_ratios needs two non-empty sample lists of the same length")
    ratios = [a / b for a, b in zip(numerator, denominator)]
    low, high = median_ci(ratios)
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "ci95_low": low,
            "ci95_high": high, "rounds": len(ratios)}


def grid_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table of rows given as lists of ready-made cells, one per header (the library's markdown_table)."""
    return analysis.markdown_table([dict(zip(headers, row)) for row in rows], headers).rstrip("\n")


def command_line(argv: Sequence[str] | None = None, module: str | None = None) -> str:
    """The command that produced this result, as typed from the repository root: `python -m module` and argv
    (default: the running `python -m` module and its command-line arguments)."""
    module = module or getattr(sys.modules["__main__"].__spec__, "name", None)
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join([".venv/bin/python", *(["-m", module] if module else sys.argv[:1]), *args])


def write_results(out_dir: str | Path, name: str, payload: Mapping[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write `name.json` and `name.md` into out_dir (created if needed); return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    atomic_write_text(json_path, json.dumps(payload, indent=2, default=str) + "\n")
    atomic_write_text(md_path, markdown.rstrip() + "\n")
    return json_path, md_path


def finish(out_dir: str | Path, name: str, payload: dict[str, Any], render: Callable[[dict[str, Any]], str]) -> int:
    """Record the closing load average, render and print the Markdown, write both result files; exit code 0."""
    payload["load_average_1min_end"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    markdown = render(payload)
    print(markdown)
    json_path, md_path = write_results(out_dir, name, payload, markdown)
    print(f"\nwrote {json_path} and {md_path}")
    return 0


def report_header(title: str, payload: Mapping[str, Any]) -> list[str]:
    """The opening Markdown lines every result file shares: title, machine (with the closing load) and command."""
    return [f"# {title}", "",
            f"- Machine: {machine_line(payload['machine'])}, at the end {payload['load_average_1min_end']}",
            f"- Command: `{payload['command']}`"]


# -- pages regenerated from their per-run CSV ----------------------------------------------------------------------
def provenance_lines(info: Mapping[str, Any], command: str) -> list[str]:
    """The Machine and Command lines of a page regenerated from its CSV."""
    return [f"{PROVENANCE[0]}{machine_line(info)}", f"{PROVENANCE[1]}`{command}`"]


def provenance_of(page: Path) -> list[str]:
    """The Machine and Command lines of a page, when it exists."""
    if not page.is_file():
        return []
    return [line for line in page.read_text(encoding="utf-8").splitlines() if line.startswith(PROVENANCE)]


def published_paths(docs: str | Path, name: str) -> tuple[Path, Path]:
    """DOCS/benchmarks/NAME.csv and DOCS/benchmarks/NAME.md: a published page and the per-run data it comes from."""
    pages = Path(docs) / PUBLISHED_PAGES
    return pages / f"{name}.csv", pages / f"{name}.md"


def publish_page(source: Path, docs: str | Path, name: str, page: Callable[[list[str]], str]) -> list[Path]:
    """Copy a CSV verbatim into DOCS/benchmarks/NAME.csv and write beside it the page `page(provenance)` regenerates
    from it, with the Machine and Command lines of the page beside the CSV; returns both paths."""
    data_path, page_path = published_paths(docs, name)
    data_path.parent.mkdir(parents=True, exist_ok=True)
    text = page(provenance_of(source.with_suffix(".md")))
    atomic_write_bytes(data_path, source.read_bytes())
    atomic_write_text(page_path, text)
    return [data_path, page_path]


def published_difference(docs: str | Path, name: str, page: Callable[[Path, list[str]], str]) -> str:
    """'' when DOCS/benchmarks/NAME.md is exactly the page `page(csv, provenance)` regenerates from the committed
    NAME.csv (its Machine and Command lines taken from the published page), else a unified diff (published
    first)."""
    data_path, page_path = published_paths(docs, name)
    published = page_path.read_text(encoding="utf-8")
    fresh = page(data_path, provenance_of(page_path))
    return "".join(difflib.unified_diff(published.splitlines(True), fresh.splitlines(True), "published",
                                        "regenerated"))
