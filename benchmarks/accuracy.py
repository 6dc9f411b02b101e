"""Accuracy study on real Fashion-MNIST: CE, LS, OLS (paper-cifar, ours), Tf-KD over seeds and models.

Training is the shipped study `accuracy-fashion-mnist` (src/olsmooth/configs/studies/), run by the toolkit's
study runner exactly as `olsmooth study -c accuracy-fashion-mnist --out OUT/accuracy-fashion-mnist` runs it: one
run folder per cell and seed, `OUT/STUDY/CELL/seed-N` (CELL names the cell's options, e.g.
`model=small_cnn,method=ols,ols_preset=paper-cifar`), finished runs skipped and an interrupted one continued from
its last.pt, so the same command can be stopped and restarted; the study's own results.{csv,md,png} lie beside
the cells. This script then reads those run folders for what it reports in OUT/accuracy.{json,md}: the study's
table (plus top-5 and train top-1) and paired tests against CE and LS, and the figures in --figures. --publish DOCS
then publishes what the docs quote, each page regenerated from per-run data committed beside it: the study's page
(`olsmooth study --publish`: DOCS/benchmarks/STUDY.{csv,md}) and its snapshot ensembles (benchmarks.snapshots, the
paper's Table III: every epoch snapshot of every run evaluated once, DOCS/benchmarks/STUDY-snapshots.{csv,md}).

--study runs another study file through the same analysis (--quick is the small `accuracy-quick` study on
scikit-learn's digits); --dataset and --subset replace those options of the study's base, and the study folder's
name then says so. --pretrained adds the transfer protocol: a second study with the first one's base and seeds,
an ImageNet-pretrained network fine-tuned at 64x64 with CE, LS and OLS paper-fine-grained.

    .venv/bin/python -m benchmarks.accuracy --quick                  # CI-sized, well under a minute on 2 cores
    .venv/bin/python -m benchmarks.accuracy                          # the study: about 1 h 20 min on 2 CPU cores
    .venv/bin/python -m benchmarks.accuracy --figures docs/figures --publish docs   # make results
    .venv/bin/python -m benchmarks.accuracy --pretrained resnet18-f37072fd.pth   # + the transfer protocol
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from olsmooth.analysis import MetricAccumulator, plot_curves, plot_reliability_of, plot_soft_labels
from olsmooth.analysis.metrics import EVALUATION_KEYS
from olsmooth.analysis.report import (
    markdown_report,
    method_label,
    option_text,
    paired_rows,
    summary_rows,
)
from olsmooth.analysis.soft_labels import load_matrix
from olsmooth.data import build_datasets
from olsmooth.engine.config import TrainConfig
from olsmooth.engine.inference import evaluate_each, pick_snapshots
from olsmooth.engine.resolve import resolve
from olsmooth.fileio import atomic_write_text
from olsmooth.option_roles import METHOD_OPTIONS
from olsmooth.runs.reader import has_soft_labels, read_metrics, snapshot_files, soft_label_files
from olsmooth.studies.plan import PlannedRun, plan_runs
from olsmooth.studies.publish import publish
from olsmooth.studies.results import cell_groups
from olsmooth.studies.runner import run_study
from olsmooth.studies.spec import Cell, Study, baseline_pairs, cell_name, load_study, parse_study

from . import snapshots
from .common import (
    benchmark_parser,
    command_line,
    exit_status,
    machine_info,
    machine_line,
    parse_benchmark_args,
    provenance_lines,
    write_results,
)

STUDY, QUICK_STUDY = "accuracy-fashion-mnist", "accuracy-quick"
LABELS = {"fashion-mnist": "Fashion-MNIST", "digits": "scikit-learn digits"}
SUMMARY_KEYS = (*EVALUATION_KEYS, "train_top1")
ENSEMBLE_SIZES = (3, 5, 10)
"""Snapshot ensembles published with the study (benchmarks.snapshots), each against the last snapshot alone; a
study of fewer epochs than the largest ensembles all of its snapshots."""
SHARED_SETTINGS = ("batch_size", "lr", "optimizer", "momentum", "sched", "weight_decay")
PRESET_TAGS = {"paper-cifar": "paper", "paper-fine-grained": "fg"}
"""Figure names call OLS with a preset `ols-TAG` (e.g. small_cnn-n12000-e10-reliability-ols-paper.png)."""
TRANSFER = dict(image_size=64, lr=0.01, weight_decay=1e-4, batch_size=64)
TRANSFER_METHODS = ["ce", {"method": "ls", "ls_eps": 0.1}, {"method": "ols", "ols_preset": "paper-fine-grained"}]
WEIGHTS_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"


@dataclass
class Data:
    """What the tables and figures say about a study's dataset."""

    label: str
    class_names: list[str]
    train_size: int
    test_size: int

    @classmethod
    def of(cls, name: str) -> Data:
        """Read the dataset once for its class names and split sizes."""
        bundle = build_datasets(name)
        return cls(LABELS.get(name, name), list(bundle.class_names), len(bundle.train), len(bundle.test))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; --quick is --study accuracy-quick."""
    p = benchmark_parser(__spec__.name, __doc__, out="benchmarks/out/accuracy", threads=None,
                         quick=f"CI size: the {QUICK_STUDY} study (digits, 2 seeds, 2 epochs, 320 images, small_cnn)",
                         device="cpu | cuda (default: cuda when present)")
    p.add_argument("--study", help=f"study file or shipped study to run and analyse (default {STUDY})")
    p.add_argument("--dataset", help="replace the study's dataset (any registered dataset)")
    p.add_argument("--subset", type=int, help="replace the study's training subset size: N training images, drawn "
                   "as the study's train_subset_draw says (the shipped accuracy studies: the first N), 0 for all "
                   "(the test set stays whole)")
    p.add_argument("--seeds", type=int, help="seeds 0..N-1 (default: the study's)")
    p.add_argument("--pretrained", help="torchvision ImageNet resnet18/resnet50 .pth: also run the transfer study")
    p.add_argument("--pretrained-model", help="model name for --pretrained (default: guessed from the file name)")
    p.add_argument("--figures", help="folder for the PNG figures (default OUT/figures)")
    p.add_argument("--publish", metavar="DOCS", help="then publish the main study's page and its snapshot "
                   "ensembles into a docs folder, each with its per-run CSV: DOCS/benchmarks/STUDY.{csv,md}, "
                   "STUDY-snapshots.{csv,md} and their figures in DOCS/figures")
    args = parse_benchmark_args(p, argv)
    if args.quick and args.study:
        p.error("--quick runs the accuracy-quick study; give --quick or --study, not both")
    if args.subset is not None and args.subset < 0:
        p.error(f"--subset must be 0 (all) or a number of images, got {args.subset}")
    args.study = QUICK_STUDY if args.quick else args.study or STUDY
    args.figures = Path(args.figures or Path(args.out) / "figures")
    return args


def derive(study: Study, name: str, description: str, base: dict[str, Any],
           grid: dict[str, list[Any]] | None = None) -> Study:
    """`study` with `base` merged into its base options (and `grid` replacing its axes), validated as a study file."""
    data = {"description": description, "base": {**study.base, **base},
            "grid": grid or {axis: list(values) for axis, values in study.axes}, "seeds": list(study.seeds),
            "baselines": [dict(b) for b in study.baselines]}
    return parse_study(data, name, f"study {name}")


def main_study(args: argparse.Namespace) -> Study:
    """The study to run, with --seeds, and --dataset / --subset in its base (and then in its name)."""
    study = load_study(args.study, seeds=None if args.seeds is None else list(range(args.seeds)))
    requested = {"dataset": args.dataset} if args.dataset else {}
    if args.subset is not None:
        requested["train_subset"] = args.subset or None
    overrides = {k: v for k, v in requested.items() if study.base.get(k) != v}
    if not overrides and not args.device:
        return study
    name = f"{study.name}-{cell_name(overrides)}" if overrides else study.name
    description = study.description + (f" Here with {option_text(overrides)}." if overrides else "")
    return derive(study, name, description, {**overrides, **({"device": args.device} if args.device else {})})


def transfer_study(main: Study, args: argparse.Namespace) -> Study | None:
    """The transfer protocol on the main study's base and seeds, or None (with a line saying why) without weights."""
    if args.pretrained is None:
        print("transfer study skipped: no --pretrained file given (torchvision's ImageNet weights, e.g. "
              f"{WEIGHTS_URL}, fetched on a machine with network and copied here)")
        return None
    if not Path(args.pretrained).is_file():
        print(f"transfer study skipped: weights file {args.pretrained} not found (get it from {WEIGHTS_URL} on a "
              "machine with network and copy it here)")
        return None
    model = args.pretrained_model or ("resnet50" if "resnet50" in Path(args.pretrained).name else "resnet18")
    base = {**TRANSFER, "model": model, "pretrained": str(Path(args.pretrained).resolve())}
    description = (f"The transfer protocol: an ImageNet-pretrained {model} fine-tuned at 64x64 with CE, LS (eps 0.1) "
                   "and OLS paper-fine-grained, on the data, epochs and seeds of the main study.")
    return derive(main, f"{main.name}-transfer-{model}", description, base, {"method": TRANSFER_METHODS})


