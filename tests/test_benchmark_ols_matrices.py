"""`python -m benchmarks.ols_matrices` on a study folder the test writes: matrices averaged over seeds, worked by
hand; cells without soft labels skipped; a folder without any is one line and exit 2."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("benchmarks.ols_matrices")


def write_run(folder: Path, matrices: dict[int, list[list[float]]]) -> None:
    (folder / "soft_labels").mkdir(parents=True)
    for epoch, matrix in matrices.items():
        np.save(folder / "soft_labels" / f"epoch-{epoch:03d}.npy", np.array(matrix, dtype=np.float32))


def test_last_matrices_averaged_over_seeds(tmp_path, capsys):
    cell = tmp_path / "method=ols"
    write_run(cell / "seed-0", {1: [[0.5, 0.5], [0.5, 0.5]], 2: [[0.8, 0.2], [0.0, 1.0]]})
    write_run(cell / "seed-1", {2: [[0.6, 0.4], [0.2, 0.8]]})
    (tmp_path / "method=ce" / "seed-0").mkdir(parents=True)  # no soft labels: not a row
    assert load_script().main([str(tmp_path), "--pairs", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # mean of the last matrices: [[0.7, 0.3], [0.1, 0.9]]; diagonal 0.7 and 0.9; entropies of (0.7, 0.3), (0.1, 0.9)
    entropy = np.mean([-(p * np.log(p) + (1 - p) * np.log(1 - p)) for p in (0.7, 0.9)])
    assert len(lines) == 3 and lines[2] == (f"| method=ols | 2 | 0.800 (0.700-0.900) | {entropy:.3f} | "
                                            "0 → 1 0.300, 1 → 0 0.100 |")


def test_a_study_without_soft_labels_is_refused(tmp_path, capsys):
    (tmp_path / "method=ce" / "seed-0").mkdir(parents=True)
    assert load_script().main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no cell whose runs saved soft labels" in err
