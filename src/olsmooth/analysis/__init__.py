"""Analysis of trained models and runs: calibration metrics, soft-label and reliability plots, result reports.

Importing this package does not import matplotlib or scipy; the functions that need them import them.
"""

from ..runs.reader import read_metrics
from .calibration import CalibrationAccumulator, MetricAccumulator, classification_metrics, reliability_bins
from .plots import plot_curves, plot_reliability, plot_reliability_of, plot_soft_labels
from .report import final_metrics, markdown_table, summarize
from .stats import holm, paired_mde, paired_test

__all__ = [
    "CalibrationAccumulator", "MetricAccumulator", "classification_metrics", "reliability_bins", "plot_curves",
    "plot_reliability", "plot_reliability_of", "plot_soft_labels", "final_metrics", "markdown_table", "paired_test",
    "paired_mde", "holm", "read_metrics", "summarize",
]
