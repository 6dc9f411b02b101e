"""Cross-entropy with a batch-level regulariser: joint optimisation's prior and entropy terms, and pairwise
confusion. Both regularisers see the batch of one process (under DDP each rank regularises its own batch)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .common import EpochLoss, autocast_off
from .noisy import FunctionalLoss, float_cross_entropy, float_log_softmax, log_prob_cross_entropy
from .registry import Option, register_loss

__all__ = ["JointOptimization", "PairwiseConfusion", "jo_loss", "pairwise_confusion", "pairwise_confusion_loss"]


def jo_loss(logits: Tensor, target: Tensor, alpha: float = 1.2, beta: float = 0.8,
            prior: Tensor | None = None) -> Tensor:
    """Joint optimisation's loss (Tanaka et al., CVPR 2018): CE + alpha KL(prior || mean_i p_i) + beta mean_i H(p_i).

    The prior term keeps the batch's mean prediction near the class prior (uniform when None), so the entropy
    term, which makes each prediction confident, cannot collapse all samples onto one class.
    """
    with autocast_off(logits.device.type):
        log_p = float_log_softmax(logits)
        prior = torch.full_like(log_p[0], 1.0 / log_p.size(1)) if prior is None else prior.to(log_p)
        log_mean_p = torch.logsumexp(log_p, dim=0) - math.log(log_p.size(0))
        prior_term = (torch.xlogy(prior, prior) - prior * log_mean_p).sum()
        entropy = -(log_p.exp() * log_p).sum(dim=1).mean()
        return log_prob_cross_entropy(log_p, target) + alpha * prior_term + beta * entropy


def pairwise_confusion(probs: Tensor) -> Tensor:
    """Dubey et al.'s Euclidean confusion: sum_i ||p_i - p_{m+i}||_2 / B, pairing the batch's halves (m = B // 2).

    With an odd batch the last sample has no partner; the sum is still divided by B, as the authors' code does.
    """
    half = probs.size(0) // 2
    return torch.linalg.vector_norm(probs[:half] - probs[half:2 * half], dim=1).sum() / probs.size(0)


def pairwise_confusion_loss(logits: Tensor, target: Tensor, lam: float = 10.0) -> Tensor:
    """Pairwise confusion (Dubey et al., ECCV 2018): CE + lam * pairwise_confusion(softmax)."""
    with autocast_off(logits.device.type):
        log_p = float_log_softmax(logits)
        return log_prob_cross_entropy(log_p, target) + lam * pairwise_confusion(log_p.exp())


def _non_negative(name: str, value: float) -> float:
    if value < 0:
        raise ValueError(f"{name} must be non-negative, got {value}")
    return float(value)


@register_loss("jo", "joint optimisation's loss: CE + 1.2 KL(uniform || batch mean p) + 0.8 entropy", [
    Option("alpha", help="weight of the prior term KL(prior || mean prediction of the batch)", min=0.0),
    Option("beta", help="weight of the mean entropy of the predictions", min=0.0),
])
class JointOptimization(FunctionalLoss):
    """Joint optimisation's regularised loss (the network step; the label-update step is not part of a loss)."""

    fields = ("alpha", "beta")
    function = staticmethod(jo_loss)

    def __init__(self, num_classes: int, alpha: float = 1.2, beta: float = 0.8, prior: Tensor | None = None,
                 check_inputs: bool = True) -> None:
        super().__init__(num_classes, check_inputs)
        self.alpha, self.beta = _non_negative("alpha", alpha), _non_negative("beta", beta)
        if prior is None:
            prior = torch.full((num_classes,), 1.0 / num_classes)
        prior = torch.as_tensor(prior, dtype=torch.float32)
        if prior.shape != (num_classes,) or bool((prior < 0).any()) or abs(float(prior.sum()) - 1.0) > 1e-5:
            raise ValueError(f"prior must be {num_classes} non-negative probabilities summing to 1")
        self.register_buffer("prior", prior, persistent=False)

    def loss_kwargs(self) -> dict[str, Any]:
        return {**super().loss_kwargs(), "prior": self.prior}


@register_loss("pc", "pairwise confusion: CE + 10 x the distance of paired softmax outputs, from start_epoch on", [
    Option("lam", help="weight of the pairwise confusion term", min=0.0),
    Option("start_epoch", help="epochs of plain cross-entropy before the term is switched on", min=0),
])
class PairwiseConfusion(EpochLoss):
    """Cross-entropy plus lam times the pairwise confusion of the batch's halves, from epoch `start_epoch` on.

    Epochs are counted by `next_epoch()` (0 before the first call); the count is saved in the state dict, so a
    resumed run switches the term on at the same epoch.
    """

    def __init__(self, num_classes: int, lam: float = 10.0, start_epoch: int = 0, check_inputs: bool = True) -> None:
        super().__init__(num_classes, check_inputs)
        self.lam = _non_negative("lam", lam)
        if int(start_epoch) != start_epoch or start_epoch < 0:
            raise ValueError(f"start_epoch must be a non-negative integer, got {start_epoch}")
        self.start_epoch = int(start_epoch)
        self.epoch = 0

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, lam={self.lam}, start_epoch={self.start_epoch}"

    @property
    def active(self) -> bool:
        """Whether the confusion term is added in the current epoch."""
        return self.epoch >= self.start_epoch

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        target, _ = self._prepare(logits, target)
        if not self.active:
            return float_cross_entropy(logits, target)
        return pairwise_confusion_loss(logits, target, self.lam)

    def next_epoch(self) -> None:
        self.epoch += 1

    def get_extra_state(self) -> dict[str, int]:
        return {"epoch": self.epoch}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
