"""Snapshot ensembles against the last single model, for every method of a study (the paper's Table III).

Trains the study (`olsmooth study`, finished runs skipped, an interrupted one continued), evaluates each run's
epoch snapshots once on the test set, and averages the softmax of K snapshots spread uniformly over the epochs
after --after (by default the study's first learning-rate milestone, so that every member is near-converged) and,
as the paper picks them, over all of training. Writes OUT/snapshots.{json,md} and OUT/snapshots.png: per method and
K, top-1, NLL and ECE (mean ± sample std over seeds), the gain over the last snapshot alone with its paired
t-test, and paired tests of each method's largest ensemble against the study baselines' ensembles of that size.

    python -m benchmarks.snapshots [--quick] [--study NAME] [--after EPOCH] [--sizes K ...]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from olsmooth.analysis import classification_metrics
from olsmooth.analysis.report import (
    PAIRED_COLUMNS,
    PAIRED_FORMATS,
    Group,
    cell_text,
    markdown_table,
    paired_rows,
    paired_test,
    summary_stats,
)
from olsmooth.engine.inference import evaluate_each, pick_snapshots, snapshot_epochs
from olsmooth.engine.resolve import resolve
from olsmooth.engine.study import PlannedRun, Study, baseline_pairs, load_study, plan_runs, run_study
from olsmooth.errors import UserInputError

from .common import benchmark_parser, command_line, machine_info, machine_line, parse_benchmark_args, write_results

MODULE = "benchmarks.snapshots"
STUDY, QUICK_STUDY = "family-snapshots-fashion-mnist", "snapshots-quick"
DEFAULT_SIZES = (3, 5, 10)
KEYS = ("top1", "nll", "ece")
SPREADS = ("late", "all")
"""late: snapshots after --after only; all: spread over all of training, as the paper's Table III."""
EnsembleKey = tuple[int, str, int]
"""(cell index, spread, number of snapshots; 1 is the last snapshot alone)."""


def parse_args(argv: Sequence[str] | None) -> Any:
    parser = benchmark_parser(MODULE, __doc__, quick=f"the {QUICK_STUDY} study on digits: a smoke test",
                              device="cpu | cuda | cuda:N for training and evaluation", threads=None,
                              out="benchmarks/out/snapshots")
    parser.add_argument("--study", help=f"study file or shipped name (default {STUDY})")
    parser.add_argument("--runs", help="where the study's run folders go (default OUT/STUDY)")
    parser.add_argument("--after", type=int, help="late ensembles use only the snapshots after this epoch "
                                                  "(default: the study's first multistep milestone, else half)")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES),
                        help=f"ensemble sizes (default {' '.join(map(str, DEFAULT_SIZES))})")
    args = parse_benchmark_args(parser, argv)
    if args.quick and args.study:
        parser.error(f"--quick runs the {QUICK_STUDY} study; give --quick or --study, not both")
    if any(size < 2 for size in args.sizes):
        parser.error(f"--sizes must be 2 or more snapshots, got {args.sizes}")
    args.study = QUICK_STUDY if args.quick else args.study or STUDY
    return args


def late_start(study: Study) -> int:
    """The epoch after which snapshots count as near-converged: the first milestone, else half of training."""
    cfg = resolve(study.cells[0].config)
    return min(cfg.milestones) if cfg.sched == "multistep" and cfg.milestones else cfg.epochs // 2


def evaluate_runs(study: Study, plan: Sequence[PlannedRun], after: int, sizes: Sequence[int],
                  device: str | None) -> dict[EnsembleKey, dict[int, dict[str, float]]]:
    """Each finished run's ensembles by (cell, spread, size), each seed's top1/nll/ece; every snapshot a run needs
    is evaluated once and its test probabilities serve every ensemble."""
    found: dict[EnsembleKey, dict[int, dict[str, float]]] = {}
    index = {cell.name: number for number, cell in enumerate(study.cells)}
    for run in plan:
        epochs = list(snapshot_epochs(run.folder))
        if run.status.state != "done" or not epochs:
            continue
        cell = index[run.cell.name]
        starts = {"late": after, "all": 0}
        picks = {(spread, size): pick_snapshots(run.folder, size, starts[spread])
                 for spread in SPREADS for size in (1, *sizes)
                 if size <= sum(epoch > starts[spread] for epoch in epochs)}
        needed = sorted({path for members in picks.values() for path in members})
        cache = dict(zip(needed, evaluate_each(needed, device=device)))
        for (spread, size), members in picks.items():
            probs = torch.stack([cache[path].probs for path in members]).mean(dim=0)
            metrics = classification_metrics(probs, cache[members[0]].labels)
            found.setdefault((cell, spread, size), {})[run.seed] = {k: float(metrics[k]) for k in KEYS}
    return found


