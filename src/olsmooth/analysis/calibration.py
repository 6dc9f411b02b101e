"""Classification metrics (top-1, top-5, NLL, ECE) and reliability bins, from one set of summable statistics.

Every metric is a ratio of sums over samples, so a `MetricAccumulator` keeps only those sums: exact over
batches, cheap in memory, and reduced across processes with a single all_reduce of `sum_tensor()`.
`classification_metrics` and `reliability_bins` are the one-shot forms of the same accumulator.
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

# Layout of the sum tensor: these scalars, then per-bin sample counts, confidence sums and correct counts.
_SCALARS = ("count", "top1", "topk", "nll", "bad_label", "non_finite", "not_probability")
_NS = len(_SCALARS)
_SLOT = {name: i for i, name in enumerate(_SCALARS)}


class MetricAccumulator:
    """Streaming top-1/top-5/NLL/ECE over batches, holding only sums (float64) that add across processes.

    Inputs are checked without a device sync: bad labels or non-finite scores are counted in the sums and
    reported by `compute()`. Across processes::

        t = acc.sum_tensor().to(device); torch.distributed.all_reduce(t)
        metrics = MetricAccumulator.from_sum_tensor(t).compute()
    """

    def __init__(self, n_bins: int = 15, from_logits: bool = True) -> None:
        if int(n_bins) < 1:
            raise UserInputError(f"n_bins must be at least 1, got {n_bins}")
        self.n_bins = int(n_bins)
        self.from_logits = from_logits
        self.num_classes: int | None = None
        self._sums = torch.zeros(_NS + 3 * self.n_bins, dtype=torch.float64)

    @classmethod
    def from_sum_tensor(cls, sums: Tensor, from_logits: bool = True) -> MetricAccumulator:
        """Rebuild an accumulator from a (possibly all-reduced) `sum_tensor()`; n_bins follows from its length."""
        n_bins, rest = divmod(sums.numel() - _NS, 3)
        if sums.dim() != 1 or rest or n_bins < 1:
            raise UserInputError(f"not a MetricAccumulator sum tensor: shape {tuple(sums.shape)}")
        acc = cls(n_bins, from_logits)
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
            top = log_probs.topk(k, dim=1)
            confidence = top.values[:, 0].exp()
            log_p_true = log_probs.gather(1, safe_labels)[:, 0]
            not_probability = torch.zeros_like(finite)
        else:
            top = scores.topk(k, dim=1)
            confidence = top.values[:, 0].contiguous()
            log_p_true = scores.gather(1, safe_labels)[:, 0].clamp_min(NLL_EPS).log()
            not_probability = finite & (((scores.sum(dim=1) - 1).abs() > ROW_SUM_TOLERANCE) | (scores < 0).any(dim=1))
        hits = top.indices == safe_labels
        correct = hits[:, 0]
        nll = -log_p_true.clamp_min(math.log(NLL_EPS))
        edges = torch.linspace(0, 1, self.n_bins + 1, dtype=confidence.dtype, device=confidence.device)[1:-1]
        bins = torch.bucketize(confidence, edges)  # bin b holds confidences in (b/B, (b+1)/B]
        per_sample = torch.stack([torch.ones_like(confidence), confidence, correct.to(confidence.dtype)], dim=1)
        per_bin = torch.zeros(self.n_bins, 3, dtype=torch.float64, device=scores.device)
        per_bin.index_add_(0, bins, per_sample.to(torch.float64))
        scalars = torch.stack([
            per_bin[:, 0].sum(),
            correct.sum(dtype=torch.float64),
            hits.any(dim=1).sum(dtype=torch.float64),
            nll.sum(dtype=torch.float64),
            bad_label.sum(dtype=torch.float64),
            (~finite).sum(dtype=torch.float64),
            not_probability.sum(dtype=torch.float64),
        ])
        return torch.cat([scalars, per_bin.T.reshape(-1)])

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
        return scalars, sums[_NS:].reshape(3, self.n_bins)

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


def _one_shot(probs: Tensor, labels: Tensor, n_bins: int) -> MetricAccumulator:
    """An accumulator that has seen exactly these probabilities."""
    acc = MetricAccumulator(n_bins, from_logits=False)
    acc.update(probs, labels)
    return acc


def classification_metrics(probs: Tensor, labels: Tensor, n_bins: int = 15) -> dict[str, float]:
    """top1, top5 (k = min(5, K)) and ECE in %, NLL in nats, for (N, K) probabilities and (N,) labels."""
    return _one_shot(probs, labels, n_bins).compute()


def reliability_bins(probs: Tensor, labels: Tensor, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Equal-width confidence bins (edges, confidence, accuracy, count): what ECE and the diagram are made of."""
    return _one_shot(probs, labels, n_bins).reliability_bins()
