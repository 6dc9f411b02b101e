"""Accuracy study on real Fashion-MNIST (or --dataset): CE, LS, OLS (paper-cifar, ours), Tf-KD over seeds and models.

Every run goes through the toolkit's Trainer in-process into its own run folder (with epoch snapshots), so
each can be inspected, re-evaluated or ensembled with `olsmooth eval | ensemble | report`. A run folder whose
metrics.jsonl already holds all epochs is skipped, and an interrupted one is resumed from its last.pt, so
a long study can be stopped and continued with the same command. Results (mean ± std, paired tests,
snapshot ensembles) go to OUT/accuracy.{json,md}, figures to --figures.

    .venv/bin/python -m benchmarks.accuracy --quick                  # CI-sized, about 1-2 minutes on 2 cores
    .venv/bin/python -m benchmarks.accuracy                          # the study: about 2 hours on 2 CPU cores
    .venv/bin/python -m benchmarks.accuracy --pretrained resnet18-f37072fd.pth   # + the transfer protocol
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from olsmooth.analysis import (
    classification_metrics,
    final_metrics,
    markdown_table,
    paired_test,
    plot_curves,
    plot_reliability,
    plot_soft_labels,
    read_metrics,
    summarize,
)
from olsmooth.data import build_datasets, dataset_defaults
from olsmooth.engine.config import build_config
from olsmooth.engine.inference import evaluate_each, pick_snapshots, snapshot_epochs
from olsmooth.engine.trainer import Trainer, load_resume

from .common import benchmark_parser, command_line, machine_info, machine_line, parse_benchmark_args, write_results

DATASET = "fashion-mnist"  # the default; any registered dataset works with --dataset
LABELS = {"fashion-mnist": "Fashion-MNIST", "digits": "scikit-learn digits"}
# key on the command line -> (label in tables, training options)
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "ce": ("CE", dict(method="ce")),
    "ls": ("LS (eps 0.1)", dict(method="ls", ls_eps=0.1)),
    "ols-paper": ("OLS paper-cifar", dict(method="ols", ols_preset="paper-cifar")),
    "ols": ("OLS (ours)", dict(method="ols")),
    "tfkd": ("Tf-KD", dict(method="tfkd")),
}
TRANSFER_METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "ce": METHODS["ce"],
    "ls": METHODS["ls"],
    "ols-fg": ("OLS paper-fine-grained", dict(method="ols", ols_preset="paper-fine-grained")),
}
ENSEMBLE_METHODS = ("ce", "ls", "ols-paper", "ols")
ENSEMBLE_SIZES = (1, 3, 5, 10)
OLS_VARIANTS = ("ols-paper", "ols", "ols-fg")
BASELINES = ("ls", "ce")
TEST_KEYS = ("top1", "nll", "ece")
SUMMARY_KEYS = ("top1", "top5", "nll", "ece", "train_top1")
TRANSFER = dict(image_size=64, lr=0.01, weight_decay=1e-4, batch_size=64)
WEIGHTS_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"


@dataclass
class Data:
    """What the tables and figures say about the study's dataset."""

    label: str
    class_names: list[str]
    train_size: int
    test_size: int

    @classmethod
    def of(cls, name: str) -> Data:
        """Read the dataset once for its class names and split sizes."""
        bundle = build_datasets(name)
        return cls(LABELS.get(name, name), list(bundle.class_names), len(bundle.train), len(bundle.test))


