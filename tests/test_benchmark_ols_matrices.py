"""`python -m benchmarks.ols_matrices`: a run's last matrix entry by entry, and the table computed from a CSV alone
(matrices averaged over seeds, worked by hand); bad input is one line and exit 2."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

from olsmooth.studies.results import exact_csv_text

ROOT = Path(__file__).resolve().parents[1]
STUDY = """\
description: two OLS cells beside CE
base: {dataset: digits, epochs: 1}
grid:
  method: [ce, ols, {method: ols, ols_preset: paper-cifar}]
seeds: [0, 1]
"""


def load_script():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("benchmarks.ols_matrices")


@pytest.fixture
def study(tmp_path: Path) -> Path:
    path = tmp_path / "two-ols.yaml"
    path.write_text(STUDY, encoding="utf-8")
    return path


def entries(cell: str, seed: int, matrix: list[list[float]], names=("a", "b")) -> list[dict]:
    return [{"cell": cell, "seed": seed, "row": i, "column": j, "row_class": names[i], "column_class": names[j],
             "mass": value} for i, row in enumerate(matrix) for j, value in enumerate(row)]


def test_table_from_the_csv_alone(tmp_path, study, capsys):
    script = load_script()
    rows = (entries("method=ols,ols_preset=paper-cifar", 0, [[1.0, 0.0], [0.5, 0.5]])
            + entries("method=ols", 0, [[0.8, 0.2], [0.0, 1.0]]) + entries("method=ols", 1, [[0.6, 0.4], [0.2, 0.8]]))
    csv = tmp_path / "soft-labels.csv"
    csv.write_text(exact_csv_text(script.CSV_COLUMNS, rows), encoding="utf-8")
    assert script.main(["--study", str(study), "--from-csv", str(csv), "--pairs", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # ours: mean of the two seeds [[0.7, 0.3], [0.1, 0.9]]; diagonal 0.7 and 0.9; entropies of (0.7, 0.3), (0.1, 0.9)
    entropy = np.mean([-(p * np.log(p) + (1 - p) * np.log(1 - p)) for p in (0.7, 0.9)])
    # paper-cifar (one seed): diagonal 1.0 and 0.5, entropies 0 and log 2; grid order puts it after ours
    assert lines[2:] == [
        f"| ours | 2 | 0.800 (0.700-0.900) | {entropy:.3f} | a → b 0.300, b → a 0.100 |",
        f"| `paper-cifar` | 1 | 0.750 (0.500-1.000) | {np.log(2) / 2:.3f} | b → a 0.500, a → b 0.000 |"]


def test_a_runs_last_matrix_entry_by_entry(tmp_path):
    run = tmp_path / "seed-0"
    (run / "soft_labels").mkdir(parents=True)
    np.save(run / "soft_labels" / "epoch-001.npy", np.full((2, 2), 0.5, dtype=np.float32))
    np.save(run / "soft_labels" / "epoch-002.npy", np.array([[0.75, 0.25], [0.0, 1.0]], dtype=np.float32))
    rows = load_script().last_matrix_rows(run, "method=ols", 0)
    assert [(r["row"], r["column"], r["row_class"], r["column_class"], r["mass"]) for r in rows] == [
        (0, 0, "0", "0", 0.75), (0, 1, "0", "1", 0.25), (1, 0, "1", "0", 0.0), (1, 1, "1", "1", 1.0)]


@pytest.mark.parametrize("case", ["missing", "foreign cell", "neither"])
def test_bad_input_is_one_line(tmp_path, study, capsys, case):
    script = load_script()
    csv = tmp_path / "soft-labels.csv"
    if case == "foreign cell":
        csv.write_text(exact_csv_text(script.CSV_COLUMNS, entries("method=ls", 0, [[1.0, 0.0], [0.0, 1.0]])),
                       encoding="utf-8")
    argv = ["--study", str(study)] + ([] if case == "neither" else ["--from-csv", str(csv)])
    assert script.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("python -m benchmarks.ols_matrices: error:")