def evaluate_last(study: Study, plan: Sequence[PlannedRun], device: str | None) -> dict[str, MetricAccumulator]:
    """The reliability bins of the last snapshot of every cell's first seed, evaluated afresh."""
    last_eval: dict[str, MetricAccumulator] = {}
    for run in plan:
        if run.seed == study.seeds[0] and snapshot_files(run.folder):
            members = pick_snapshots(run.folder, 1)
            with evaluate_each(members, device=device) as evaluated:
                last_eval[run.cell.name] = evaluated.ensemble(members).sums
    return last_eval


def figure_prefix(config: TrainConfig) -> str:
    """The figures' name prefix for a cell: transfer-, the network, the training-set size and the epochs."""
    cfg = resolve(config)
    size = f"n{cfg.train_subset}" if cfg.train_subset else "full"
    return f"{'transfer-' if cfg.pretrained else ''}{cfg.model}-{size}-e{cfg.epochs}"


def method_options(cell: Cell) -> dict[str, Any]:
    """The options of a cell that choose its loss."""
    return {k: v for k, v in cell.options.items() if k in METHOD_OPTIONS}


def figure_names(study: Study) -> dict[str, tuple[str, str]]:
    """(prefix, method tag) of each cell's figures: the method with OLS presets shortened (ols-paper), or the
    cell's loss options where two cells with one prefix would share that tag."""
    prefixes = {cell.name: figure_prefix(cell.config) for cell in study.cells}
    tags = {}
    for cell in study.cells:
        preset = cell.config.loss_options.get("preset")
        tags[cell.name] = cell.config.method + (f"-{PRESET_TAGS.get(preset, preset)}" if preset else "")
    counts = Counter((prefixes[n], t) for n, t in tags.items())
    return {cell.name: (prefixes[cell.name], tags[cell.name] if counts[prefixes[cell.name], tags[cell.name]] == 1
                        else cell_name(method_options(cell))) for cell in study.cells}


