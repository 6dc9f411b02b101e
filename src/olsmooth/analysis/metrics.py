"""The metrics by name: the one place that says what a run's figures are and how they are shown.

A `Metric` is a measured quantity under its key in metrics.jsonl, summary.json, results.csv and eval's JSON, with
the label that axes give it, its unit and the decimals tables print. The keys every evaluation reports
(`EVALUATION_KEYS`), those that tables lead with and paired tests compare (`HEADLINE_KEYS`) and those temperature
scaling changes (`SCALED_KEYS`) are named here once; the trainer's summary, `olsmooth eval`, the reports, the HTML
page and the study tables read them.

A figure's key may wrap a metric's in a split or selection (`val_top1`, `best_nll`, `test_ece_last`, `train_loss`)
or a suffix (`nll_ts`, after temperature scaling; `robust_top1`): `metric_of` finds the metric it measures.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One measured quantity: its key, its label on axes, its unit ('%', 'nats' or '') and the decimals shown."""

    key: str
    label: str
    unit: str = ""
    digits: int = 2

    @property
    def format(self) -> str:
        """The format spec of its values in tables: '.2f', '.4f', ..."""
        return f".{self.digits}f"

    def text(self, value: float) -> str:
        """A value as `olsmooth eval` prints it: its decimals, and the sign of a percentage ('97.50%', '0.0912')."""
        return f"{value:{self.format}}" + ("%" if self.unit == "%" else "")


METRICS: dict[str, Metric] = {metric.key: metric for metric in (
    Metric("top1", "top-1", "%"),
    Metric("top5", "top-5", "%"),
    Metric("nll", "NLL", "nats", 4),
    Metric("ece", "ECE", "%"),
    Metric("adaptive_ece", "adaptive ECE", "%"),
    Metric("classwise_ece", "classwise ECE", "%"),
    Metric("mce", "MCE", "%"),
    Metric("brier", "Brier score", digits=4),
    Metric("temperature", "temperature", digits=3),
    Metric("loss", "loss", digits=4),
)}
"""Every metric by key; accuracies and calibration errors in %, NLL in nats, the Brier score in [0, 2]."""

EVALUATION_KEYS = ("top1", "top5", "nll", "ece")
"""What every evaluation measures (`MetricAccumulator.compute`), in this order: per epoch in metrics.jsonl, as
final_* and test_*_{best,last} in summary.json, per run in results.csv, in `olsmooth report` and `olsmooth eval`."""
HEADLINE_KEYS = ("top1", "nll", "ece")
"""Accuracy and the two calibration figures: what study tables show per cell and paired tests compare by default."""
SCALED_KEYS = ("nll", "ece", "adaptive_ece", "mce", "classwise_ece", "brier")
"""The metrics that temperature scaling changes, reported again after it as KEY_ts; top-1 and top-5 do not move
(T > 0 keeps every ranking)."""
SPLITS = {"val": "validation", "train": "training"}
"""Words of a key that name the split a figure was measured on, and the split's name on axes; others are the test's."""

_KEY_PATTERN = re.compile("|".join(rf"(?:^|_)({re.escape(key)})(?:_|$)"
                                   for key in sorted(METRICS, key=len, reverse=True)))


def metric_of(key: str) -> Metric | None:
    """The metric a figure's key measures: the registered key it holds as whole `_`-separated words (the longest,
    so `classwise_ece_ts` is classwise_ece, not ece), or None (`epoch`, `gain`)."""
    found = _KEY_PATTERN.search(key)
    return None if found is None else METRICS[next(group for group in found.groups() if group)]


def metric_formats(keys: Sequence[str]) -> dict[str, str]:
    """How tables show each key: its metric's decimals (NLL and Brier to four, the temperature to three, the others
    to two); keys of no metric to two."""
    return {key: metric.format if (metric := metric_of(key)) else ".2f" for key in keys}


def units_text(keys: Sequence[str]) -> str:
    """The units of the metrics `keys` measure, as a caption says them: 'top-1 and ECE in %, NLL in nats'."""
    by_unit: dict[str, list[str]] = {}
    for metric in dict.fromkeys(filter(None, map(metric_of, keys))):
        if metric.unit:
            by_unit.setdefault(metric.unit, []).append(metric.label)
    return ", ".join(f"{_listed(labels)} in {unit}" for unit, labels in by_unit.items())


def _listed(words: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def axis_label(key: str) -> str:
    """A figure's axis label: its split, the metric's label and unit, e.g. 'test top-1 (%)', 'training loss'."""
    metric = metric_of(key)
    if metric is None:
        raise KeyError(f"{key!r} names no registered metric")
    split = next((name for word, name in SPLITS.items() if word in key.split("_")), "test")
    return f"{split} {metric.label}" + (f" ({metric.unit})" if metric.unit else "")
