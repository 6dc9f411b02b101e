"""Temperature scaling (Guo et al., 2017): one scalar T > 0 dividing the logits, fitted by minimising the NLL on
held-out samples, then the calibration metrics before and after it.

T is searched as u = log T by golden-section search on a fixed bracket: the mean NLL is convex in 1/T (a
log-sum-exp of linear functions of 1/T), hence unimodal in log T, so the search converges to the minimiser
without gradients, and gives the same T for the same inputs on every run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserInputError
from .calibration import calibration_metrics
from .metrics import SCALED_KEYS

LOG_T_BOUNDS = (-5.0, 5.0)
"""The bracket of log T: T from e^-5 ~ 0.0067 to e^5 ~ 148."""
LOG_T_TOLERANCE = 1e-7
"""The search stops when the bracket of log T is narrower than this (so T is known to a relative 1e-7)."""

_INVERSE_PHI = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class TemperatureFit:
    """The fitted temperature, the mean NLL (nats) it gives and the NLL at T = 1 on the fitting samples, and
    whether it ended at an end of the bracket (then the optimum may lie beyond: separable or degenerate data)."""

    temperature: float
    nll: float
    nll_unscaled: float
    at_bound: bool


def _checked_logits(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """float64 logits (N, K) and int64 labels (N,), after checking shapes, finiteness and label range."""
    if logits.dim() != 2 or logits.size(0) == 0:
        raise UserInputError(f"logits must have shape (samples, classes) with samples > 0, got {tuple(logits.shape)}")
    if labels.shape != (logits.size(0),) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise UserInputError(f"labels must be {logits.size(0)} integer class indices, got {labels.dtype} "
                             f"{tuple(labels.shape)}")
    logits = logits.detach().double()
    labels = labels.to(logits.device).long()
    if not torch.isfinite(logits).all():
        raise UserInputError("logits contain NaN or inf")
    if labels.min() < 0 or labels.max() >= logits.size(1):
        raise UserInputError(f"labels must lie in [0, {logits.size(1) - 1}]")
    return logits, labels


def fit_temperature(logits: Tensor, labels: Tensor, bounds: tuple[float, float] = LOG_T_BOUNDS,
                    tolerance: float = LOG_T_TOLERANCE) -> TemperatureFit:
    """The T minimising the mean NLL of softmax(logits / T) on these (held-out) samples, by golden-section
    search on log T within `bounds` until the bracket is narrower than `tolerance`.

    Logits may be shifted per row (log-probabilities work as well): softmax ignores a constant per row. For an
    ensemble, pass the log of its averaged probabilities. `fit_temperature_streamed` does the same from batches."""
    logits, labels = _checked_logits(logits, labels)

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(logits * math.exp(-log_t), labels))

    return _golden_section(nll, bounds, tolerance)


def fit_temperature_streamed(batches: Callable[[], Iterable[tuple[Tensor, Tensor]]],
                             bounds: tuple[float, float] = LOG_T_BOUNDS, tolerance: float = LOG_T_TOLERANCE,
                             reduce: Callable[[Tensor], Tensor] | None = None) -> TemperatureFit:
    """`fit_temperature` without holding the samples: `batches()` yields (logits (n, K), labels (n,)) and is called
    again for every NLL the search evaluates (about 40 times), so memory is one batch, whatever N x K.

    Each NLL is a sum over batches (float64) divided by the count, the mean `fit_temperature` takes to float
    rounding, so both find the same T. `reduce` sums a float64 vector over processes (under torchrun, each
    process streams its share and all of them get the same NLL, hence the same T); bad input (a non-finite logit,
    a label out of range) is counted, reduced, then raised on every process alike."""
    lo, hi = bounds
    if not lo < hi or tolerance <= 0:
        raise UserInputError(f"bad temperature search: bounds {bounds}, tolerance {tolerance}")

    def summed(per_batch: Callable[[Tensor, Tensor], list[Tensor]], width: int) -> Tensor:
        total = torch.zeros(width, dtype=torch.float64)
        for logits, labels in batches():
            if logits.dim() != 2 or labels.shape != (logits.size(0),):
                raise UserInputError(f"logits (samples, classes) and labels (samples,) expected, got "
                                     f"{tuple(logits.shape)} and {tuple(labels.shape)}")
            if logits.size(0):
                parts = per_batch(logits.detach(), labels.to(logits.device).long())
                total += torch.stack([part.to(torch.float64) for part in parts]).cpu()
        return total if reduce is None else reduce(total).cpu()

    def bad(logits: Tensor, labels: Tensor) -> list[Tensor]:  # one pass first: samples, non-finite rows, bad labels
        outside = (labels < 0) | (labels >= logits.size(1))
        samples = torch.tensor(len(labels), device=logits.device)
        return [samples, (~torch.isfinite(logits).all(dim=1)).sum(), outside.sum()]

    count, non_finite, outside = summed(bad, 3).tolist()
    if non_finite:
        raise UserInputError("logits contain NaN or inf")
    if outside:
        raise UserInputError("labels out of range for the logits' classes")
    if count == 0:
        raise UserInputError("no samples to fit the temperature on")

    def nll(log_t: float) -> float:
        scale = math.exp(-log_t)
        return float(summed(lambda logits, labels: [
            F.cross_entropy(logits.double() * scale, labels, reduction="sum")], 1)[0]) / count

    return _golden_section(nll, bounds, tolerance)


def _golden_section(nll: Callable[[float], float], bounds: tuple[float, float], tolerance: float) -> TemperatureFit:
    """Golden-section search of log T minimising `nll` (unimodal) on `bounds`, to a bracket below `tolerance`."""
    lo, hi = bounds
    if not lo < hi or tolerance <= 0:
        raise UserInputError(f"bad temperature search: bounds {bounds}, tolerance {tolerance}")
    a, b = lo, hi
    c, d = b - _INVERSE_PHI * (b - a), a + _INVERSE_PHI * (b - a)
    fc, fd = nll(c), nll(d)
    while b - a > tolerance:
        if fc <= fd:  # the minimum lies in [a, d]
            b, d, fd = d, c, fc
            c = b - _INVERSE_PHI * (b - a)
            fc = nll(c)
        else:  # in [c, b]
            a, c, fc = c, d, fd
            d = a + _INVERSE_PHI * (b - a)
            fd = nll(d)
    log_t = (a + b) / 2
    at_bound = min(log_t - lo, hi - log_t) < 10 * tolerance
    return TemperatureFit(math.exp(log_t), nll(log_t), nll(0.0), at_bound)


def scaled_log_probs(logits: Tensor, temperature: float) -> Tensor:
    """log softmax(logits / temperature), in the logits' dtype."""
    return F.log_softmax(logits / temperature, dim=1)


def calibration_report(logits: Tensor, labels: Tensor, fit: TemperatureFit | None = None, n_bins: int = 15
                       ) -> dict[str, float]:
    """`calibration_metrics` of softmax(logits) and, with a fit, `temperature` and each of SCALED_KEYS after
    scaling by it as KEY_ts, all on these samples (which should not be those T was fitted on)."""
    report = calibration_metrics(logits, labels, n_bins, from_logits=True)
    if fit is not None:
        scaled = calibration_metrics(scaled_log_probs(logits.double(), fit.temperature), labels, n_bins,
                                     from_logits=True)
        report["temperature"] = fit.temperature
        report.update({f"{key}_ts": scaled[key] for key in SCALED_KEYS})
    return report
