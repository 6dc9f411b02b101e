"""The metric registry: keys found behind prefixes and suffixes, formats and captions worked by hand, the keys an
evaluation really returns, and no group of metric keys restated anywhere else in the library."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from olsmooth.analysis.calibration import MetricAccumulator
from olsmooth.analysis.metrics import (
    EVALUATION_KEYS,
    HEADLINE_KEYS,
    METRICS,
    SCALED_KEYS,
    axis_label,
    metric_formats,
    metric_of,
    units_text,
)

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "olsmooth"
REGISTRY = PACKAGE / "analysis" / "metrics.py"


@pytest.mark.parametrize(("key", "metric"), [
    ("top1", "top1"), ("val_top1", "top1"), ("best_nll", "nll"), ("test_ece_last", "ece"), ("nll_ts", "nll"),
    ("classwise_ece_ts", "classwise_ece"), ("adaptive_ece", "adaptive_ece"), ("robust_top1", "top1"),
    ("train_loss", "loss"), ("epoch", None), ("gain", None), ("best_epoch", None), ("topk", None),
])
def test_metric_of_finds_the_metric_behind_a_key(key: str, metric: str | None) -> None:
    found = metric_of(key)
    assert (found.key if found else None) == metric


def test_formats_and_labels_are_the_published_ones() -> None:
    assert metric_formats(["top1", "best_top5", "nll", "best_nll", "ece_ts", "brier_ts", "temperature", "gain"]) == {
        "top1": ".2f", "best_top5": ".2f", "nll": ".4f", "best_nll": ".4f", "ece_ts": ".2f", "brier_ts": ".4f",
        "temperature": ".3f", "gain": ".2f"}
    assert [axis_label(k) for k in ("top1", "val_top1", "train_loss", "ece")] == [
        "test top-1 (%)", "validation top-1 (%)", "training loss", "test ECE (%)"]
    # the captions of the study pages and of the HTML report, as published
    assert units_text(HEADLINE_KEYS) == "top-1 and ECE in %, NLL in nats"
    assert units_text(EVALUATION_KEYS) == "top-1, top-5 and ECE in %, NLL in nats"
    assert [METRICS[k].text(v) for k, v in (("top1", 97.5), ("nll", 0.09121), ("brier", 0.5))] == [
        "97.50%", "0.0912", "0.5000"]


def test_evaluation_keys_are_what_an_evaluation_returns() -> None:
    accumulator = MetricAccumulator()
    accumulator.update(torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 3.0]]), torch.tensor([0, 1]))
    assert tuple(accumulator.compute()) == EVALUATION_KEYS
    assert set(HEADLINE_KEYS) <= set(EVALUATION_KEYS) and set(SCALED_KEYS) <= set(METRICS)


def _groups_restated(tree: ast.AST) -> list[tuple[int, tuple[str, ...]]]:
    """(line, group) for each tuple, list or set literal holding a registered group of keys as consecutive items."""
    groups = (EVALUATION_KEYS, HEADLINE_KEYS, SCALED_KEYS)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            items = tuple(e.value if isinstance(e, ast.Constant) else None for e in node.elts)
            for group in groups:
                if any(items[i:i + len(group)] == group for i in range(len(items) - len(group) + 1)):
                    found.append((node.lineno, group))
    return found


def test_the_check_sees_a_restated_group() -> None:
    assert _groups_restated(ast.parse('KEYS = ("epoch", "top1", "nll", "ece")')) == [(1, HEADLINE_KEYS)]
    assert _groups_restated(ast.parse('CURVES = ("top1", "val_top1", "nll", "ece")')) == []


def test_no_group_of_metric_keys_is_restated_in_the_library() -> None:
    restated = [f"{path.relative_to(PACKAGE)}:{line}: {group}" for path in sorted(PACKAGE.rglob("*.py"))
                if path != REGISTRY for line, group in _groups_restated(ast.parse(path.read_text(encoding="utf-8")))]
    assert not restated, "metric keys restated; import the group from olsmooth.analysis.metrics:\n" + "\n".join(
        restated)
