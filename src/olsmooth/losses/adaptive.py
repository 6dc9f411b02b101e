"""Regularisers shaped by the model's own logits: Zipf's label smoothing (Liang et al., ECCV 2022), which gives
the non-target classes mass by the rank of their logits, and max suppression (MaxSup, Zhou et al., 2025), which
penalises the gap between the top logit and the mean logit.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .common import EpochLoss, LossInputError, TrainingRun, autocast_off, cross_entropy_from_log_probs
from .registry import Option, register_loss

__all__ = ["MaxSuppression", "ZipfLabelSmoothing", "logit_ranks", "max_suppression", "maxsup_loss", "zipf_loss"]

Schedule = Literal["epoch", "step"]


def at_least_float32(logits: Tensor) -> Tensor:
    """The logits in float32 for the loss arithmetic, whatever their precision; float64 stays float64 (so
    gradients can be checked numerically)."""
    return logits if logits.dtype == torch.float64 else logits.float()


def class_indices_only(target: Tensor, method: str, why: str) -> None:
    """Refuse dense (mixup/cutmix) targets with a one-line reason, for losses they do not define."""
    if target.dim() == 2:
        raise LossInputError(f"{method} needs class-index targets, not mixup/cutmix probabilities: {why}")


def logit_ranks(logits: Tensor) -> Tensor:
    """Rank of each logit within its row, 1 for the largest, ties sharing the smallest rank (scipy's
    `rankdata(-z, method="min")`): 1 + the number of strictly larger logits in the row. int64, (B, K)."""
    ascending = torch.sort(logits, dim=1).values
    not_larger = torch.searchsorted(ascending, logits.contiguous(), right=True)
    return logits.size(1) - not_larger + 1


def zipf_non_target_distribution(logits: Tensor, target: Tensor, power: float = 1.0) -> Tensor:
    """Zipf's prior over the non-target classes: rank^-power by the rank of each logit among all K (the label's
    included), zero on the label, normalised over the other K - 1 classes. (B, K) in the logits' working
    precision (`at_least_float32`), no gradient."""
    weights = logit_ranks(logits.detach()).to(at_least_float32(logits).dtype).pow_(-power)
    weights.scatter_(1, target.unsqueeze(1), 0.0)
    return weights.div_(weights.sum(dim=1, keepdim=True))


def zipf_loss(logits: Tensor, target: Tensor, weight: float = 0.1, power: float = 1.0,
              correct_only: bool = False) -> Tensor:
    """CE + weight * KL(zipf prior || softmax over the non-target logits), the KL averaged over the batch, or with
    `correct_only` over the samples whose top-1 prediction is their label (0 when there is none). float32 inside."""
    with autocast_off(logits.device.type):
        z = at_least_float32(logits)
        prior = zipf_non_target_distribution(z, target, power)
        non_target = z.scatter(1, target.unsqueeze(1), float("-inf"))
        log_q = z - torch.logsumexp(non_target, dim=1, keepdim=True)  # log-softmax over the K - 1 non-targets
        kl = (torch.xlogy(prior, prior) - prior * log_q).sum(dim=1)
        if correct_only:
            correct = (z.detach().argmax(dim=1) == target).to(z.dtype)
            kl_mean = (kl * correct).sum() / correct.sum().clamp(min=1.0)
        else:
            kl_mean = kl.mean()
        return F.cross_entropy(z, target) + weight * kl_mean


@register_loss("zipf", "Zipf's label smoothing: CE + 0.1 KL(rank^-1 prior || non-target softmax)", [
    Option("weight", help="weight of the KL term (the authors: 0.1 on CIFAR-100 and ImageNet, 1 on TinyImageNet and "
           "iNaturalist)", min=0.0),
    Option("power", help="the prior over non-target classes is rank^-power", min=0.0),
    Option("correct_only", help="average the KL over correctly predicted samples only (the authors' --mask)"),
])
class ZipfLabelSmoothing(EpochLoss):
    """Zipf's label smoothing: cross-entropy plus a KL that pulls the non-target softmax towards a Zipf law over
    the ranks of the model's own logits. Defaults as the authors' code: power 1, the KL on every sample (their
    `--mask` off), weight 0.1 (their CIFAR-100 and ImageNet commands; 1.0 on TinyImageNet and iNaturalist).

    Ranks come from the final logits (the released code's path without `--dense`, which ranks per-location votes
    of a dense classifier map that a loss on logits does not see), computed on the device.
    """

    def __init__(self, num_classes: int, weight: float = 0.1, power: float = 1.0, correct_only: bool = False,
                 check_inputs: bool = True) -> None:
        super().__init__(num_classes, check_inputs)
        if weight < 0:
            raise ValueError(f"weight must be non-negative, got {weight}")
        if power < 0:
            raise ValueError(f"power must be non-negative, got {power}")
        self.weight, self.power, self.correct_only = float(weight), float(power), bool(correct_only)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, weight={self.weight}, power={self.power}, "
                f"correct_only={self.correct_only}")

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        class_indices_only(target, "zipf", "its prior is over the classes other than one label")
        target, _ = self._prepare(logits, target)
        return zipf_loss(logits, target, self.weight, self.power, self.correct_only)


def max_suppression(logits: Tensor) -> Tensor:
    """Per-sample gap between the largest logit and the mean logit, z_max - mean_k z_k (float32, (B,))."""
    z = at_least_float32(logits)
    return z.amax(dim=1) - z.mean(dim=1)


def maxsup_loss(logits: Tensor, target: Tensor, lam: float) -> Tensor:
    """CE (class indices or dense mixup/cutmix targets) + lam * mean over the batch of (z_max - mean z), float32."""
    with autocast_off(logits.device.type):
        z = at_least_float32(logits)
        return cross_entropy_from_log_probs(F.log_softmax(z, dim=1), target) + lam * max_suppression(z).mean()


def linear_ramp(start: float, end: float, position: int, length: int) -> float:
    """start at position 0, end at position length - 1 and after, linear in between (start when length is 1)."""
    return start + (end - start) * min(position, length - 1) / max(1, length - 1)


@register_loss("maxsup", "max suppression: CE + lambda (z_max - mean z), lambda 0.1 to 0.2 over training", [
    Option("lambda_start", help="lambda in the first epoch (or step)", min=0.0),
    Option("lambda_end", help="lambda in the last epoch (or step)", min=0.0),
    Option("schedule", help="lambda rises per epoch (the authors' code) or per training step"),
])
class MaxSuppression(EpochLoss):
    """MaxSup: cross-entropy plus lambda (z_max - mean z) per sample, averaged over the batch, on the logits.

    lambda rises linearly from `lambda_start` 0.1 to `lambda_end` 0.2 over training, per epoch as the authors'
    code (0.1 + 0.1 * epoch / (epochs - 1), epoch 0-based), or per training step with schedule="step". The length
    of training comes from `bind(run)`; epochs are counted by `next_epoch()`, steps by training-mode forward calls
    with gradients on.
    """

    def __init__(self, num_classes: int, lambda_start: float = 0.1, lambda_end: float = 0.2,
                 schedule: Schedule = "epoch", check_inputs: bool = True) -> None:
        super().__init__(num_classes, check_inputs)
        if schedule not in ("epoch", "step"):
            raise ValueError(f"schedule must be 'epoch' or 'step', got {schedule!r}")
        self.lambda_start, self.lambda_end, self.schedule = float(lambda_start), float(lambda_end), schedule
        self.epochs: int | None = None
        self.steps_per_epoch: int | None = None
        self.epoch = 0
        self.step = 0

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, lambda_start={self.lambda_start}, lambda_end={self.lambda_end}, "
                f"schedule={self.schedule!r}, epochs={self.epochs}, steps_per_epoch={self.steps_per_epoch}")

    def bind(self, run: TrainingRun) -> None:
        """Take the length of training from the run."""
        if int(run.epochs) < 1 or int(run.steps_per_epoch) < 1:
            raise ValueError(f"maxsup needs at least one epoch of at least one step, got {run}")
        self.epochs, self.steps_per_epoch = int(run.epochs), int(run.steps_per_epoch)

    @property
    def lam(self) -> float:
        """lambda for the current epoch or step."""
        if self.epochs is None or self.steps_per_epoch is None:
            raise ValueError("maxsup needs the length of training: call bind(TrainingRun(num_samples, epochs, "
                             "steps_per_epoch)) before the first step")
        if self.schedule == "epoch":
            return linear_ramp(self.lambda_start, self.lambda_end, self.epoch, self.epochs)
        return linear_ramp(self.lambda_start, self.lambda_end, self.step, self.epochs * self.steps_per_epoch)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        target, _ = self._prepare(logits, target)
        loss = maxsup_loss(logits, target, self.lam)
        if self.training and torch.is_grad_enabled():
            self.step += 1
        return loss

    def next_epoch(self) -> None:
        self.epoch += 1

    def get_extra_state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "step": self.step}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
