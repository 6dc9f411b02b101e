"""Early-learning regularisation (Liu et al., NeurIPS 2020): a per-sample running average of the model's own
predictions, and a penalty that keeps the predictions close to it while the labels are being memorised.

For a sample i with clipped softmax p_i (float32, clamped to [1e-4, 1 - 1e-4] as in the authors' code), at every
training step that sees it: t_i <- beta t_i + (1 - beta) p_i / sum(p_i) (p detached), then
loss = CE(z, y) + lam * mean_i log(1 - <p_i, t_i>), with the updated t_i and gradients through p_i only.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .common import EpochLoss, LossInputError, TrainingRun, autocast_off
from .correction import float32_or_wider
from .per_sample import checked_sample_index, distributed, share_written_rows
from .registry import Option, register_loss

__all__ = ["ELR", "ELR_PRESETS", "elr_loss"]

PRESETS: dict[str, dict[str, float]] = {
    # the authors' configs: config_cifar10.json and config_cifar100.json
    "cifar10": dict(beta=0.7, lam=3.0),
    "cifar100": dict(beta=0.9, lam=7.0),
}

ELR_PRESETS = PRESETS

CLAMP = 1e-4
"""The authors clamp the softmax to [CLAMP, 1 - CLAMP] in both the target update and the penalty."""

_STATE_KEYS = ("targets", "changed")


def elr_loss(logits: Tensor, target: Tensor, sample_targets: Tensor, lam: float) -> Tensor:
    """CE(z, y) + lam * mean_i log(1 - <clamp(softmax(z_i)), t_i>) in float32 (autocast off), t_i the rows of
    `sample_targets` for the batch (treated as constants)."""
    with autocast_off(logits.device.type):
        logits = float32_or_wider(logits)
        probs = torch.softmax(logits, dim=1).clamp(CLAMP, 1.0 - CLAMP)
        agreement = (sample_targets.detach().to(probs.dtype) * probs).sum(dim=1)
        return F.cross_entropy(logits, target) + lam * torch.log1p(-agreement).mean()


@register_loss("elr", "early-learning regularisation, per-sample target EMA (cifar10 beta/lam 0.7/3, cifar100 0.9/7)", [
    Option("preset", help="the authors' beta and lam for a dataset; beta or lam given as well override it",
           choices=tuple(PRESETS)),
    Option("beta", help="momentum of the per-sample target: t <- beta t + (1 - beta) p", min=0.0, max=1.0,
           max_exclusive=True, default_text="from the preset"),
    Option("lam", help="weight of the regulariser lam * mean log(1 - <p, t>)", min=0.0, default_text="from the preset"),
])
class ELR(EpochLoss):
    """ELR loss with one target row per training sample (an N x K float32 store), updated at every step.

    `needs_index = True`: call it as `loss(logits, labels, index=index)` with each sample's position in the training
    set. The store is allocated by `bind(run)` from `run.num_samples`, or at construction when `num_samples` is
    given. `preset` sets the authors' beta and lam for CIFAR-10 or CIFAR-100; explicit values override it.
    Only class-index targets: the authors' mixup variant (ELR+) mixes the stored targets of the mixed pairs,
    which the dense targets of mixup/cutmix do not identify.

    Under torch.distributed each process updates the rows of its own samples; `next_epoch()` makes every
    process's store equal by all-reducing the rows each changed (sum and count; a row changed by one process
    takes its value, one changed by several, as DistributedSampler's padding repeats, their mean). Since a
    sample is seen once per epoch, this equals one process training on all the data. Memory: the store, one byte
    per sample for the changed mask, and while synchronising four bytes per sample and a 16 MiB chunk. The
    state_dict holds the store and the mask (after `next_epoch()` the same on every process).
    """

    needs_index = True

    def __init__(self, num_classes: int, beta: float | None = None, lam: float | None = None,
                 preset: str = "cifar10", num_samples: int | None = None, check_inputs: bool = True,
                 process_group: Any = None) -> None:
        super().__init__(num_classes, check_inputs)
        if preset not in PRESETS:
            raise ValueError(f"unknown ELR preset {preset!r}; choose from {', '.join(PRESETS)}")
        beta = PRESETS[preset]["beta"] if beta is None else float(beta)
        lam = PRESETS[preset]["lam"] if lam is None else float(lam)
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must lie in [0, 1), got {beta}")
        if lam < 0:
            raise ValueError(f"lam must be non-negative, got {lam}")
        if num_samples is not None and int(num_samples) < 1:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        self.preset, self.beta, self.lam = preset, beta, lam
        self.num_samples = None if num_samples is None else int(num_samples)
        self.process_group = process_group
        # declared state, not buffers: DistributedDataParallel would broadcast buffers from rank 0
        self.add_state("_targets", torch.zeros(0, self.num_classes))
        self.add_state("_changed", torch.zeros(0, dtype=torch.bool))
        if self.num_samples is not None:
            self._allocate(self.num_samples)

    @property
    def targets(self) -> Tensor:
        """The (N, K) float32 store: row i is sample i's running target (zeros until it is first seen)."""
        return self._targets

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, beta={self.beta}, lam={self.lam}, num_samples={self.num_samples}"

    def bind(self, run: TrainingRun) -> None:
        """Allocate the store for `run.num_samples` samples (a ValueError if built for another count)."""
        if self.num_samples is not None and self.num_samples != run.num_samples:
            raise ValueError(f"ELR was built for num_samples={self.num_samples} but the run has "
                             f"{run.num_samples} training samples")
        if self._targets.size(0) != run.num_samples:
            self.num_samples = int(run.num_samples)
            self._allocate(self.num_samples)

    def _allocate(self, num_samples: int) -> None:
        self._targets = torch.zeros(num_samples, self.num_classes, device=self.state_device)
        self._changed = torch.zeros(num_samples, dtype=torch.bool, device=self.state_device)

    # -- the loss ----------------------------------------------------------------------------------------
    def forward(self, logits: Tensor, target: Tensor, index: Tensor | None = None) -> Tensor:
        """Loss for a batch; in training mode with gradients enabled the batch's rows are updated first."""
        if index is None:
            raise ValueError("ELR needs each sample's index in the training set: call loss(logits, target, index=)")
        if self._targets.size(0) == 0:
            raise ValueError("ELR has no per-sample store yet: call bind(TrainingRun(num_samples, ...)) or build "
                             "it with num_samples")
        target, dense = self._prepare(logits, target)
        if dense:
            raise LossInputError("ELR takes class-index targets only, not the dense targets of mixup/cutmix (the "
                             "authors' ELR+ mixes the stored targets of the mixed pairs, which they do not identify)")
        index = checked_sample_index(index, logits.size(0), self._targets.size(0), self.check_inputs)
        self.move_state(logits.device)
        if self.training and torch.is_grad_enabled():
            self._update(logits.detach(), index)
        return elr_loss(logits, target, self._targets.index_select(0, index), self.lam)

    @torch.no_grad()
    def _update(self, logits: Tensor, index: Tensor) -> None:
        """t_i <- beta t_i + (1 - beta) p_i / sum(p_i) for the batch's samples, p the clamped float32 softmax."""
        with autocast_off(logits.device.type):
            probs = torch.softmax(logits.float(), dim=1).clamp(CLAMP, 1.0 - CLAMP)
            new = self._targets.index_select(0, index).mul_(self.beta)
            new.add_(probs / probs.sum(dim=1, keepdim=True), alpha=1.0 - self.beta)
            self._targets.index_copy_(0, index, new)
            self._changed.index_fill_(0, index, True)

    def next_epoch(self) -> None:
        """Make every process's store equal (the rows each changed this epoch) and clear the changed mask."""
        if distributed(self.process_group):
            share_written_rows(self._targets, self._changed, self.process_group)
        self._changed.zero_()

    # -- state -------------------------------------------------------------------------------------------
    def _load_state_tensors(self, state: dict[str, Tensor]) -> None:
        targets, changed = (state[k] for k in _STATE_KEYS)
        if targets.dim() != 2 or targets.size(1) != self.num_classes or tuple(changed.shape) != (targets.size(0),):
            raise ValueError(f"ELR state of shape {tuple(targets.shape)} does not fit a loss with "
                             f"num_classes={self.num_classes}")
        if self.num_samples is not None and targets.size(0) != self.num_samples:
            raise ValueError(f"ELR state is for {targets.size(0)} samples but this loss has "
                             f"num_samples={self.num_samples}")
        super()._load_state_tensors(state)
        self.num_samples = targets.size(0)
