"""Multi-seed results: read run folders' metrics.jsonl, summarise mean ± sample std, paired tests, markdown.

Used by `olsmooth report` and the benchmarks. scipy (a scikit-learn dependency) is imported only by
`paired_test`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

from ..errors import UserInputError

METRICS_FILE = "metrics.jsonl"
DEFAULT_KEYS = ("top1", "top5", "nll", "ece")
MIN_WILCOXON_PAIRS = 5
"""Below five pairs the signed-rank test cannot reach p < 0.05, so it is not reported."""


def read_metrics(run_dir: Union[str, os.PathLike]) -> list[dict[str, Any]]:
    """The per-epoch records of a run folder's metrics.jsonl (or of that file given directly), in order."""
    path = Path(run_dir)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise UserInputError(f"{path}: no such file (is {run_dir} a run folder?)")
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserInputError(f"{path}:{number}: malformed JSON ({error.msg})") from None
            if not isinstance(record, dict) or "epoch" not in record:
                raise UserInputError(f"{path}:{number}: expected a JSON object with an 'epoch' key")
            records.append(record)
    if not records:
        raise UserInputError(f"{path}: no epochs recorded")
    return records


def final_metrics(run_dir: Union[str, os.PathLike], which: str = "last") -> dict[str, Any]:
    """The last epoch's record, or with which="best" the (first) epoch with the highest top1."""
    records = read_metrics(run_dir)
    if which == "last":
        return records[-1]
    if which == "best":
        if any("top1" not in r for r in records):
            raise UserInputError(f"{run_dir}: which='best' needs 'top1' in every epoch record")
        return max(records, key=lambda r: r["top1"])
    raise UserInputError(f"which must be 'last' or 'best', got {which!r}")


def summarize(
    results: Mapping[str, Sequence[Mapping[str, float]]], keys: Sequence[str] = DEFAULT_KEYS
) -> list[dict[str, Any]]:
    """Per method (in order): n and, for each key, {"mean", "std"} over its runs (sample std; 0 for one run)."""
    rows = []
    for method, runs in results.items():
        if not runs:
            raise UserInputError(f"method {method!r} has no runs")
        row: dict[str, Any] = {"method": method, "n": len(runs)}
        for key in keys:
            missing = sum(key not in run for run in runs)
            if missing:
                raise UserInputError(f"method {method!r}: {missing} of {len(runs)} runs lack {key!r}")
            values = np.array([float(run[key]) for run in runs])
            std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            row[key] = {"mean": float(values.mean()), "std": std}
        rows.append(row)
    return rows


def paired_test(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Paired comparison of a and b (same seeds, same order): mean of a − b, t-test, and Wilcoxon when n ≥ 5.

    Constant differences, where scipy returns NaN, get the limits: all zero gives t = 0 and p = 1,
    otherwise t = ±inf and p = 0 for the t-test (Wilcoxon stays defined unless all differences are zero).
    """
    from scipy import stats

    if len(a) != len(b):
        raise UserInputError(f"paired test needs equal-length lists, got {len(a)} and {len(b)}")
    if len(a) < 2:
        raise UserInputError(f"paired test needs at least 2 pairs, got {len(a)}")
    a_values, b_values = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    differences = a_values - b_values
    if np.all(differences == differences[0]):
        t_stat = math.copysign(math.inf, differences[0]) if differences[0] else 0.0
        t_pvalue = 0.0 if differences[0] else 1.0
    else:
        result = stats.ttest_rel(a_values, b_values)
        t_stat, t_pvalue = float(result.statistic), float(result.pvalue)
    wilcoxon_pvalue = None
    if len(differences) >= MIN_WILCOXON_PAIRS:
        wilcoxon_pvalue = float(stats.wilcoxon(differences).pvalue) if differences.any() else 1.0
    return {
        "n": len(differences),
        "mean_diff": float(differences.mean()),
        "t_stat": t_stat,
        "t_pvalue": t_pvalue,
        "wilcoxon_pvalue": wilcoxon_pvalue,
    }


def _cell(value: Any, fmt: str) -> str:
    """'mean ± std' for a summary entry, a formatted number for a float, the text otherwise; '|' escaped."""
    if isinstance(value, Mapping) and {"mean", "std"} <= value.keys():
        text = f"{value['mean']:{fmt}} ± {value['std']:{fmt}}"
    elif isinstance(value, float):
        text = f"{value:{fmt}}"
    else:
        text = str(value)
    return text.replace("|", "\\|")


def markdown_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], fmt: Union[str, Mapping[str, str]] = ".2f"
) -> str:
    """A GitHub-markdown table of rows (e.g. from summarize); fmt is one format spec or one per column."""
    if not columns:
        raise UserInputError("markdown_table needs at least one column")
    formats = {c: fmt.get(c, ".2f") if isinstance(fmt, Mapping) else fmt for c in columns}
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join(":---" if i == 0 else "---:" for i in range(len(columns))) + "|",
    ]
    for number, row in enumerate(rows):
        missing = [c for c in columns if c not in row]
        if missing:
            raise UserInputError(f"row {number} lacks column(s) {missing}")
        lines.append("| " + " | ".join(_cell(row[c], formats[c]) for c in columns) + " |")
    return "\n".join(lines) + "\n"