def make_figures(study: Study, plan: Sequence[PlannedRun], last_eval: dict[str, MetricAccumulator], figures: Path,
                 data: Data) -> list[Path]:
    """Top-1 curves per prefix (network), reliability diagrams and the OLS soft-label matrices of the first seed."""
    names, first = figure_names(study), study.seeds[0]
    label = {cell.name: method_label(method_options(cell)) for cell in study.cells}
    curves: dict[str, dict[str, list[list[float]]]] = {}
    for run in plan:
        curves.setdefault(names[run.cell.name][0], {}).setdefault(label[run.cell.name], []).append(
            [r["top1"] for r in read_metrics(run.folder)])
    paths = [plot_curves(series, figures / f"{prefix}-top1.png", ylabel="test top-1 (%)",
                         title=f"{data.label}, {prefix}: test top-1 per epoch") for prefix, series in curves.items()]
    for cell in study.cells:
        prefix, tag = names[cell.name]
        title = f"{label[cell.name]}, {cell.config.model}, seed {first}"
        if cell.name in last_eval:
            paths.append(plot_reliability_of(last_eval[cell.name], figures / f"{prefix}-reliability-{tag}.png",
                                             title=title))
        folder = next(run.folder for run in plan if run.cell is cell and run.seed == first)
        if has_soft_labels(folder):
            epoch, matrix = list(soft_label_files(folder).items())[-1]
            paths.append(plot_soft_labels(load_matrix(matrix), class_names=data.class_names,
                                          path=figures / f"{prefix}-soft-labels-{tag}.png",
                                          title=f"soft labels: {title}, after epoch {epoch:03d}"))
    return paths


def settings_text(study: Study, data: Data) -> str:
    """The data, epochs, seeds and the training settings every cell shares, in a sentence."""
    configs = [resolve(cell.config) for cell in study.cells]
    subsets = {(cfg.train_subset, cfg.train_subset_draw) for cfg in configs}
    subset, draw = subsets.pop() if len(subsets) == 1 else (-1, None)
    size = ("a subset (per cell) of the" if subset == -1 else f"all {data.train_size:,}"
            if not subset or subset >= data.train_size else f"the first {subset:,}"
            if draw == "first" else f"a stratified, seeded draw of {subset:,}")
    epochs = {cfg.epochs for cfg in configs}
    shared = [f"{k} {option_text(getattr(configs[0], k))}" for k in SHARED_SETTINGS
              if len({option_text(getattr(cfg, k)) for cfg in configs}) == 1]
    return (f"Training on {size} training images of {data.label}, evaluation on all {data.test_size:,} test images; "
            f"{'/'.join(map(str, sorted(epochs)))} epochs, seeds {', '.join(map(str, study.seeds))}; "
            f"shared by every run: {', '.join(shared)}.")


