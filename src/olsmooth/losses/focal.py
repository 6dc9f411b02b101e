"""Focal loss (Lin et al., ICCV 2017) as a calibration method (Mukhoti et al., NeurIPS 2020): the cross-entropy of
each sample weighted by (1 - p_y)^gamma, which keeps pushing the confident samples less and so keeps the logits, and
the confidence, from growing without end. FLSD ("sample-dependent") picks gamma per sample from p_y.

As in the authors' code (torrvision/focal_calibration), gamma is chosen from the detached p_y and the gradient flows
through both factors of -(1 - p_y)^gamma log p_y. Their training sums the loss over the batch; here it is the mean,
as in every loss of the toolkit (and in MbLS's reproduction of it): with SGD, the sum is the mean with the learning
rate multiplied by the batch size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .adaptive import at_least_float32
from .common import EpochLoss, autocast_off
from .registry import Option, register_loss

__all__ = ["FLSD_GAMMAS", "FocalLoss", "flsd_gamma", "focal_loss"]

FLSD_GAMMAS = ((0.2, 5.0), (0.5, 3.0))
"""FLSD's gammas by p_y, as the authors' table: 5 below 0.2, 3 from 0.2 to below 0.5; `gamma` from 0.5 on."""


def flsd_gamma(probs: Tensor, gamma: float) -> Tensor:
    """The sample-dependent gamma of each probability: 5 where p < 0.2, 3 where 0.2 <= p < 0.5, `gamma` elsewhere."""
    result = torch.full_like(probs, gamma)
    for bound, value in reversed(FLSD_GAMMAS):
        result = torch.where(probs < bound, value, result)
    return result


def focal_loss(logits: Tensor, target: Tensor, gamma: float = 3.0, sample_dependent: bool = False) -> Tensor:
    """Mean over the batch of -(1 - p_y)^gamma log p_y, p the softmax, in float32 (float64 kept), autocast off.

    With `sample_dependent` each sample's gamma is `flsd_gamma(p_y, gamma)` (no gradient through the choice). A dense
    (B, K) target t weights each class's term, -sum_k t_k (1 - p_k)^gamma_k log p_k: the expected loss of a label
    drawn from t. 1 - p is computed as -expm1(log p), exact when p is close to 1.
    """
    with autocast_off(logits.device.type):
        log_p = F.log_softmax(at_least_float32(logits), dim=1)
        if target.dim() == 1:
            log_p = log_p.gather(1, target.unsqueeze(1)).squeeze(1)
        exponent = flsd_gamma(log_p.detach().exp(), gamma) if sample_dependent else gamma
        # floored at the smallest normal number: where p rounds to 1 the term is 0 and, for gamma < 1, its gradient
        # stays finite (0 * inf would be NaN)
        one_minus_p = (-torch.expm1(log_p)).clamp_min(torch.finfo(log_p.dtype).tiny)
        terms = -one_minus_p.pow(exponent) * log_p
        if target.dim() == 2:
            terms = (target.to(terms.dtype) * terms).sum(dim=1)
        return terms.mean()


@register_loss("focal", "focal loss (1 - p_y)^gamma CE, gamma 3 (FL-3); sample_dependent=true: FLSD-53", [
    Option("gamma", help="the focusing exponent (Mukhoti et al.: 3 fixed, FL-3); with sample_dependent, the gamma of "
           "samples with p_y >= 0.5", min=0.0),
    Option("sample_dependent", help="FLSD: gamma 5 where p_y < 0.2, 3 where 0.2 <= p_y < 0.5, gamma above (with "
           "gamma 3: FLSD-53, the authors' recommended setting)"),
])
class FocalLoss(EpochLoss):
    """Focal loss, fixed gamma (default 3, FL-3) or sample-dependent (FLSD-53 with `sample_dependent=True`).

    With `sample_dependent`, `epoch_metrics()` reports the share of training samples of the last epoch that took
    gamma 5 and gamma 3 from the table (by the argmax of a dense target; summed over processes at `next_epoch()`).
    """

    def __init__(self, num_classes: int, gamma: float = 3.0, sample_dependent: bool = False,
                 check_inputs: bool = True) -> None:
        super().__init__(num_classes, check_inputs)
        options = self.checked_options(gamma=gamma, sample_dependent=sample_dependent)
        self.gamma, self.sample_dependent = options["gamma"], options["sample_dependent"]
        self.add_state("_table_counts", torch.zeros(len(FLSD_GAMMAS) + 1), reduce="sum", persistent=False)
        self._shares: dict[str, float] = {}

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, gamma={self.gamma}, sample_dependent={self.sample_dependent}"

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        target, _ = self._prepare(logits, target)
        loss = focal_loss(logits, target, self.gamma, self.sample_dependent)
        if self.sample_dependent and self.training and torch.is_grad_enabled():
            self._count_table_rows(logits.detach(), target)
        return loss

    @torch.no_grad()
    def _count_table_rows(self, logits: Tensor, target: Tensor) -> None:
        """Add how many samples fell in each row of FLSD's table (p_y < 0.2, < 0.5) and how many in all (no sync)."""
        self.move_state(logits.device)
        labels = target.argmax(dim=1) if target.dim() == 2 else target
        p_y = torch.softmax(logits.float(), dim=1).gather(1, labels.unsqueeze(1)).squeeze(1)
        below = torch.stack([(p_y < bound).sum() for bound, _ in FLSD_GAMMAS])
        self._table_counts[:-1] += below.to(self._table_counts.dtype)
        self._table_counts[-1] += p_y.numel()

    def next_epoch(self) -> None:
        """Close the epoch's FLSD counts: sum them over processes, keep the shares for `epoch_metrics`, reset."""
        if not self.sample_dependent:
            return
        self.reduce_state()
        below = self._table_counts[:-1].tolist()
        total = max(self._table_counts[-1].item(), 1.0)
        self._shares = {"gamma5_share": below[0] / total, "gamma3_share": (below[1] - below[0]) / total}
        self._table_counts.zero_()

    def epoch_metrics(self) -> dict[str, float]:
        return dict(self._shares)
