"""Self-knowledge distillation: class-wise (CS-KD, Yun et al., CVPR 2020) and progressive (PS-KD, Kim et al.,
ICCV 2021). CS-KD distils the prediction on another sample of the same class; PS-KD the sample's own prediction
from the previous epoch, kept in a per-sample store.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .adaptive import at_least_float32, class_indices_only
from .common import EpochLoss, TrainingRun, autocast_off, target_cross_entropy
from .per_sample import checked_sample_index, distributed, share_written_rows
from .registry import Option, register_loss

__all__ = ["ClassWiseSelfKD", "ProgressiveSelfKD", "class_pair_kd_loss", "progressive_alpha", "pskd_loss",
           "pskd_targets"]

StoreDtype = Literal["float32", "float16"]


def class_pair_kd_loss(logits: Tensor, target: Tensor, temperature: float = 4.0, weight: float = 1.0) -> Tensor:
    """CS-KD on a batch laid out as [a_1 .. a_n, b_1 .. b_n], b_i a sample of a_i's class (float32 inside):

        CE(z_a, y_a) + weight * T^2 * (1/n) sum_i KL(softmax(z_b_i / T) || softmax(z_a_i / T))

    The partners' logits are detached and take no cross-entropy, as in the authors' code (which forwards them
    under no_grad); the sums run over the n anchors.
    """
    if logits.size(0) % 2:
        raise ValueError(f"cskd needs batches of anchor-partner pairs (an even batch size), got {logits.size(0)}")
    n = logits.size(0) // 2
    with autocast_off(logits.device.type):
        z = at_least_float32(logits)
        anchors, partners = z[:n], z[n:].detach()
        log_p = F.log_softmax(anchors / temperature, dim=1)
        q = torch.softmax(partners / temperature, dim=1)
        kl = (torch.xlogy(q, q) - q * log_p).sum() / n
        return F.cross_entropy(anchors, target[:n]) + weight * temperature ** 2 * kl


@register_loss("cskd", "class-wise self-KD: KL to a same-class sample's prediction, T 4, weight 1 (3 fine-grained)", [
    Option("temperature", help="softens both predictions; the KL is multiplied by T^2", min=0.0, min_exclusive=True),
    Option("weight", help="weight of the KL term (the authors' lambda: 1 on CIFAR, 3 on fine-grained sets)", min=0.0),
])
class ClassWiseSelfKD(EpochLoss):
    """Class-wise self-knowledge distillation (CS-KD): each anchor is pulled towards the softened prediction on
    another sample of its class. Defaults as the authors' code: T = 4, weight (their lambda) 1; they use 3 on the
    fine-grained sets.

    Batches must come as [anchors, partners] with partner i of anchor i's label (`needs_class_pairs`: training
    loops draw them with `olsmooth.data.samplers.ClassPairBatchSampler`).
    """

    needs_class_pairs: bool = True

    def __init__(self, num_classes: int, temperature: float = 4.0, weight: float = 1.0,
                 check_inputs: bool = True) -> None:
        super().__init__(num_classes, check_inputs)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if weight < 0:
            raise ValueError(f"weight must be non-negative, got {weight}")
        self.temperature, self.weight = float(temperature), float(weight)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, temperature={self.temperature}, weight={self.weight}"

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        class_indices_only(target, "cskd", "mixing images breaks the class pairs")
        target, _ = self._prepare(logits, target)
        if self.check_inputs and target.size(0) % 2 == 0:
            n = target.size(0) // 2
            if bool((target[:n] != target[n:]).any()):
                raise ValueError("cskd needs batches [anchors, partners] with partner i of anchor i's class "
                                 "(draw them with ClassPairBatchSampler)")
        return class_pair_kd_loss(logits, target, self.temperature, self.weight)


def progressive_alpha(epoch: int, epochs: int, alpha: float = 0.8) -> float:
    """PS-KD's weight of the past prediction in epoch `epoch` (0-based) of `epochs`: alpha * (epoch + 1) / epochs."""
    return max(0.0, alpha * (epoch + 1) / epochs)


