"""`python -m benchmarks.many_classes`: the matrix figures and nearest characters worked by hand, and the published
page regenerated from its committed CSVs."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks"


def load_script():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("benchmarks.many_classes")


def test_matrix_row_by_hand():
    many = load_script()
    matrix = np.array([[0.8, 0.2, 0.0], [0.1, 0.6, 0.3], [0.0, 0.0, 1.0]])
    row = many.matrix_row(matrix)
    assert row["diagonal_mean"] == pytest.approx(0.8)
    assert (row["diagonal_min"], row["diagonal_max"]) == (0.6, 1.0)
    entropy = [-(0.8 * np.log(0.8) + 0.2 * np.log(0.2)), -(0.1 * np.log(0.1) + 0.6 * np.log(0.6) + 0.3 * np.log(0.3)),
               0.0]
    assert row["entropy_mean"] == pytest.approx(np.mean(entropy))
    assert row["largest_off_diagonal_mean"] == pytest.approx((0.2 + 0.3 + 0.0) / 3)
    assert matrix[0, 0] == 0.8  # the matrix is not modified


def test_nearest_rows_rank_a_row_without_its_own_class():
    many = load_script()
    k = many.SAMPLED_CLASSES + 3
    names = [chr(ord("a") + i) for i in range(k)]
    # row c: itself 0.5 (largest), then classes c+1, c+2, ... with falling mass
    matrix = np.zeros((k, k))
    for c in range(k):
        matrix[c, c] = 0.5
        for step in range(1, k):
            matrix[c, (c + step) % k] = 0.1 / step
    rows = many.nearest_rows("cell", matrix, names)
    sampled = list(dict.fromkeys(row["class"] for row in rows))
    assert len(sampled) == many.SAMPLED_CLASSES == len(set(sampled))
    for row in rows:
        c = names.index(row["class"])
        assert row["neighbour"] == names[(c + row["rank"]) % k]
        assert row["mass"] == pytest.approx(0.1 / row["rank"])
    assert [row["rank"] for row in rows[: many.NEIGHBOURS]] == list(range(1, many.NEIGHBOURS + 1))


@pytest.mark.parametrize("name", ["many-classes-glyphs-1000", "many-classes-glyphs-1000-kai"])
def test_published_page_regenerates_from_its_csvs(name):
    many = load_script()
    from olsmooth.studies.spec import load_study, resolve_study_path

    study = load_study(resolve_study_path(name))
    names = many.file_names(study)
    expected = many.page_text(study, many.read_tables(study, DOCS))
    assert (DOCS / names["page"]).read_text(encoding="utf-8") == expected


def test_missing_csvs_are_one_line_and_exit_2(tmp_path, capsys):
    many = load_script()
    assert many.main(["--from-csv", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such file" in err[0]
    assert many.main([]) == 2