def wide_rows(study: Study, found: dict[EnsembleKey, dict[int, dict[str, float]]], spread: str,
              sizes: Sequence[int]) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per cell: n, the last snapshot's top-1, each size's ensemble top-1, and at the largest size that
    fits the gain (paired t-test p) and NLL/ECE of the single model → the ensemble."""
    rows = []
    for index, cell in enumerate(study.cells):
        single = found.get((index, spread, 1), {})
        fitted = [size for size in sizes if found.get((index, spread, size))]
        if not single or not fitted:
            continue
        largest, seeds = fitted[-1], sorted(single)
        ensemble = found[index, spread, fitted[-1]]
        stats = {size: summary_stats([found[index, spread, size][s] for s in seeds], KEYS, cell.name)
                 for size in (1, *fitted)}
        gain = paired_test([ensemble[s]["top1"] for s in seeds], [single[s]["top1"] for s in seeds]) \
            if len(seeds) > 1 else None
        row = {"cell": cell.name, "n": str(len(seeds)), "single top-1": cell_text(stats[1]["top1"], ".2f")}
        row |= {f"{size} top-1": cell_text(stats[size]["top1"], ".2f") for size in fitted}
        row["gain"] = (f"{gain['mean_diff']:+.2f} (p {gain['t_pvalue']:.3f})" if gain else
                       f"{ensemble[seeds[0]]['top1'] - single[seeds[0]]['top1']:+.2f}")
        for key, fmt in (("nll", ".3f"), ("ece", ".2f")):
            row[key.upper()] = f"{stats[1][key]['mean']:{fmt}} → {stats[largest][key]['mean']:{fmt}}"
        rows.append(row)
    sizes_shown = [s for s in sizes if any(f"{s} top-1" in r for r in rows)]
    return rows, ["cell", "n", "single top-1", *(f"{s} top-1" for s in sizes_shown), "gain", "NLL", "ECE"]


def ensemble_tests(study: Study, found: dict[EnsembleKey, dict[int, dict[str, float]]], spread: str,
                   size: int) -> list[dict[str, Any]]:
    """Paired tests (top-1, NLL, ECE) of each cell's `size`-snapshot ensemble against the baselines' ensembles."""
    groups = [Group(dict(cell.options)) for cell in study.cells]
    for index, group in enumerate(groups):
        for seed, figures in found.get((index, spread, size), {}).items():
            group.add(seed, figures, Path(study.cells[index].name) / f"seed-{seed}")
    return paired_rows(groups, baseline_pairs(study), KEYS)


def plot(study: Study, found: dict[EnsembleKey, dict[int, dict[str, float]]], sizes: Sequence[int],
         path: Path) -> Path:
    """Mean test top-1 against the number of late snapshots, a line per cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for index, cell in enumerate(study.cells):
        points = [(size, found[index, "late", size]) for size in (1, *sizes) if found.get((index, "late", size))]
        if points:
            ax.plot([p[0] for p in points], [sum(r["top1"] for r in p[1].values()) / len(p[1]) for p in points],
                    marker="o", label=cell.name)
    ax.set(xlabel="snapshots in the ensemble (1 = last model)", ylabel="test top-1 (%)", xscale="log")
    ax.set_xticks([1, *sizes], [str(s) for s in (1, *sizes)])
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run(args: Any, argv: Sequence[str] | None) -> int:
    study = load_study(args.study)
    runs = Path(args.runs) if args.runs else Path(args.out) / study.name
    run_study(study, runs)
    after = late_start(study) if args.after is None else args.after
    sizes = sorted(set(args.sizes))
    found = evaluate_runs(study, plan_runs(study, runs), after, sizes, args.device)
    if not found:
        raise UserInputError(f"no finished run of {study.name} in {runs} has epoch snapshots (train with "
                             "--save-every)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figure = plot(study, found, sizes, out / "snapshots.png")
    info, command = machine_info(), command_line(argv, MODULE)
    text = [f"# Snapshot ensembles: {study.name}\n", f"Machine: {machine_line(info)}\n", f"Command: `{command}`\n",
            study.description.strip() + "\n",
            "Softmax average of K epoch snapshots against the last snapshot alone (single). Mean ± sample std over "
            "seeds; gain = ensemble top-1 − single top-1 at the largest K, paired by seed (t-test p); NLL and ECE "
            "of the single model → of that ensemble.\n"]
    payload: dict[str, Any] = {"machine": info, "command": command, "study": study.name, "runs": str(runs),
                               "after": after, "sizes": sizes, "ensembles": []}
    for spread in SPREADS:
        title = (f"## Near-converged snapshots: after epoch {after}" if spread == "late"
                 else "## Snapshots over all of training (the paper's protocol)")
        rows, columns = wide_rows(study, found, spread, sizes)
        largest = max(size for (_, s, size) in found if s == spread)
        tests = ensemble_tests(study, found, spread, largest)
        text += [f"{title}\n", markdown_table(rows, columns)]
        if tests:
            text += [f"\nPaired tests of the {largest}-snapshot ensembles against the baselines' (same seeds):\n",
                     markdown_table(tests, PAIRED_COLUMNS, PAIRED_FORMATS)]
        payload["ensembles"] += [{"cell": study.cells[cell].name, "spread": spread, "snapshots": size,
                                  "seed": seed, **figures}
                                 for (cell, s, size), seeds in found.items() if s == spread
                                 for seed, figures in sorted(seeds.items())]
    text.append(f"\n![test top-1 against the ensemble size]({figure.name})\n")
    json_path, md_path = write_results(out, "snapshots", payload, "\n".join(text))
    print(f"wrote {json_path}, {md_path} and {figure}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Train, evaluate and report; bad input (a study file, an option value) is one line and exit status 2."""
    args = parse_args(argv)
    try:
        return run(args, argv)
    except UserInputError as err:
        print(f"python -m {MODULE}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
