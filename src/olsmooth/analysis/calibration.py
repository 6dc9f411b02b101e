"""Classification and calibration metrics (top-1, top-5, NLL, ECE, MCE, classwise ECE, Brier) and reliability
bins, from one set of summable statistics; adaptive ECE, which needs a sort, from collected scores.

Every metric but the adaptive ECE is a ratio of sums over samples (or, for MCE, a maximum over bins of such
ratios), so a `MetricAccumulator` keeps only those sums: exact over batches, cheap in memory, and reduced across
processes with a single all_reduce of `sum_tensor()`. `classification_metrics`, `calibration_metrics` and
`reliability_bins` are one-shot forms of the same accumulator.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserInputError

NLL_EPS = 1e-12
"""Probabilities are clamped at this value before the log, so one confident mistake costs at most ~27.6 nats."""

ROW_SUM_TOLERANCE = 1e-2
"""Rows given as probabilities must sum to 1 within this; it catches logits passed where probabilities belong."""

CLASS_SUM_ELEMENTS = 1 << 20
"""The classwise sums take a batch in row slices of about this many probabilities (at least one row)."""

# Layout of the sum tensor: these scalars, then per-bin sample counts, confidence sums and correct counts, then
# (with num_classes) per class and bin the sums of that class's probability and of its label indicator.
_SCALARS = ("count", "top1", "topk", "nll", "brier", "bad_label", "non_finite", "not_probability")
_NS = len(_SCALARS)
_SLOT = {name: i for i, name in enumerate(_SCALARS)}


class MetricAccumulator:
    """Streaming top-1/top-5/NLL/ECE (and MCE, Brier, classwise ECE) over batches, holding only sums (float64)
    that add across processes.

    The classwise ECE needs K x n_bins more sums, kept only when `num_classes` is given (then the sum tensor has
    the same length on every process, whatever it saw). Inputs are checked without a device sync: bad labels or
    non-finite scores are counted in the sums and reported by `compute()`. Across processes::

        t = acc.sum_tensor().to(device); torch.distributed.all_reduce(t)
        metrics = MetricAccumulator.from_sum_tensor(t).compute()
    """

    def __init__(self, n_bins: int = 15, from_logits: bool = True, num_classes: int | None = None) -> None:
        if int(n_bins) < 1:
            raise UserInputError(f"n_bins must be at least 1, got {n_bins}")
        if num_classes is not None and int(num_classes) < 1:
            raise UserInputError(f"num_classes must be at least 1, got {num_classes}")
        self.n_bins = int(n_bins)
        self.from_logits = from_logits
        self.classwise = num_classes is not None
        self.num_classes: int | None = None if num_classes is None else int(num_classes)
        per_class = 2 * self.n_bins * self.num_classes if self.classwise else 0
        self._sums = torch.zeros(_NS + 3 * self.n_bins + per_class, dtype=torch.float64)

    @classmethod
    def from_sum_tensor(cls, sums: Tensor, from_logits: bool = True,
                        num_classes: int | None = None) -> MetricAccumulator:
        """Rebuild an accumulator from a (possibly all-reduced) `sum_tensor()`; n_bins follows from its length
        and the `num_classes` it was built with (None: no classwise sums)."""
        per_bin = 3 + (2 * num_classes if num_classes else 0)
        n_bins, rest = divmod(sums.numel() - _NS, per_bin)
        if sums.dim() != 1 or rest or n_bins < 1:
            raise UserInputError(f"not a MetricAccumulator sum tensor: shape {tuple(sums.shape)}")
        acc = cls(n_bins, from_logits, num_classes)
        acc._sums = sums.detach().to(torch.float64).clone()
        return acc

    def sum_tensor(self) -> Tensor:
        """All statistics as one float64 vector (on the device of the inputs seen) to all_reduce with SUM."""
        return self._sums.clone()

    @property
    def num_samples(self) -> int:
        """How many samples have been added."""
        return int(self._sums[_SLOT["count"]])

    def reset(self) -> None:
        """Forget all samples (e.g. before the next evaluation pass)."""
        self._sums.zero_()

    @torch.no_grad()
    def update(self, scores: Tensor, labels: Tensor) -> None:
        """Add a batch: scores (N, K) are logits or probabilities (as built), labels (N,) class indices."""
        if scores.dim() != 2:
            raise UserInputError(f"scores must have shape (samples, classes), got {tuple(scores.shape)}")
        if labels.dim() != 1 or labels.size(0) != scores.size(0):
            raise UserInputError(f"labels must have shape ({scores.size(0)},), got {tuple(labels.shape)}")
        if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
            raise UserInputError(f"labels must be an integer tensor of class indices, got {labels.dtype}")
        if self.num_classes is None:
            self.num_classes = scores.size(1)
        elif scores.size(1) != self.num_classes:
            raise UserInputError(f"scores have {scores.size(1)} classes, earlier batches had {self.num_classes}")
        if scores.size(0) == 0:
            return
        if self._sums.device != scores.device:
            self._sums = self._sums.to(scores.device)
        self._sums += self._batch_sums(scores, labels)

    def _batch_sums(self, scores: Tensor, labels: Tensor) -> Tensor:
        """The sum-tensor contribution of one batch (vectorised; invalid rows counted, then neutralised)."""
        num_classes = scores.size(1)
        scores = scores.detach()
        if scores.dtype not in (torch.float32, torch.float64):
            scores = scores.float()
        finite = torch.isfinite(scores).all(dim=1)
        scores = torch.where(finite[:, None], scores, torch.zeros((), dtype=scores.dtype, device=scores.device))
        labels = labels.to(scores.device)
        bad_label = (labels < 0) | (labels >= num_classes)
        safe_labels = labels.clamp(0, num_classes - 1).long()[:, None]
        k = min(5, num_classes)
        if self.from_logits:
            log_probs = F.log_softmax(scores, dim=1)
            probs = log_probs.exp()
            top = log_probs.topk(k, dim=1)
            confidence = top.values[:, 0].exp()
            log_p_true = log_probs.gather(1, safe_labels)[:, 0]
            not_probability = torch.zeros_like(finite)
        else:
            probs = scores
            top = scores.topk(k, dim=1)
            confidence = top.values[:, 0].contiguous()
            log_p_true = scores.gather(1, safe_labels)[:, 0].clamp_min(NLL_EPS).log()
            not_probability = finite & (((scores.sum(dim=1) - 1).abs() > ROW_SUM_TOLERANCE) | (scores < 0).any(dim=1))
        hits = top.indices == safe_labels
        correct = hits[:, 0]
        nll = -log_p_true.clamp_min(math.log(NLL_EPS))
        p_true = probs.gather(1, safe_labels)[:, 0]
        brier = probs.square().sum(dim=1, dtype=torch.float64) - 2 * p_true.double() + 1  # sum_k (p_k - [k = y])^2
        per_sample = torch.stack([torch.ones_like(confidence), confidence, correct.to(confidence.dtype)], dim=1)
        per_bin = torch.zeros(self.n_bins, 3, dtype=torch.float64, device=scores.device)
        per_bin.index_add_(0, self._bins(confidence), per_sample.to(torch.float64))
        scalars = torch.stack([
            per_bin[:, 0].sum(),
            correct.sum(dtype=torch.float64),
            hits.any(dim=1).sum(dtype=torch.float64),
            nll.sum(dtype=torch.float64),
            brier.sum(),
            bad_label.sum(dtype=torch.float64),
            (~finite).sum(dtype=torch.float64),
            not_probability.sum(dtype=torch.float64),
        ])
        parts = [scalars, per_bin.T.reshape(-1)]
        if self.classwise:
            parts.append(self._class_bin_sums(probs, safe_labels[:, 0]))
        return torch.cat(parts)

    def _bins(self, values: Tensor) -> Tensor:
        """Equal-width bin of each value in [0, 1]: bin b holds (b/B, (b+1)/B], bin 0 also holds 0."""
        edges = torch.linspace(0, 1, self.n_bins + 1, dtype=values.dtype, device=values.device)[1:-1]
        return torch.bucketize(values, edges)

    def _class_bin_sums(self, probs: Tensor, labels: Tensor) -> Tensor:
        """Per class c and bin b of p_ic: the sum of p_ic and the count of y_i = c, as (2, K, n_bins) flattened.

        The label counts add one per sample at its label's slot (no N x K one-hot), and the rows go in slices of
        about CLASS_SUM_ELEMENTS entries, so the transient index and float64 copies stay small at any K."""
        num_classes = probs.size(1)
        offsets = self.n_bins * torch.arange(num_classes, device=probs.device)
        sums = torch.zeros(2, num_classes * self.n_bins, dtype=torch.float64, device=probs.device)
        step = max(1, CLASS_SUM_ELEMENTS // num_classes)
        for start in range(0, probs.size(0), step):
            rows, row_labels = probs[start:start + step], labels[start:start + step]
            slots = self._bins(rows) + offsets
            sums[0].index_add_(0, slots.reshape(-1), rows.reshape(-1).to(torch.float64))
            label_slots = slots.gather(1, row_labels[:, None])[:, 0]
            sums[1].index_add_(0, label_slots, torch.ones(len(label_slots), dtype=torch.float64,
                                                          device=probs.device))
        return sums.reshape(-1)

    def _checked_sums(self) -> tuple[dict[str, float], np.ndarray]:
        """Scalar sums and the (3, n_bins) per-bin sums, after raising on any invalid input seen."""
        sums = self._sums.cpu().numpy()
        scalars = {name: float(sums[i]) for i, name in enumerate(_SCALARS)}
        if scalars["count"] == 0:
            raise UserInputError("no samples to compute metrics on")
        if scalars["bad_label"]:
            raise UserInputError(f"{scalars['bad_label']:.0f} label(s) outside [0, num_classes - 1]")
        if scalars["non_finite"]:
            raise UserInputError(f"{scalars['non_finite']:.0f} row(s) of scores contain NaN or inf")
        if scalars["not_probability"]:
            raise UserInputError(f"{scalars['not_probability']:.0f} row(s) are not probabilities (negative, or not "
                                 f"summing to 1 within {ROW_SUM_TOLERANCE}); pass logits with from_logits=True")
        return scalars, sums[_NS:_NS + 3 * self.n_bins].reshape(3, self.n_bins)

    def compute(self) -> dict[str, float]:
        """top1 and top5 accuracy (%), mean NLL (nats) and ECE over the n_bins confidence bins (%), as Python floats."""
        scalars, (_, confidence, correct) = self._checked_sums()
        n = scalars["count"]
        return {
            "top1": 100.0 * scalars["top1"] / n,
            "top5": 100.0 * scalars["topk"] / n,
            "nll": scalars["nll"] / n,
            "ece": 100.0 * float(np.abs(correct - confidence).sum()) / n,
        }

    def calibration(self) -> dict[str, float]:
        """mce (%): the largest |accuracy - confidence| over non-empty bins; brier: the mean over samples of
        sum_k (p_ik - [k = y_i])^2, in [0, 2]; classwise_ece (%), when built with num_classes: the ECE of every
        class's probability against its label indicator, averaged over classes (Kull et al., 2019)."""
        scalars, (count, confidence, correct) = self._checked_sums()
        filled = count > 0
        gaps = np.abs(correct[filled] - confidence[filled]) / count[filled]
        result = {"mce": 100.0 * float(gaps.max()), "brier": scalars["brier"] / scalars["count"]}
        if self.classwise:
            probability, is_label = self._sums[_NS + 3 * self.n_bins:].cpu().numpy().reshape(2, -1)
            result["classwise_ece"] = 100.0 * float(np.abs(is_label - probability).sum()) / (
                scalars["count"] * self.num_classes)
        return result

    def reliability_bins(self) -> dict[str, np.ndarray]:
        """Per confidence bin: edges (n_bins+1), mean confidence and accuracy (fractions; NaN if empty), count."""
        _, (count, confidence, correct) = self._checked_sums()
        with np.errstate(invalid="ignore", divide="ignore"):
            return {
                "edges": np.linspace(0.0, 1.0, self.n_bins + 1),
                "confidence": np.where(count > 0, confidence / count, np.nan),
                "accuracy": np.where(count > 0, correct / count, np.nan),
                "count": count.astype(np.int64),
            }