def pskd_targets(target: Tensor, previous: Tensor, alpha_t: float, dtype: torch.dtype = torch.float32) -> Tensor:
    """(1 - alpha_t) onehot(y) + alpha_t * previous as (B, K) `dtype`; `previous` holds probability rows."""
    onehot = F.one_hot(target, previous.size(1)).to(dtype)
    return torch.lerp(onehot, previous.to(dtype), alpha_t)


def pskd_loss(logits: Tensor, target: Tensor, previous: Tensor, alpha_t: float) -> Tensor:
    """Cross-entropy against the PS-KD target (1 - alpha_t) onehot(y) + alpha_t * previous (float32 inside)."""
    with autocast_off(logits.device.type):
        z = at_least_float32(logits)
        return target_cross_entropy(z, pskd_targets(target, previous, alpha_t, z.dtype))[0]


@register_loss("pskd", "progressive self-KD: target (1 - a_t) onehot + a_t p_prev, a_t = 0.8 (epoch + 1) / E", [
    Option("alpha", help="a_t at the last epoch (the authors' alpha_T)", min=0.0, max=1.0),
    Option("store_dtype", help="precision of the N x K store of last predictions (4 or 2 bytes each)"),
])
class ProgressiveSelfKD(EpochLoss):
    """Progressive self-knowledge distillation (PS-KD): the target of sample i in epoch t (0-based, of E) is
    (1 - a_t) onehot(y_i) + a_t p_i, with p_i the sample's softmax when it was last trained on (the previous
    epoch) and a_t = alpha (t + 1) / E; alpha 0.8 as the authors' code. A sample with no stored prediction yet
    (all of them in the first epoch, as in the authors' code) gets the one-hot target.

    Needs the sample index (`needs_index`) and `bind(run)` before the first step, which allocates the N x K
    store (4 bytes per entry, 2 with store_dtype="float16") on the loss's device. Under distributed training each
    process writes the rows of its own samples; `next_epoch()` makes the stores equal on every process.
    """

    needs_index: bool = True

    def __init__(self, num_classes: int, alpha: float = 0.8, store_dtype: StoreDtype = "float32",
                 check_inputs: bool = True, process_group: Any = None) -> None:
        super().__init__(num_classes, check_inputs)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        if store_dtype not in ("float32", "float16"):
            raise ValueError(f"store_dtype must be 'float32' or 'float16', got {store_dtype!r}")
        self.alpha = float(alpha)
        self.store_dtype = store_dtype
        self.process_group = process_group
        self.epochs: int | None = None
        self.epoch = 0
        # Declared state, not buffers: DistributedDataParallel broadcasts buffers from rank 0, which would overwrite
        # the rows the other processes wrote. Saved in the module's extra state (see get_extra_state).
        self.add_state("_predictions", torch.empty(0, num_classes, dtype=getattr(torch, store_dtype)), persistent=False)
        self.add_state("_seen", torch.zeros(0, dtype=torch.bool), persistent=False)  # stored in an earlier epoch
        self.add_state("_written", torch.zeros(0, dtype=torch.bool), persistent=False)  # this epoch, this process

    @property
    def num_samples(self) -> int:
        return self._predictions.size(0)

    @property
    def predictions(self) -> Tensor:
        """The (N, K) store of last predictions (rows never written are zero); the live tensor."""
        return self._predictions

    @property
    def alpha_t(self) -> float:
        """The weight of the past prediction in the current epoch."""
        if self.epochs is None:
            raise ValueError("pskd needs the number of epochs and of training samples: call "
                             "bind(TrainingRun(num_samples, epochs, steps_per_epoch)) before the first step")
        return progressive_alpha(self.epoch, self.epochs, self.alpha)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, alpha={self.alpha}, store_dtype={self.store_dtype!r}, "
                f"num_samples={self.num_samples}, epochs={self.epochs}")

    def bind(self, run: TrainingRun) -> None:
        """Take the schedule's length and allocate the store for `run.num_samples` samples (kept when a store of
        that size is already there, e.g. loaded from a checkpoint)."""
        if int(run.epochs) < 1 or int(run.num_samples) < 1:
            raise ValueError(f"pskd needs at least one epoch and one sample, got {run}")
        self.epochs = int(run.epochs)
        if self.num_samples != run.num_samples:
            self._allocate(int(run.num_samples))

    def _allocate(self, num_samples: int) -> None:
        shape = (num_samples, self.num_classes)
        try:
            self._predictions = torch.zeros(shape, dtype=getattr(torch, self.store_dtype), device=self.state_device)
        except torch.OutOfMemoryError as err:
            gib = num_samples * self.num_classes * self._predictions.element_size() / 2**30
            raise MemoryError(f"pskd needs {gib:.2f} GiB on {self.state_device} for its {num_samples} x "
                              f"{self.num_classes} prediction store (store_dtype='float16' halves it)") from err
        self._seen = torch.zeros(num_samples, dtype=torch.bool, device=self.state_device)
        self._written = torch.zeros_like(self._seen)

    def previous(self, index: Tensor, target: Tensor) -> Tensor:
        """The stored predictions of the samples `index`, float32; one-hot rows for samples with none yet."""
        onehot = F.one_hot(target, self.num_classes).float()
        return torch.where(self._seen[index].unsqueeze(1), self._predictions[index].float(), onehot)

    def forward(self, logits: Tensor, target: Tensor, index: Tensor | None = None) -> Tensor:
        """Loss for a batch; in training mode with gradients enabled the batch's softmax is stored for next epoch."""
        class_indices_only(target, "pskd", "the loss sees the mixed target, not the prediction of each mixed sample")
        target, _ = self._prepare(logits, target)
        alpha_t = self.alpha_t
        index = checked_sample_index(index, target.size(0), self.num_samples, self.check_inputs).to(self.state_device)
        with autocast_off(logits.device.type):
            z = at_least_float32(logits)
            previous = self.previous(index, target.to(self.state_device)).to(logits.device)
            loss, probs, _ = target_cross_entropy(z, pskd_targets(target, previous, alpha_t, z.dtype))
        if self.training and torch.is_grad_enabled():
            self._predictions[index] = probs.to(self.state_device, self._predictions.dtype)
            self._written[index] = True
        return loss

    @torch.no_grad()
    def next_epoch(self) -> None:
        """End an epoch: make the stores equal across processes, mark this epoch's rows as seen, count the epoch."""
        if distributed(self.process_group):
            self._written = share_written_rows(self._predictions, self._written, self.process_group)
        self._seen |= self._written
        self._written.zero_()
        self.epoch += 1

    # -- state: the store travels in state_dict() (live tensors, as parameters do) --------------------------
    def get_extra_state(self) -> dict[str, Any]:
        return {"predictions": self._predictions, "seen": self._seen, "written": self._written, "epoch": self.epoch}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        predictions = state["predictions"]
        if predictions.dim() != 2 or predictions.size(1) != self.num_classes:
            raise ValueError(f"pskd state has shape {tuple(predictions.shape)} but this loss has "
                             f"num_classes={self.num_classes}")
        if self.num_samples and predictions.size(0) != self.num_samples:
            raise ValueError(f"pskd state is for {predictions.size(0)} samples but this loss is bound to "
                             f"{self.num_samples}")
        self._predictions = predictions.to(self.state_device, getattr(torch, self.store_dtype)).clone()
        self._seen, self._written = (state[k].to(self.state_device, torch.bool).clone() for k in ("seen", "written"))
        self.epoch = int(state["epoch"])
