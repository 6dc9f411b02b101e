"""Online Label Smoothing (Zhang et al., IEEE TIP 2021): soft labels learned from last epoch's correct predictions.

Row c of the K x K matrix S is the soft label of class c. During an epoch the model is supervised with S while
the statistics for the next S accumulate: for each training sample predicted correctly, its float32 softmax is
added to A[y] and 1 to n[y]. At `next_epoch()` (after summing A and n over all processes) S[c] = A[c] / n[c].
With `top_k=m` S and the statistics are kept sparse, in memory linear in K (see `topk.py`).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from .common import EpochLoss, autocast_off, check_input_values, target_cross_entropy
from .registry import Option, register_loss
from .topk import TopKSoftLabels

__all__ = ["OLS_PRESETS", "OnlineLabelSmoothing", "initial_soft_labels", "ols_loss"]

Init = Literal["zeros", "uniform", "ls"]
EmptyRule = Literal["uniform", "keep"]

PRESETS: dict[str, dict[str, Any]] = {
    # The CIFAR / ImageNet code path of the authors' release: S starts at zero, 0.5 CE + 0.5 OLS.
    "paper-cifar": dict(init="zeros", hard_weight=0.5, soft_weight=0.5, empty_class="uniform"),
    # The fine-grained code path: S starts uniform, 1.0 CE + 1.0 OLS, confident rows (max >= 0.88) frozen.
    "paper-fine-grained": dict(init="uniform", hard_weight=1.0, soft_weight=1.0, empty_class="uniform",
                               freeze_threshold=0.88),
}

OLS_PRESETS = PRESETS

_STATE_KEYS = ("soft_labels", "accumulator", "counts", "epoch", "step", "num_updates")


def ols_targets(target: Tensor, soft_labels: Tensor, hard_weight: float,
                soft_weight: float) -> tuple[Tensor, float]:
    """(T, scale) with scale * T = hard_weight * onehot + soft_weight * S[y], the weight of each log-probability.

    Dense (B, K) targets t give hard_weight * t + soft_weight * sum_j t_j S[j]. Factoring out `scale` saves a
    pass over the (B, K) weights: it is applied to the scalar loss and folded into the backward.
    """
    dense = target.float() if target.dim() == 2 else None
    if not soft_weight:
        onehot = dense if dense is not None else F.one_hot(target, soft_labels.size(0)).float()
        return onehot, hard_weight
    ratio = hard_weight / soft_weight
    if dense is not None:
        return torch.addmm(dense, dense, soft_labels, beta=ratio), soft_weight
    weights = soft_labels.index_select(0, target)
    if hard_weight:
        weights.scatter_(1, target.unsqueeze(1), ratio, reduce="add")
    return weights, soft_weight


def ols_loss_and_probs(logits: Tensor, target: Tensor, soft_labels: Tensor, hard_weight: float = 0.5,
                       soft_weight: float = 0.5, scratch: Tensor | None = None,
                       top1: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
    """The OLS loss in float32 (autocast off), the float32 softmax of the logits and, with `top1`, the first index
    of each row's softmax maximum (else None). `scratch`: an optional (B, K) float32 work buffer, overwritten."""
    with autocast_off(logits.device.type):
        weights, scale = ols_targets(target, soft_labels, hard_weight, soft_weight)
        return target_cross_entropy(logits.float(), weights, scale, scratch, top1)


def ols_loss(logits: Tensor, target: Tensor, soft_labels: Tensor, hard_weight: float = 0.5,
             soft_weight: float = 0.5) -> Tensor:
    """Functional OLS loss for a given soft-label matrix: hard_weight * CE + soft_weight * soft CE (float32).

    Dense (B, K) targets use the target-weighted mixture of rows, sum_j t_j S[j], as the soft target.
    """
    return ols_loss_and_probs(logits, target, soft_labels, hard_weight, soft_weight)[0]


DENSE_MAX_CLASSES = 65_536
"""Largest class count of the dense matrix: S and its accumulator take 2 K^2 float32, 32 GiB here; larger K takes
the top-k matrix (`top_k`)."""


def initial_soft_labels(num_classes: int, init: Init, eps: float = 0.1) -> Tensor:
    """The matrix S before the first update: zeros, uniform 1/K, or label smoothing (1-eps) I + eps/K."""
    if init == "zeros":
        return torch.zeros(num_classes, num_classes)
    if init == "uniform":
        return torch.full((num_classes, num_classes), 1.0 / num_classes)
    if init == "ls":
        return torch.eye(num_classes) * (1.0 - eps) + eps / num_classes
    raise ValueError(f"init must be 'zeros', 'uniform' or 'ls', got {init!r}")


