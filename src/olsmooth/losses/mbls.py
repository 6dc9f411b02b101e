"""Margin-based label smoothing, MbLS (Liu et al., CVPR 2022): cross-entropy plus a linear penalty on the logit
distances d_k = max_j z_j - z_k that exceed a margin. Label smoothing and the confidence penalty push every distance
to zero; MbLS only keeps them below the margin, which calibrates without giving up the discriminative logits.

Matched against the authors' `LogitMarginL1` (by-liu/MbLS): margin 10, alpha 0.1, the penalty averaged over all
B x K distances (the maximal logit's own zero distance included), the gradient flowing through the maximum as well.
The authors' optional schedules of alpha are not used in their paper and are not included.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .adaptive import at_least_float32
from .common import EpochLoss, autocast_off, cross_entropy_from_log_probs
from .registry import Option, register_loss

__all__ = ["MarginLabelSmoothing", "logit_distances", "margin_penalty", "mbls_loss"]


def logit_distances(logits: Tensor) -> Tensor:
    """d_k = max_j z_j - z_k for each sample, (B, K), non-negative; the maximum's gradient goes to its first index."""
    return logits.max(dim=1, keepdim=True).values - logits


def margin_penalty(logits: Tensor, margin: float = 10.0) -> Tensor:
    """Mean over the batch and the classes of max(0, d_k - margin)."""
    return F.relu(logit_distances(logits) - margin).mean()


def mbls_loss(logits: Tensor, target: Tensor, margin: float = 10.0, alpha: float = 0.1) -> Tensor:
    """CE (class indices or dense mixup/cutmix targets) + alpha * margin_penalty, in float32 (float64 kept)."""
    with autocast_off(logits.device.type):
        z = at_least_float32(logits)
        return cross_entropy_from_log_probs(F.log_softmax(z, dim=1), target) + alpha * margin_penalty(z, margin)


@register_loss("mbls", "margin-based label smoothing: CE + 0.1 mean max(0, max_j z_j - z_k - 10)", [
    Option("margin", help="logit distances max_j z_j - z_k up to this are free", min=0.0),
    Option("alpha", help="weight of the margin penalty", min=0.0),
])
class MarginLabelSmoothing(EpochLoss):
    """MbLS with the authors' margin 10 and alpha 0.1 (every dataset of their paper)."""

    def __init__(self, num_classes: int, margin: float = 10.0, alpha: float = 0.1, check_inputs: bool = True) -> None:
        super().__init__(num_classes, check_inputs)
        options = self.checked_options(margin=margin, alpha=alpha)
        self.margin, self.alpha = options["margin"], options["alpha"]

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, margin={self.margin}, alpha={self.alpha}"

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        target, _ = self._prepare(logits, target)
        return mbls_loss(logits, target, self.margin, self.alpha)