def _one_shot(scores: Tensor, labels: Tensor, n_bins: int, from_logits: bool = False,
              num_classes: int | None = None) -> MetricAccumulator:
    """An accumulator that has seen exactly these scores (probabilities unless from_logits)."""
    acc = MetricAccumulator(n_bins, from_logits, num_classes)
    acc.update(scores, labels)
    return acc


def classification_metrics(probs: Tensor, labels: Tensor, n_bins: int = 15) -> dict[str, float]:
    """top1, top5 (k = min(5, K)) and ECE in %, NLL in nats, for (N, K) probabilities and (N,) labels."""
    return _one_shot(probs, labels, n_bins).compute()


def reliability_bins(probs: Tensor, labels: Tensor, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Equal-width confidence bins (edges, confidence, accuracy, count): what ECE and the diagram are made of."""
    return _one_shot(probs, labels, n_bins).reliability_bins()


def top_label(scores: Tensor, labels: Tensor, from_logits: bool = False) -> tuple[Tensor, Tensor]:
    """Each sample's top-label confidence and correctness (0 or 1), float64, from float64 probabilities: what the
    adaptive ECE ranks and bins."""
    scores = scores.detach().double()
    probs = torch.softmax(scores, dim=1) if from_logits else scores
    confidence, predicted = probs.max(dim=1)
    return confidence, (predicted == labels.to(predicted.device)).double()


def adaptive_ece_of(confidence: Tensor, correct: Tensor, n_bins: int = 15) -> float:
    """The adaptive ECE (%) of samples given by their top-label confidence and correctness, in dataset order
    (the stable sort keeps that order among equal confidences); see `adaptive_ece`."""
    confidence, correct = confidence.double(), correct.double()
    order = torch.sort(confidence, stable=True).indices
    n = confidence.numel()
    bins = torch.arange(n, device=confidence.device) * n_bins // n
    gap = torch.zeros(n_bins, dtype=torch.float64, device=confidence.device)
    gap.index_add_(0, bins, correct[order] - confidence[order])
    return 100.0 * float(gap.abs().sum()) / n


def adaptive_ece(scores: Tensor, labels: Tensor, n_bins: int = 15, from_logits: bool = False) -> float:
    """Top-label ECE over equal-mass bins (%): samples sorted by confidence (stable sort, so ties keep their
    order), the one at sorted position j of N in bin floor(j * n_bins / N); then sum_b (n_b / N)|acc_b - conf_b|.

    The bins depend on every sample's confidence, so this is not a sum over batches or processes: compute it
    from every sample's confidence and correctness (`CalibrationAccumulator` keeps them, O(N), over batches)."""
    _one_shot(scores, labels, n_bins, from_logits).compute()  # the accumulator's checks of the inputs
    return adaptive_ece_of(*top_label(scores, labels, from_logits), n_bins)


class RowBuffer:
    """Rows of a fixed width appended batch by batch into one buffer that doubles when full. Keeping each batch's
    few per-sample numbers as its own small tensor would scatter them between the large transient (n, K) buffers
    and fragment the heap (the resident set then grows with N by far more than the numbers kept); one buffer
    holds them in a handful of allocations."""

    def __init__(self, width: int, dtype: torch.dtype = torch.float64) -> None:
        self._data = torch.empty(0, width, dtype=dtype)
        self.rows = 0

    def append(self, rows: Tensor) -> None:
        """Add rows (n, width), copied to the CPU in the buffer's dtype."""
        rows = rows.detach().reshape(-1, self._data.size(1))
        end = self.rows + len(rows)
        if end > len(self._data):
            grown = torch.empty(max(end, 2 * len(self._data), 1024), self._data.size(1), dtype=self._data.dtype)
            grown[:self.rows] = self._data[:self.rows]
            self._data = grown
        self._data[self.rows:end] = rows
        self.rows = end

    def tensor(self) -> Tensor:
        """The rows added so far (a view of the buffer)."""
        return self._data[:self.rows]


class CalibrationAccumulator:
    """Every metric of `calibration_metrics` over batches, the same values as on all scores at once: a
    `MetricAccumulator` with the classwise sums (2 x K x n_bins numbers) for all but the adaptive ECE, and for
    that one each sample's position, top-label confidence and correctness (3 numbers a sample). Memory is
    O(K x n_bins + N), never N x K.

    Across processes: all_reduce `sums.sum_tensor()` with SUM, gather every process's `per_sample()` rows (any
    order: they are ranked by position), then `from_parts(...)`. `positions` (default: the order of arrival)
    place each sample in the dataset, so the adaptive ECE ranks ties as on the whole set in dataset order."""

    def __init__(self, num_classes: int | None, n_bins: int = 15, from_logits: bool = True) -> None:
        self.sums = MetricAccumulator(n_bins, from_logits, num_classes)
        self._rows = RowBuffer(3)

    @classmethod
    def from_parts(cls, sums: Tensor, per_sample: Tensor, num_classes: int | None, n_bins: int = 15,
                   from_logits: bool = True) -> CalibrationAccumulator:
        """An accumulator from a (reduced) sum tensor and the (gathered) per-sample rows of every process."""
        acc = cls(num_classes, n_bins, from_logits)
        acc.sums = MetricAccumulator.from_sum_tensor(sums, from_logits, num_classes)
        acc._rows.append(per_sample)
        return acc

    @torch.no_grad()
    def update(self, scores: Tensor, labels: Tensor, positions: Tensor | None = None) -> None:
        """Add a batch: scores (N, K) (logits or probabilities, as built), labels (N,), positions (N,) in the
        dataset (default: after the samples seen so far)."""
        self.sums.update(scores, labels)  # checks the shapes first
        if scores.size(0) == 0:
            return
        confidence, correct = top_label(scores, labels, self.sums.from_logits)
        if positions is None:
            positions = torch.arange(self._rows.rows, self._rows.rows + scores.size(0))
        self._rows.append(torch.stack([positions.to(confidence), confidence, correct], 1).cpu())

    def per_sample(self) -> Tensor:
        """(n, 3) float64 rows: position, top-label confidence, correctness, for the samples added here."""
        return self._rows.tensor().clone()

    def compute(self) -> dict[str, float]:
        """top1, top5, nll, ece, adaptive_ece, mce, classwise_ece (%, nats) and brier, as `calibration_metrics`."""
        metrics = self.sums.compute()  # raises on invalid input seen
        rows = self.per_sample()
        rows = rows[torch.sort(rows[:, 0], stable=True).indices]
        adaptive = adaptive_ece_of(rows[:, 1], rows[:, 2], self.sums.n_bins)
        return {**metrics, "adaptive_ece": adaptive, **self.sums.calibration()}


def calibration_metrics(scores: Tensor, labels: Tensor, n_bins: int = 15, from_logits: bool = False
                        ) -> dict[str, float]:
    """Everything at once: top1, top5, nll, ece, adaptive_ece, mce, classwise_ece (%, nats) and brier."""
    acc = CalibrationAccumulator(scores.size(1) if scores.dim() == 2 else None, n_bins, from_logits)
    acc.update(scores, labels)
    return acc.compute()
