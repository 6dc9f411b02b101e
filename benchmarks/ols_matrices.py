"""What the OLS matrix learned in each OLS cell of a finished study: the last epoch's soft labels averaged over seeds.

For each cell folder of STUDY_DIR whose runs saved soft labels (`soft_labels/epoch-NNN.npy`), averages the last
saved matrix of every seed and prints one markdown row: seeds, the mean diagonal (its smallest and largest class),
the mean row entropy in nats, and the largest off-diagonal entries (class -> class: mass).

    python -m benchmarks.ols_matrices STUDY_DIR [--pairs N]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from olsmooth.analysis.report import markdown_table
from olsmooth.analysis.soft_labels import (
    dataset_class_names,
    diagonal_mass,
    has_soft_labels,
    load_matrix,
    resolve_class_names,
    row_entropy,
    soft_label_files,
)
from olsmooth.engine.checkpoint import checkpoint_class_names
from olsmooth.errors import UserInputError

from .common import exit_status

MODULE = "benchmarks.ols_matrices"
COLUMNS = ["cell", "seeds", "mean diagonal (min-max)", "mean entropy (nats)", "largest off-diagonal entries"]


def cell_row(cell: Path, pairs: int) -> dict[str, Any] | None:
    """The row of one cell folder (its seed-N runs with soft labels), or None when no run saved any."""
    runs = sorted(run for run in cell.glob("seed-*") if has_soft_labels(run))
    if not runs:
        return None
    mean = np.mean([load_matrix(list(soft_label_files(run).values())[-1]) for run in runs], axis=0)
    names = checkpoint_class_names(runs[0])
    names = resolve_class_names(mean.shape[0], names if names is not None else dataset_class_names(runs[0]))
    diagonal = diagonal_mass(mean)
    off = mean.copy()
    np.fill_diagonal(off, -np.inf)
    largest = np.argsort(-off, axis=None, kind="stable")[:pairs]
    entries = [f"{names[i]} → {names[j]} {mean[i, j]:.3f}" for i, j in zip(*np.unravel_index(largest, mean.shape))]
    return {"cell": cell.name, "seeds": str(len(runs)),
            "mean diagonal (min-max)": f"{diagonal.mean():.3f} ({diagonal.min():.3f}-{diagonal.max():.3f})",
            "mean entropy (nats)": f"{np.nanmean(row_entropy(mean)):.3f}", "largest off-diagonal entries":
            ", ".join(entries)}


def matrices_table(study_dir: Path, pairs: int = 4) -> str:
    """The markdown table of every OLS cell of `study_dir`."""
    if not study_dir.is_dir():
        raise UserInputError(f"{study_dir}: no such study folder")
    rows = [row for cell in sorted(p for p in study_dir.iterdir() if p.is_dir())
            if (row := cell_row(cell, pairs)) is not None]
    if not rows:
        raise UserInputError(f"{study_dir} has no cell whose runs saved soft labels (OLS runs do)")
    return markdown_table(rows, COLUMNS)


def run(study_dir: Path, pairs: int) -> int:
    """Print the table of the study's OLS cells."""
    print(matrices_table(study_dir, pairs), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.strip().splitlines()[0])
    parser.add_argument("study_dir", type=Path, help="a study's output folder (its cells hold seed-N runs)")
    parser.add_argument("--pairs", type=int, default=4, help="off-diagonal entries shown per cell (default 4)")
    args = parser.parse_args(argv)
    return exit_status(MODULE, lambda: run(args.study_dir, args.pairs))


if __name__ == "__main__":
    sys.exit(main())
