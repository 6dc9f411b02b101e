"""Fixed soft-target regularisers: label smoothing, and Tf-KD's teacher-free virtual-teacher regulariser."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .common import EpochLoss, cross_entropy_from_log_probs, float32_log_softmax, soft_cross_entropy
from .registry import Option, register_loss

__all__ = ["LabelSmoothingCrossEntropy", "TfKDRegularization", "label_smoothing_cross_entropy", "tfkd_loss",
           "tfkd_teacher"]


def label_smoothing_cross_entropy(logits: Tensor, target: Tensor, eps: float = 0.1) -> Tensor:
    """Cross-entropy against (1 - eps) * target + eps / K: the same convention as torch's `label_smoothing`."""
    num_classes = logits.size(1)
    with torch.autocast(logits.device.type, enabled=False):
        log_probs = float32_log_softmax(logits)
        # (1-eps) CE(target) + eps * mean_k(-log p_k): identical to smoothing the target, without building it.
        return (1.0 - eps) * cross_entropy_from_log_probs(log_probs, target) + \
            eps * soft_cross_entropy(log_probs, torch.full_like(log_probs, 1.0 / num_classes))


@register_loss("ls", "label smoothing (eps/K convention, eps 0.1 by default)", [
    Option("eps", help="smoothing: 1 - eps + eps/K on the label, eps/K elsewhere", min=0.0, max=1.0),
])
class LabelSmoothingCrossEntropy(EpochLoss):
    """Label smoothing: the target puts 1 - eps + eps/K on the label and eps/K on every other class."""

    def __init__(self, num_classes: int, eps: float = 0.1, check_inputs: bool = True) -> None:
        super().__init__(num_classes, check_inputs)
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f"label smoothing eps must lie in [0, 1], got {eps}")
        self.eps = float(eps)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, eps={self.eps}"

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        target, _ = self._prepare(logits, target)
        return label_smoothing_cross_entropy(logits, target, self.eps)


def tfkd_teacher(target: Tensor, num_classes: int, correct_prob: float = 0.99) -> Tensor:
    """Tf-KD's virtual teacher: correct_prob on the label, the rest spread uniformly over the other classes.

    For dense targets t it is the t-weighted mixture of the per-class teachers.
    """
    onehot = target.float() if target.dim() == 2 else F.one_hot(target, num_classes).float()
    other = (1.0 - correct_prob) / (num_classes - 1)
    return onehot * correct_prob + (1.0 - onehot) * other


def tfkd_loss(logits: Tensor, target: Tensor, correct_prob: float = 0.99, alpha: float = 0.95,
              temperature: float = 6.0, multiplier: float = 1.0, kl_reduction: str = "mean") -> Tensor:
    """Tf-KD regulariser (Yuan et al., CVPR 2020): (1 - alpha) CE + alpha * multiplier * KL(teacher_T || p).

    As in the released code the teacher is softened as softmax(teacher / T) while the student is not, and
    `kl_reduction="mean"` averages the KL over all B*K elements (torch's KLDivLoss default there);
    "batchmean" gives the per-sample KL instead.
    """
    num_classes = logits.size(1)
    with torch.autocast(logits.device.type, enabled=False):
        log_probs = float32_log_softmax(logits)
        teacher = torch.softmax(tfkd_teacher(target, num_classes, correct_prob) / temperature, dim=1)
        pointwise = torch.xlogy(teacher, teacher) - teacher * log_probs
        kl = pointwise.sum() / (pointwise.numel() if kl_reduction == "mean" else pointwise.size(0))
        return (1.0 - alpha) * cross_entropy_from_log_probs(log_probs, target) + alpha * multiplier * kl


@register_loss("tfkd", "Tf-KD regulariser: virtual teacher 0.99, alpha 0.95, temperature 6", [
    Option("correct_prob", help="the virtual teacher's probability of the label", min=0.0, max=1.0,
           min_exclusive=True, max_exclusive=True),
    Option("alpha", help="weight of the KL term; 1 - alpha goes to the cross-entropy", min=0.0, max=1.0),
    Option("temperature", help="softens the teacher (the paper: 6 for ResNet-50, 40 for MobileNetV2)", min=0.0,
           min_exclusive=True),
    Option("multiplier", help="extra factor on the KL term", min=0.0),
    Option("kl_reduction", help="mean over all B*K elements (the released code) or per sample",
           choices=("mean", "batchmean")),
])
class TfKDRegularization(EpochLoss):
    """Teacher-free knowledge distillation with a hand-made virtual teacher (the paper's Tf-KD baseline).

    Defaults follow the paper's protocol: correct-class probability 0.99, alpha 0.95, multiplier 1,
    temperature 6 (ResNet-50; use 40 for MobileNetV2).
    """

    def __init__(self, num_classes: int, correct_prob: float = 0.99, alpha: float = 0.95,
                 temperature: float = 6.0, multiplier: float = 1.0, kl_reduction: str = "mean",
                 check_inputs: bool = True) -> None:
        super().__init__(num_classes, check_inputs)
        if not 0.0 < correct_prob < 1.0:
            raise ValueError(f"correct_prob must lie in (0, 1), got {correct_prob}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if kl_reduction not in ("mean", "batchmean"):
            raise ValueError(f"kl_reduction must be 'mean' or 'batchmean', got {kl_reduction!r}")
        self.correct_prob, self.alpha, self.temperature = float(correct_prob), float(alpha), float(temperature)
        self.multiplier, self.kl_reduction = float(multiplier), kl_reduction

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, correct_prob={self.correct_prob}, alpha={self.alpha}, "
                f"temperature={self.temperature}, multiplier={self.multiplier}, kl_reduction={self.kl_reduction!r}")

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        target, _ = self._prepare(logits, target)
        return tfkd_loss(logits, target, self.correct_prob, self.alpha, self.temperature, self.multiplier,
                         self.kl_reduction)
