"""What the OLS matrix learned in each OLS cell of a finished study: the last epoch's soft labels averaged over seeds.

Collecting reads the last saved matrix (`soft_labels/epoch-NNN.npy`) of every finished run of the study's OLS cells
and writes them, entry by entry with the class names, to a CSV (the per-run data a results page cites); the table
is computed from that CSV alone: per cell, the seeds, the mean diagonal of the seed-averaged matrix (its smallest and
largest class), its mean row entropy in nats, and its largest off-diagonal entries (class -> class: mass).

    python -m benchmarks.ols_matrices --study family-fitted-fashion-mnist --runs runs/family-fitted-fashion-mnist \
        --csv docs/benchmarks/family-fitted-fashion-mnist-soft-labels.csv
    python -m benchmarks.ols_matrices --study family-fitted-fashion-mnist \
        --from-csv docs/benchmarks/family-fitted-fashion-mnist-soft-labels.csv      # the table only
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from olsmooth.analysis.report import markdown_table
from olsmooth.analysis.soft_labels import diagonal_mass, load_matrix, row_entropy, run_class_names
from olsmooth.errors import UserInputError
from olsmooth.fileio import atomic_write_text
from olsmooth.runs.checkpoints import checkpoint_class_names
from olsmooth.runs.reader import soft_label_files
from olsmooth.studies.plan import plan_runs
from olsmooth.studies.results import exact_csv_text, read_exact_csv
from olsmooth.studies.spec import Cell, Study, load_study, resolve_study_path

from .common import exit_status

MODULE = "benchmarks.ols_matrices"
CSV_COLUMNS = ("cell", "seed", "row", "column", "row_class", "column_class", "mass")
MAX_CLASSES = 200
"""Largest class count written entry by entry (K x K rows per run); larger studies publish the matrices'
structure instead (benchmarks/many_classes.py)."""
COLUMNS = ["OLS", "seeds", "mean diagonal (min-max over classes)", "mean row entropy (nats)",
           "largest off-diagonal entries"]


def cell_label(study: Study, cell: Cell) -> str:
    """The cell named by the options it sets besides the method (`paper-cifar`), or "ours" for the defaults."""
    values = [f"`{value}`" for key, value in study.shown_options(cell).items() if key != "method"]
    return ", ".join(values) or "ours"


def last_matrix_rows(run_folder: Path, cell: str, seed: int) -> list[dict[str, Any]]:
    """Every entry of the run's last soft-label matrix, with both classes' names."""
    matrix = load_matrix(list(soft_label_files(run_folder).values())[-1])
    if not isinstance(matrix, np.ndarray) or len(matrix) > MAX_CLASSES:
        raise UserInputError(f"{run_folder}: its soft labels are not a dense matrix of at most {MAX_CLASSES} classes; "
                             "publish their structure with benchmarks.many_classes")
    names = run_class_names(run_folder, len(matrix), checkpoint_class_names(run_folder))
    return [{"cell": cell, "seed": seed, "row": i, "column": j, "row_class": names[i], "column_class": names[j],
             "mass": float(matrix[i, j])} for i in range(len(matrix)) for j in range(len(matrix))]


def collect(study: Study, runs: Path) -> list[dict[str, Any]]:
    """The CSV rows of every finished run of the study's OLS cells (runs without soft labels are skipped)."""
    rows = []
    for run in plan_runs(study, runs):
        if run.status.state == "done" and run.cell.options.get("method") == "ols":
            rows += last_matrix_rows(run.folder, run.cell.name, run.seed)
    if not rows:
        raise UserInputError(f"{runs} holds no finished OLS run of study {study.name}")
    return rows


def read_rows(study: Study, path: Path) -> list[dict[str, Any]]:
    return read_exact_csv(study, path, CSV_COLUMNS, ("seed", "row", "column"), ("mass",))


def cell_row(label: str, rows: Sequence[Mapping[str, Any]], pairs: int) -> dict[str, str]:
    """The table row of one cell: its seeds' matrices averaged, then described."""
    seeds = sorted({row["seed"] for row in rows})
    size = max(row["row"] for row in rows) + 1
    matrices = np.zeros((len(seeds), size, size))
    names = [""] * size
    for row in rows:
        matrices[seeds.index(row["seed"]), row["row"], row["column"]] = row["mass"]
        names[row["row"]] = row["row_class"]
    mean = matrices.mean(axis=0)
    diagonal = diagonal_mass(mean)
    off = mean.copy()
    np.fill_diagonal(off, -np.inf)
    largest = np.argsort(-off, axis=None, kind="stable")[:pairs]
    entries = [f"{names[i]} → {names[j]} {mean[i, j]:.3f}" for i, j in zip(*np.unravel_index(largest, mean.shape))]
    spread = f"{diagonal.mean():.3f} ({diagonal.min():.3f}-{diagonal.max():.3f})"
    return {"OLS": label, "seeds": str(len(seeds)), "mean diagonal (min-max over classes)": spread,
            "mean row entropy (nats)": f"{np.nanmean(row_entropy(mean)):.3f}",
            "largest off-diagonal entries": ", ".join(entries)}


def matrices_table(study: Study, rows: Sequence[Mapping[str, Any]], pairs: int = 4) -> str:
    """The markdown table of every OLS cell that has rows, in the study's grid order."""
    table = [cell_row(cell_label(study, cell), mine, pairs) for cell in study.cells
             if (mine := [row for row in rows if row["cell"] == cell.name])]
    return markdown_table(table, COLUMNS)


def run(args: argparse.Namespace) -> int:
    """Collect (and write) the study's matrices, or read them from a CSV, and print the table."""
    study = load_study(resolve_study_path(args.study))
    if bool(args.runs) == bool(args.from_csv):
        raise UserInputError("give --runs (and --csv), or --from-csv")
    if args.runs:
        rows = collect(study, args.runs)
        if args.csv:
            atomic_write_text(args.csv, exact_csv_text(CSV_COLUMNS, rows))
            rows = read_rows(study, args.csv)
    else:
        rows = read_rows(study, args.from_csv)
    print(matrices_table(study, rows, args.pairs), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--study", required=True, help="the study file (name or path)")
    parser.add_argument("--runs", type=Path, help="the study's output folder: collect its OLS runs' last matrices")
    parser.add_argument("--csv", type=Path, help="with --runs: write the collected entries here")
    parser.add_argument("--from-csv", type=Path, metavar="CSV", help="print the table a CSV of this script gives")
    parser.add_argument("--pairs", type=int, default=4, help="off-diagonal entries shown per cell (default 4)")
    args = parser.parse_args(argv)
    return exit_status(MODULE, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