@dataclass
class Study:
    """One protocol (a model, its data size and epochs) with the run folders of each method and seed."""

    name: str
    model: str
    methods: dict[str, tuple[str, dict[str, Any]]]
    root: Path
    extra: dict[str, Any]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; --quick overrides seeds, epochs, subset and models."""
    p = benchmark_parser(__spec__.name, __doc__, out="benchmarks/out/accuracy", threads=None,
                         quick="CI size: 1 seed, 1 epoch, 1,000 images, batch 32, small_cnn",
                         device="cpu | cuda (default: cuda when present)")
    p.add_argument("--dataset", default=DATASET, help="dataset of the study (default: Fashion-MNIST)")
    p.add_argument("--seeds", type=int, default=5, help="seeds per method and model (0..N-1)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs of every run")
    p.add_argument("--models", nargs="+", default=["small_cnn", "small_resnet"])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--subset", type=int, default=12000,
                   help="train on the first N training images, 0 for all (the test set stays whole)")
    p.add_argument("--batch-size", type=int, help="batch size (default: the dataset's, 128 for Fashion-MNIST)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the dataset's, 0.05 for Fashion-MNIST)")
    p.add_argument("--save-every", type=int, default=1, help="epoch snapshots for ensembles every N epochs")
    p.add_argument("--ensemble-seeds", type=int, help="seeds whose snapshot ensembles are evaluated (default: all)")
    p.add_argument("--pretrained", help="torchvision ImageNet resnet18/resnet50 .pth: also run the transfer study")
    p.add_argument("--pretrained-model", help="model name for --pretrained (default: guessed from the file name)")
    p.add_argument("--figures", help="folder for the PNG figures (default OUT/figures)")
    args = parse_benchmark_args(p, argv)
    if args.quick:
        args.seeds, args.epochs, args.subset, args.models = 1, 1, 1000, ["small_cnn"]
        args.batch_size = args.batch_size or 32
    args.subset = args.subset or None
    args.figures = Path(args.figures or Path(args.out) / "figures")
    return args


def size_tag(subset: int | None) -> str:
    """Folder-name part for the training-set size."""
    return f"n{subset}" if subset else "full"


def tuning_tag(args: argparse.Namespace) -> str:
    """Folder-name part for a batch size or learning rate other than the dataset's."""
    return (f"-b{args.batch_size}" if args.batch_size else "") + (f"-lr{args.lr:g}" if args.lr else "")


def build_studies(args: argparse.Namespace) -> list[Study]:
    """The main study per model, plus the transfer study when a weights file is given and exists."""
    studies = []
    for model in args.models:
        root = Path(args.out) / f"{model}-{size_tag(args.subset)}-e{args.epochs}{tuning_tag(args)}"
        methods = {k: METHODS[k] for k in args.methods}
        studies.append(Study(model, model, methods, root, {}))
    if args.pretrained is None:
        print("transfer study skipped: no --pretrained file given (torchvision's ImageNet weights, e.g. "
              f"{WEIGHTS_URL}, fetched on a machine with network and copied here)")
    elif not Path(args.pretrained).is_file():
        print(f"transfer study skipped: weights file {args.pretrained} not found (get it from {WEIGHTS_URL} on a "
              "machine with network and copy it here)")
    else:
        model = args.pretrained_model or ("resnet50" if "resnet50" in Path(args.pretrained).name else "resnet18")
        root = Path(args.out) / f"transfer-{model}-{size_tag(args.subset)}-e{args.epochs}"
        studies.append(Study(f"{model} (ImageNet-pretrained, 64x64)", model, TRANSFER_METHODS, root,
                             dict(TRANSFER, pretrained=str(Path(args.pretrained).resolve()))))
    return studies


def run_dir(study: Study, method: str, seed: int) -> Path:
    """Run folder of one method and seed."""
    return study.root / method / f"seed-{seed}"


def is_complete(folder: Path, epochs: int) -> bool:
    """True when the run's metrics.jsonl holds all epochs."""
    return (folder / "metrics.jsonl").is_file() and len(read_metrics(folder)) >= epochs


def train_one(study: Study, method: str, seed: int, args: argparse.Namespace) -> str:
    """Train (or resume, or skip) one run; return what was done."""
    folder = run_dir(study, method, seed)
    if is_complete(folder, args.epochs):
        return "skipped (complete)"
    if (folder / "last.pt").is_file():
        cfg, checkpoint = load_resume(folder, {"epochs": args.epochs})
        action = "resumed"
    else:
        tuning = {k: getattr(args, k) for k in ("batch_size", "lr") if getattr(args, k) is not None}
        options = {**study.methods[method][1], **study.extra, **tuning}
        cfg = build_config(None, dict(dataset=args.dataset, model=study.model, epochs=args.epochs, seed=seed,
                                      out=str(folder), save_every=args.save_every, device=args.device, force=True,
                                      train_subset=args.subset, **options))
        checkpoint, action = None, "trained"
    start = time.perf_counter()
    Trainer(cfg, checkpoint, log=lambda _msg: None).fit()
    return f"{action} in {time.perf_counter() - start:.0f}s"


def train_all(studies: Sequence[Study], args: argparse.Namespace) -> None:
    """All runs, seed by seed, so an interrupted study has complete seeds for every method."""
    for study in studies:
        for seed in range(args.seeds):
            for method in study.methods:
                status = train_one(study, method, seed, args)
                print(f"[{study.name}] {method} seed {seed}: {status}", flush=True)


