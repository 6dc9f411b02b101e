"""Logit normalisation, LogitNorm (Wei et al., ICML 2022): the cross-entropy of the logits divided by their L2 norm
and a temperature, z / (tau (||z|| + 1e-7)). The loss no longer rewards a growing logit norm, the cause of the
overconfidence the paper traces; the trained network's own logits are used as they are at test time.

Matched against the authors' `LogitNormLoss` (hongxin001/logitnorm_ood): the norm over the class dimension plus 1e-7,
then the division by tau. Their paper uses tau 0.04 on CIFAR-10 (the method card lists the values per dataset).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .adaptive import at_least_float32
from .common import EpochLoss, autocast_off, cross_entropy_from_log_probs
from .registry import Option, register_loss

__all__ = ["LogitNormLoss", "NORM_EPS", "logitnorm_loss", "normalised_logits"]

NORM_EPS = 1e-7
"""Added to the logit norm before dividing, as in the authors' code (a zero logit vector stays finite)."""


def normalised_logits(logits: Tensor, temperature: float = 0.04) -> Tensor:
    """z / (tau (||z||_2 + 1e-7)), row by row."""
    return logits / ((torch.linalg.vector_norm(logits, dim=1, keepdim=True) + NORM_EPS) * temperature)


def logitnorm_loss(logits: Tensor, target: Tensor, temperature: float = 0.04) -> Tensor:
    """Cross-entropy (class indices or dense mixup/cutmix targets) of the normalised logits, in float32 (float64
    kept), autocast off."""
    with autocast_off(logits.device.type):
        scaled = normalised_logits(at_least_float32(logits), temperature)
        return cross_entropy_from_log_probs(torch.log_softmax(scaled, dim=1), target)


@register_loss("logitnorm", "LogitNorm: CE of z / (tau ||z||), tau 0.04 (the paper's CIFAR-10 value)", [
    Option("temperature", help="tau: the normalised logits are divided by it (the paper: 0.04 on CIFAR-10; see the "
           "method card for other datasets)", min=0.0, min_exclusive=True),
])
class LogitNormLoss(EpochLoss):
    """LogitNorm with tau 0.04 by default."""

    def __init__(self, num_classes: int, temperature: float = 0.04, check_inputs: bool = True) -> None:
        super().__init__(num_classes, check_inputs)
        self.temperature = self.checked_options(temperature=temperature)["temperature"]

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, temperature={self.temperature}"

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        target, _ = self._prepare(logits, target)
        return logitnorm_loss(logits, target, self.temperature)