def analyse(study: Study, root: Path, args: argparse.Namespace, md_dir: Path) -> tuple[dict[str, Any], str]:
    """The JSON payload and Markdown section of one finished study, read from its run folders."""
    plan = plan_runs(study, root)
    data = Data.of(resolve(study.cells[0].config).dataset)
    groups, pairs = cell_groups(study, plan), baseline_pairs(study)
    text = [f"## {study.name}\n", study.description.strip() + "\n" if study.description else "",
            f"{settings_text(study, data)} Run folders: `{root}/CELL/seed-N`, the study's own summary in "
            f"[{root.name}/results.md]({os.path.relpath(root / 'results.md', md_dir)}). Last epoch, mean ± sample std "
            "over seeds (top-1/top-5/ECE in %, NLL in nats; train_top1 = accuracy on the augmented training batches "
            "during the last epoch, a measure of how well the network fits); paired tests against the study's "
            "baselines (same seed = same initialisation and data order).\n",
            markdown_report(groups, SUMMARY_KEYS, pairs)]
    last_eval = evaluate_last(study, plan, args.device)
    figures = make_figures(study, plan, last_eval, args.figures, data)
    text += ["\nFigures:\n"] + [f"- ![{p.stem}]({os.path.relpath(p, md_dir)})" for p in figures]
    payload = {"root": str(root), "seeds": list(study.seeds), "summary": summary_rows(groups, SUMMARY_KEYS),
               "per_seed": {g.label: g.runs for g in groups}, "paired_tests": paired_rows(groups, pairs),
               "figures": [str(p) for p in figures]}
    return payload, "\n".join(text) + "\n"


def run(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    """Train what is missing, study by study, then write the tables and figures."""
    command, info = command_line(argv, __spec__.name), machine_info()
    main = main_study(args)
    studies = [s for s in (main, transfer_study(main, args)) if s is not None]
    out = Path(args.out)
    start = time.perf_counter()
    for study in studies:
        run_study(study, out / study.name)
    payload: dict[str, Any] = {"machine": info, "command": command, "study": args.study,
                               "train_seconds_this_invocation": time.perf_counter() - start, "studies": {}}
    sections = []
    for study in studies:
        payload["studies"][study.name], section = analyse(study, out / study.name, args, out)
        sections.append(section)
    header = (f"# Accuracy on {Data.of(resolve(main.cells[0].config).dataset).label}\n\nMachine: {machine_line(info)}"
              f"\n\nCommand: `{command}`\n")
    json_path, md_path = write_results(out, "accuracy", payload, header + "\n" + "\n".join(sections))
    print(f"wrote {json_path} and {md_path} ({time.perf_counter() - start:.0f}s in all)")
    if args.publish:
        written = publish_study(main, out, args.publish, args.device, provenance_lines(info, command))
        print("published " + ", ".join(map(str, written)))
    return 0


def publish_study(study: Study, out: Path, docs: str, device: str | None, provenance: list[str]) -> list[Path]:
    """Publish the study's page (`olsmooth study --publish`) and its snapshot ensembles (benchmarks.snapshots:
    OUT/STUDY-snapshots.{csv,md} written first, then copied with the page regenerated from the CSV)."""
    runs = out / study.name
    epochs = max(resolve(cell.config).epochs for cell in study.cells)
    sizes = sorted({size for size in ENSEMBLE_SIZES if size <= epochs} | {min(epochs, max(ENSEMBLE_SIZES))})
    rows = snapshots.evaluate_runs(study, plan_runs(study, runs), snapshots.late_start(study), sizes, device)
    source = out / f"{snapshots.page_name(study)}.csv"
    atomic_write_text(source, snapshots.csv_text(rows))
    atomic_write_text(source.with_suffix(".md"), snapshots.page_text(study, rows, provenance=provenance))
    return [*publish(study, runs, docs), *snapshots.publish(study, source, docs)]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study and its analysis; bad input (a study file, an option value) is one line and exit status 2."""
    args = parse_args(argv)
    return exit_status(__spec__.name, lambda: run(args, argv))


if __name__ == "__main__":
    sys.exit(main())