@register_loss("ols", "Online Label Smoothing (preset=paper-cifar | paper-fine-grained, or our defaults)", [
    Option("preset", str, None, f"the paper's code path: sets {', '.join(sorted(set().union(*PRESETS.values())))}; "
           "options given as well override it", choices=tuple(PRESETS), nullable=True),
    Option("hard_weight", help="weight of the cross-entropy with the hard label", min=0.0),
    Option("soft_weight", help="weight of the cross-entropy with the learned soft label", min=0.0),
    Option("init", help="soft labels before the first update"),
    Option("init_eps", help="eps of init=ls", min=0.0, max=1.0),
    Option("empty_class", help="row of a class with no correct prediction in an update"),
    Option("freeze_threshold", help="freeze rows whose maximum already reaches this (off when unset)", min=0.0,
           max=1.0, min_exclusive=True),
    Option("momentum", help="S <- m S + (1 - m) new at each update", min=0.0, max=1.0, max_exclusive=True),
    Option("update_every", help="update S every N training steps instead of every epoch", min=1),
    Option("temperature", help="softmax temperature of the accumulated statistics", min=0.0, min_exclusive=True),
    Option("top_k", help="keep each row of S as its top_k largest entries plus a uniform rest: memory linear in the "
           "class count, for large K (exact when top_k >= K)", min=1, default_text="dense"),
    Option("candidates", help="with top_k: columns per class in the statistics' candidate store", min=1,
           default_text="2 top_k"),
])
class OnlineLabelSmoothing(EpochLoss):
    """Online Label Smoothing loss with exact, vectorised, distributed and resumable statistics.

    Defaults: 0.5 CE + 0.5 soft term as in the paper's CIFAR/ImageNet setting; S starts as label smoothing
    with eps 0.1 (so the first epoch trains at full strength instead of half-strength CE), and a class with
    no correct prediction in an epoch keeps its previous row (early in training on many classes a uniform
    fallback would push those classes towards uniform outputs). `from_preset` gives the paper's code paths.

    A sample counts as correct when the first index of its float32 softmax maximum is its label (`argmax`, as
    `torch.max(p, 1)` in the authors' code): under a tie only the first tied class counts, so an all-zero
    (zero-initialised) head counts only the samples of class 0.

    `top_k=m` (for large K) keeps each row's m largest entries and its remaining mass, spread uniformly over its
    other classes, and the statistics in a store of `candidates` (default 2m) columns per class: memory linear in
    K, exact for m >= K; the method card states the error bound otherwise.
    """

    def __init__(self, num_classes: int, hard_weight: float = 0.5, soft_weight: float = 0.5,
                 init: Init = "ls", init_eps: float = 0.1, empty_class: EmptyRule = "keep",
                 freeze_threshold: float | None = None, momentum: float = 0.0,
                 update_every: int | None = None, temperature: float = 1.0,
                 check_inputs: bool = True, process_group: Any = None, top_k: int | None = None,
                 candidates: int | None = None) -> None:
        super().__init__(num_classes, check_inputs)
        if empty_class not in ("uniform", "keep"):
            raise ValueError(f"empty_class must be 'uniform' or 'keep', got {empty_class!r}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        if update_every is not None and int(update_every) < 1:
            raise ValueError(f"update_every must be a positive number of steps, got {update_every}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if freeze_threshold is not None and not 0.0 < freeze_threshold <= 1.0:
            raise ValueError(f"freeze_threshold must lie in (0, 1], got {freeze_threshold}")
        if candidates is not None and top_k is None:
            raise ValueError("candidates sizes the top-k statistics: it needs top_k")
        if top_k is None and num_classes > DENSE_MAX_CLASSES:
            gib = 2 * num_classes * (num_classes + 1) * 4 / 2**30
            raise ValueError(f"a dense soft-label matrix of {num_classes} classes needs {gib:.1f} GiB (S and its "
                             f"accumulator); above {DENSE_MAX_CLASSES} classes give top_k (e.g. top_k=32), whose "
                             "memory is linear in the classes")
        self.hard_weight = float(hard_weight)
        self.soft_weight = float(soft_weight)
        self.init = init
        self.init_eps = float(init_eps)
        self.empty_class = empty_class
        self.freeze_threshold = freeze_threshold
        self.momentum = float(momentum)
        self.update_every = None if update_every is None else int(update_every)
        self.temperature = float(temperature)
        self.process_group = process_group
        # Declared state, not buffers: DistributedDataParallel broadcasts buffers from rank 0, which would overwrite
        # every rank's statistics; `.half()` would also degrade them. The accumulator's storage has K + 1 rows: A is
        # its first K; the last is where the statistics put the softmax of misclassified samples (no masking pass
        # over the batch), and is never read. Top-k state lives in its own object, since processes merge its
        # candidate stores rather than sum them; `move_state` moves it with the rest.
        self._topk = None if top_k is None else TopKSoftLabels(self.num_classes, top_k, candidates, init,
                                                                 self.init_eps)
        if self._topk is None:
            self.add_state("_S", initial_soft_labels(self.num_classes, init, self.init_eps))
            self.add_state("_A_rows", torch.zeros(self.num_classes + 1, self.num_classes), reduce="sum")
            self.add_state("_n", torch.zeros(self.num_classes), reduce="sum")
        self._scratch = torch.empty(0)  # per-call work buffer, see `_scratch_for`; not state
        self.epoch = 0
        self.step = 0
        self.num_updates = 0

    @classmethod
    def from_preset(cls, name: str, num_classes: int, **overrides: Any) -> OnlineLabelSmoothing:
        """Build the loss with one of the paper's two code paths (`paper-cifar`, `paper-fine-grained`)."""
        if name not in PRESETS:
            raise ValueError(f"unknown OLS preset {name!r}; choose from {', '.join(PRESETS)}")
        return cls(num_classes=num_classes, **{**PRESETS[name], **overrides})

    @classmethod
    def from_options(cls, num_classes: int, preset: str | None = None, **options: Any) -> OnlineLabelSmoothing:
        """The loss from its declared options: a preset (with overrides) or our defaults."""
        return cls.from_preset(preset, num_classes, **options) if preset else cls(num_classes, **options)

    @property
    def soft_labels(self) -> Tensor:
        """The current (K, K) float32 matrix; row c is the soft label of class c.

        The live tensor, overwritten in place by the next update: read it, or `.clone()` it to keep it. With
        `top_k`, a dense copy built on each read (for K up to 4096; else a ValueError: read `sparse_soft_labels`).
        """
        return self._S if self._topk is None else self._topk.dense()

    @property
    def sparse_soft_labels(self) -> tuple[Tensor, Tensor, Tensor] | None:
        """With `top_k`: S as (index (K, m) int32, -1 for an empty slot; value (K, m); residual (K,)), row c being
        value at index plus residual / (K - used slots) elsewhere; None for a dense S."""
        return None if self._topk is None else (self._topk.index, self._topk.value, self._topk.residual)

    @property
    def memory_bytes(self) -> int:
        """Bytes held by S and the statistics (work buffers aside): 8 K^2 dense, linear in K with `top_k`."""
        if self._topk is not None:
            return self._topk.nbytes()
        return sum(t.nbytes for t in (self._S, self._A_rows, self._n))

    @property
    def counts(self) -> Tensor:
        """Correct predictions per class accumulated since the last update (this process only)."""
        return self._n if self._topk is None else self._topk.counts

    def epoch_matrices(self) -> dict[str, Tensor | tuple[Tensor, Tensor, Tensor]]:
        """The soft-label matrix S for the run folder's per-epoch record; with `top_k`, its sparse rows
        (`sparse_soft_labels`)."""
        return {"soft_labels": self._S if self._topk is None else self.sparse_soft_labels}

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, hard_weight={self.hard_weight}, soft_weight={self.soft_weight}, "
                f"init={self.init!r}, empty_class={self.empty_class!r}, freeze_threshold={self.freeze_threshold}, "
                f"momentum={self.momentum}, update_every={self.update_every}, temperature={self.temperature}"
                + ("" if self._topk is None else f", top_k={self._topk.top_k}, candidates={self._topk.candidates}"))

    @property
    def _A(self) -> Tensor:
        """The accumulator A: the first K rows of its storage (a view)."""
        return self._A_rows[:self.num_classes]

    def move_state(self, device: torch.device) -> None:
        """Move the declared state, and the top-k state when there is one, to `device`."""
        super().move_state(device)
        if self._topk is not None:
            self._topk.to(device)

    # -- the loss --------------------------------------------------------------------------------------------
    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss for a batch; in training mode with gradients enabled it also accumulates the statistics."""
        target, dense = self._prepare(logits, target, values=False)
        self.move_state(logits.device)
        scratch = self._scratch_for(logits)
        # with checks on, labels are clamped for the computation and checked (with the loss as the witness of
        # finite logits) in one sync before anything reaches the statistics
        rows = target.clamp(0, self.num_classes - 1) if self.check_inputs and not dense else target
        counting = self.training and torch.is_grad_enabled()
        if self._topk is None:
            loss, probs, top1 = ols_loss_and_probs(logits, rows, self._S, self.hard_weight, self.soft_weight,
                                                   scratch, top1=counting)
        else:
            loss, probs, top1 = self._topk.loss_and_probs(logits, rows, self.hard_weight, self.soft_weight, scratch,
                                                          top1=counting)
        if self.check_inputs:
            check_input_values(loss, target, self.num_classes)
        if counting:
            labels = target.detach().argmax(dim=1) if dense else target.detach()
            self._accumulate(logits.detach(), probs, top1, labels)
            self.step += 1
            if self.update_every is not None and self.step % self.update_every == 0:
                self._update()
        return loss

    def _scratch_for(self, logits: Tensor) -> Tensor:
        """A float32 work buffer shaped like the logits, kept between calls: the transient (B, K) results of a
        call (top-1 keys, shifted logits) go there instead of into fresh allocations."""
        if self._scratch.shape != logits.shape or self._scratch.device != logits.device:
            self._scratch = torch.empty(logits.shape, device=logits.device)
        return self._scratch

    @torch.no_grad()
    def _accumulate(self, logits: Tensor, probs: Tensor, top1: Tensor, labels: Tensor) -> None:
        """Add the float32 softmax of correctly predicted samples to A[label] and 1 to n[label] (no host sync).

        A sample is correct when the first index of its softmax maximum, `top1` (as `probs.argmax(1)`), is its
        label: under a tie only the first tied class counts. `probs` is the loss's softmax; a statistics temperature
        changes what is added, not which samples count.
        """
        if self._topk is not None:
            self._topk.accumulate(logits, probs, top1, labels, self.temperature)
            return
        correct = top1 == labels
        if self.temperature != 1.0:
            probs = torch.softmax(logits.float() / self.temperature, dim=1)
        self._A_rows.index_add_(0, torch.where(correct, labels, self.num_classes), probs)
        self._n.index_add_(0, labels, correct.to(torch.float32))

    def next_epoch(self) -> None:
        """End an epoch: sum the statistics over processes and rebuild S (unless updates are per N steps)."""
        if self.update_every is None:
            self._update()
        self.epoch += 1

    @torch.no_grad()
    def _update(self) -> None:
        """S <- A / n row-wise, with the empty-class, freeze and momentum rules; then reset A and n.

        The new rows are built in place in A's memory and merged into S in place, so the loss never holds more than
        two K x K matrices. Momentum blends a row with its previous value whenever that is a distribution (not the
        all-zero rows of init="zeros"); kept rows (empty or frozen classes) stay exactly as they were.
        """
        if self._topk is not None:
            if dist.is_available() and dist.is_initialized():
                self._topk.reduce(self.process_group)
            self._topk.update(self.empty_class, self.freeze_threshold, self.momentum)
            self.num_updates += 1
            return
        self.reduce_state(self.process_group)
        new, old, n = self._A, self._S, self._n
        seen = (n > 0).unsqueeze(1)
        new.div_(n.clamp(min=1.0).unsqueeze(1))
        if self.empty_class == "uniform":
            new.masked_fill_(~seen, 1.0 / self.num_classes)
        keep = ~seen if self.empty_class == "keep" else torch.zeros_like(seen)
        if self.freeze_threshold is not None:
            keep |= seen & (old.amax(dim=1, keepdim=True) >= self.freeze_threshold)
        if self.momentum:
            # blend only rows that already hold a distribution (not the all-zero rows of init="zeros")
            weight = (old.sum(dim=1, keepdim=True) > 0).to(old.dtype) * self.momentum
            new.mul_(1.0 - weight).addcmul_(old, weight)
        torch.where(keep, old, new, out=old)
        self._A_rows.zero_()
        self._n.zero_()
        self.num_updates += 1

    # -- state -----------------------------------------------------------------------------------------------
    def _state_tensors(self) -> dict[str, Tensor]:
        counters = {k: torch.tensor(c, dtype=torch.int64)
                    for k, c in zip(_STATE_KEYS[3:], (self.epoch, self.step, self.num_updates))}
        if self._topk is not None:
            return {**self._topk.state_tensors(), **counters}
        return {**dict(zip(_STATE_KEYS, (self._S, self._A, self._n))), **counters}

    def _load_state_tensors(self, state: dict[str, Tensor]) -> None:
        if self._topk is not None:
            self._topk.load_state_tensors(state)
            self.epoch, self.step, self.num_updates = (int(state[k]) for k in _STATE_KEYS[3:])
            return
        S = state["soft_labels"]
        K = self.num_classes
        if tuple(S.shape) != (K, K):
            raise ValueError(f"OLS state is for {S.shape[0]} classes but this loss has num_classes={K}")
        device = self.state_device
        self._S, accumulator, self._n = (state[k].to(device=device, dtype=torch.float32).clone()
                                         for k in ("soft_labels", "accumulator", "counts"))
        self._A_rows = torch.cat([accumulator, accumulator.new_zeros(1, K)])
        self.epoch, self.step, self.num_updates = (int(state[k]) for k in _STATE_KEYS[3:])