def results_table(study: Study, seeds: int) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Summary rows (mean ± std of the last epoch) and the per-seed final records of each method."""
    finals = {m: [final_metrics(run_dir(study, m, s)) for s in range(seeds)] for m in study.methods}
    rows = summarize({study.methods[m][0]: runs for m, runs in finals.items()}, keys=SUMMARY_KEYS)
    return rows, finals


def paired_rows(study: Study, finals: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Paired tests over seeds of each OLS variant against LS and CE, per metric."""
    rows = []
    for ols in (m for m in OLS_VARIANTS if m in finals):
        for base in (b for b in BASELINES if b in finals):
            for key in TEST_KEYS:
                test = paired_test([r[key] for r in finals[ols]], [r[key] for r in finals[base]])
                wilcoxon = test["wilcoxon_pvalue"]
                rows.append({"comparison": f"{study.methods[ols][0]} − {study.methods[base][0]}", "metric": key,
                             "n": str(test["n"]), "mean diff": test["mean_diff"], "t-test p": test["t_pvalue"],
                             "Wilcoxon p": "n < 5" if wilcoxon is None else wilcoxon})
    return rows


def ensemble_rows(study: Study, seeds: int, device: str | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Top-1 (and NLL, ECE) of softmax-averaged snapshot ensembles; also the last-epoch evaluations of seed 0.

    Each snapshot is evaluated once and its test probabilities are reused by every ensemble size."""
    rows, last_eval = [], {}
    for method in study.methods:
        for seed in range(seeds if method in ENSEMBLE_METHODS else min(seeds, 1)):
            folder = run_dir(study, method, seed)
            available = len(snapshot_epochs(folder))
            if not available:
                continue
            sizes = [1]
            if method in ENSEMBLE_METHODS:  # the sizes that fit, plus all snapshots when fewer than the largest
                sizes = sorted({c for c in ENSEMBLE_SIZES if c <= available} | {min(available, max(ENSEMBLE_SIZES))})
            picks = {count: pick_snapshots(folder, count) for count in sizes}
            needed = sorted({path for members in picks.values() for path in members})
            cache = dict(zip(needed, evaluate_each(needed, device=device)))
            for count, members in picks.items():
                probs = torch.stack([cache[p].probs for p in members]).mean(dim=0)
                labels = cache[members[0]].labels
                if count == 1 and seed == 0:
                    last_eval[method] = cache[members[0]]
                if method in ENSEMBLE_METHODS:
                    metrics = classification_metrics(probs, labels)
                    rows.append({"method": study.methods[method][0], "seed": str(seed), "snapshots": str(count),
                                 **{k: metrics[k] for k in ("top1", "nll", "ece")}})
    return rows, last_eval


def ensemble_summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± std over seeds per method and ensemble size, with the paired top-1 gain over one snapshot."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["snapshots"]), []).append(row)
    single = {(r["method"], r["seed"]): r["top1"] for r in rows if r["snapshots"] == "1"}
    table = []
    for (method, count), runs in groups.items():
        summary = summarize({method: runs}, keys=("top1", "nll", "ece"))[0]
        gains = summarize({method: [{"gain": r["top1"] - single[method, r["seed"]]} for r in runs]}, keys=("gain",))
        table.append({**summary, "snapshots": count, "gain": gains[0]["gain"]})
    return table


def relative(path: Path, start: Path) -> str:
    """A link from a Markdown file in `start` to `path`."""
    return os.path.relpath(path, start)


def make_figures(study: Study, seeds: int, last_eval: dict[str, Any], figures: Path, data: Data) -> list[Path]:
    """Top-1 curves, reliability diagrams (seed 0) and the OLS soft-label matrix; return the PNG paths."""
    slug = study.root.name
    curves = {label: [[r["top1"] for r in read_metrics(run_dir(study, m, s))] for s in range(seeds)]
              for m, (label, _) in study.methods.items()}
    paths = [plot_curves(curves, figures / f"{slug}-top1.png", ylabel="test top-1 (%)",
                         title=f"{data.label}, {study.name}: test top-1 per epoch")]
    for method, evaluation in last_eval.items():
        paths.append(plot_reliability(evaluation.probs, evaluation.labels, figures / f"{slug}-reliability-{method}.png",
                                      title=f"{study.methods[method][0]}, {study.model}, seed 0"))
    for method in (m for m in OLS_VARIANTS if m in study.methods):
        matrices = sorted((run_dir(study, method, 0) / "soft_labels").glob("epoch-*.npy"))
        if matrices:
            paths.append(plot_soft_labels(np.load(matrices[-1]), class_names=data.class_names,
                                          path=figures / f"{slug}-soft-labels-{method}.png",
                                          title=f"{study.methods[method][0]} soft labels, {study.model}, "
                                                f"after {matrices[-1].stem.replace('-', ' ')}"))
    return paths


def analyse(study: Study, args: argparse.Namespace, md_dir: Path, data: Data) -> tuple[dict[str, Any], str]:
    """The JSON payload and Markdown section of one study."""
    rows, finals = results_table(study, args.seeds)
    metric_cols = ["method", "n", *SUMMARY_KEYS]
    text = [f"## {study.name}\n", f"Run folders: `{study.root}`; last epoch, mean ± sample std over seeds "
            "(top-1/top-5/ECE in %, NLL in nats; train_top1 = accuracy on the augmented training batches "
            "during the last epoch, a measure of how well the network fits).\n",
            markdown_table(rows, metric_cols, {"nll": ".4f"})]
    tests: list[dict[str, Any]] = []
    if args.seeds >= 2:
        tests = paired_rows(study, finals)
        text += ["\nPaired tests over seeds (same seed = same initialisation and data order; "
                 "diff = OLS − baseline):\n",
                 markdown_table(tests, ["comparison", "metric", "n", "mean diff", "t-test p", "Wilcoxon p"],
                                {"mean diff": "+.3f", "t-test p": ".3f", "Wilcoxon p": ".3f"})]
    else:
        text.append("\nPaired tests need at least 2 seeds; skipped.\n")
    ensemble_seeds = args.seeds if args.ensemble_seeds is None else min(args.ensemble_seeds, args.seeds)
    ensembles, last_eval = ensemble_rows(study, ensemble_seeds, args.device)
    ensemble_table = ensemble_summary(ensembles)
    if ensembles:
        text += [f"\nSnapshot ensembles (softmax average of snapshots spread uniformly over training, like the "
                 f"paper's Table III), mean ± std over {ensemble_seeds} seed(s); gain = top-1 of the ensemble − "
                 "top-1 of the last snapshot alone, paired by seed:\n",
                 markdown_table(ensemble_table, ["method", "snapshots", "n", "top1", "gain", "nll", "ece"],
                                {"nll": ".4f", "gain": "+.2f"})]
    figures = make_figures(study, args.seeds, last_eval, args.figures, data)
    text += ["\nFigures:\n"] + [f"- ![{p.stem}]({relative(p, md_dir)})" for p in figures]
    payload = {"model": study.model, "root": str(study.root), "summary": rows,
               "per_seed": {m: runs for m, runs in finals.items()}, "paired_tests": tests,
               "ensembles": ensembles, "ensemble_summary": ensemble_table, "figures": [str(p) for p in figures]}
    return payload, "\n".join(text) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Train what is missing, then write the tables and figures."""
    args = parse_args(argv)
    command = command_line(argv, __spec__.name)
    info = machine_info()
    data = Data.of(args.dataset)
    studies = build_studies(args)
    start = time.perf_counter()
    train_all(studies, args)
    train_s = time.perf_counter() - start
    out = Path(args.out)
    sections, payload = [], {"machine": info, "command": command, "args": vars(args) | {"figures": str(
        args.figures)}, "train_seconds_this_invocation": train_s, "studies": {}}
    for study in studies:
        payload["studies"][study.name], section = analyse(study, args, out, data)
        sections.append(section)
    defaults = dataset_defaults(args.dataset)
    subset = args.subset is not None and args.subset < data.train_size
    size = f"first {args.subset:,}" if subset else f"all {data.train_size:,}"
    header = (f"# Accuracy on {data.label}\n\nMachine: {machine_line(info)}\n\nCommand: `{command}`\n\n"
              f"Training on the {size} training images, evaluation on all {data.test_size:,} test images; "
              f"{args.epochs} epochs, {args.seeds} seed(s); batch {args.batch_size or defaults['batch_size']}, "
              f"lr {args.lr or defaults['lr']}, SGD momentum 0.9, cosine schedule, weight decay "
              f"{defaults['weight_decay']} (the main study; the transfer study uses its own settings).\n")
    json_path, md_path = write_results(out, "accuracy", payload, header + "\n" + "\n".join(sections))
    print(f"wrote {json_path} and {md_path} ({time.perf_counter() - start:.0f}s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
