"""Pieces every loss shares: input validation, soft-target cross-entropy and a plain cross-entropy loss."""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import check_declared, register_loss

__all__ = ["CrossEntropy", "EpochLoss", "LossInputError", "TrainingRun", "cross_entropy", "validate_inputs"]


class LossInputError(ValueError):
    """Values a loss cannot use that come from the data or the run's settings, not from a bug: labels out of range,
    non-finite logits (a diverging run), targets the method does not define (mixup with a class-index loss).
    Training loops may show these as one-line messages; any other error is a programming error."""


def validate_inputs(logits: Tensor, target: Tensor, num_classes: int) -> bool:
    """Check shapes, label range and finiteness; return True for dense (B, K) targets.

    All value checks are folded into one small tensor read back once, so a GPU step pays one sync.
    """
    dense = check_input_shapes(logits, target, num_classes)
    check_input_values(logits, target, num_classes)
    return dense


def check_input_shapes(logits: Tensor, target: Tensor, num_classes: int) -> bool:
    """The shape and dtype half of `validate_inputs` (no tensor is read); True for dense (B, K) targets."""
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (batch, classes), got {tuple(logits.shape)}")
    if logits.size(1) != num_classes:
        raise ValueError(f"logits have {logits.size(1)} classes but the loss was built for num_classes={num_classes}")
    if target.dim() == 0 or target.size(0) != logits.size(0):
        raise ValueError(f"batch sizes differ: logits {tuple(logits.shape)}, target {tuple(target.shape)}")
    if target.dim() == 1:
        if target.dtype.is_floating_point or target.dtype == torch.bool or target.is_complex():
            raise ValueError(f"class-index targets must be an integer tensor, got {target.dtype}")
    elif target.dim() == 2:
        if target.shape != logits.shape:
            raise ValueError(f"dense targets must match logits {tuple(logits.shape)}, got {tuple(target.shape)}")
        if not target.dtype.is_floating_point:
            raise ValueError(f"dense (batch, classes) targets must be probabilities (float), got {target.dtype}")
    else:
        raise ValueError(f"target must be (batch,) class indices or (batch, classes) probabilities, "
                         f"got shape {tuple(target.shape)}")
    return target.dim() == 2


def check_input_values(logits: Tensor, target: Tensor, num_classes: int) -> None:
    """The value half of `validate_inputs`, in one host sync: label range, dense targets finite and non-negative,
    logits finite. `logits` may also be a witness computed from them, finite exactly when they all are (a loss
    in which every logit takes part), which saves a pass over the (B, K) logits."""
    # extremes of logits and targets, read back in one sync: NaN propagates into them and an inf is one
    logit_min, logit_max, target_min, target_max = torch.stack(
        [*torch.aminmax(logits.detach()), *torch.aminmax(target.detach())]).tolist()
    if target.dim() == 1 and not 0 <= target_min <= target_max < num_classes:
        raise LossInputError(f"labels must lie in [0, {num_classes - 1}], got values from "
                         f"{int(target_min)} to {int(target_max)}")
    if target.dim() == 2 and not (0 <= target_min and math.isfinite(target_max)):
        raise LossInputError("dense targets must be finite and non-negative")
    if not (math.isfinite(logit_min) and math.isfinite(logit_max)):
        raise LossInputError("logits contain NaN or inf (check the learning rate, or the AMP grad scaler)")


def soft_cross_entropy(log_probs: Tensor, target_probs: Tensor) -> Tensor:
    """Mean over the batch of -sum_k t_k log p_k."""
    return -(target_probs * log_probs).sum(dim=1).mean()


def cross_entropy_from_log_probs(log_probs: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy against class indices (B,), or against dense (B, K) mixup/cutmix probabilities."""
    if target.dim() == 2:
        return soft_cross_entropy(log_probs, target.float())
    return F.nll_loss(log_probs, target)


def float32_log_softmax(logits: Tensor) -> Tensor:
    """log-softmax in float32 whatever the input precision, so half-precision logits stay exact and finite."""
    return F.log_softmax(logits.float(), dim=1)


def autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    """A context that switches autocast off for float32 loss arithmetic; a no-op (cheaper) where it is not on."""
    return torch.autocast(device_type, enabled=False) if torch.is_autocast_enabled(device_type) else \
        contextlib.nullcontext()


def cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Functional cross-entropy for class indices or dense targets, computed in float32."""
    with autocast_off(logits.device.type):
        if target.dim() == 2:
            return soft_cross_entropy(float32_log_softmax(logits), target.float())
        return F.cross_entropy(logits.float(), target)  # fused kernel for class indices


def first_max_index(probs: Tensor, top_prob: Tensor, scratch: Tensor | None = None) -> Tensor:
    """The index of the first maximum of each row of float32 probabilities (as float): `probs.argmax(1)` exactly,
    at about a third of its cost on the CPU, from the row maxima `top_prob`.

    Each row's maximum is at least 1/K, so a smaller entry lies at least 2^-(ceil(log2 K) + 25) below it; scaled by
    K times the inverse of that bound, the gap lifts every non-maximal index above K - 1, and the smallest of
    index + scaled gap is the first maximal index. `scratch`: an optional (B, K) float32 work buffer, overwritten.
    """
    num_classes = probs.size(1)
    gap_scale = float(num_classes * 2 ** (math.ceil(math.log2(num_classes)) + 2)) / torch.finfo(torch.float32).eps
    gap = torch.sub(top_prob.unsqueeze(1), probs, out=scratch)
    return torch.add(_class_indices(num_classes, probs.device), gap, alpha=gap_scale, out=gap).amin(dim=1)


@functools.lru_cache(maxsize=8)
def _class_indices(num_classes: int, device: torch.device) -> Tensor:
    """0, 1, ..., K-1 as float32 on `device`, built once per class count and device (read-only by convention)."""
    return torch.arange(num_classes, device=device, dtype=torch.float32)


class _TargetCrossEntropy(torch.autograd.Function):
    """scale * -(1/B) sum_ik T_ik log softmax(z)_ik with its gradient scale * ((sum_k T_ik) p_i - T_i) / B.

    Forward: one softmax, and the loss from logits shifted by the logit at the top-probability class j,
    s = z - z_j, as -(sum_ik T_ik s_ik + <rowsum T, log max p>) / B (log p_j = max p). Shifting first keeps the
    value exact when all logits share a large offset, and the sum is taken pairwise (torch.sum), so it stays exact
    for large B x K; j is the first maximum of the softmax when `top1` is asked for (then also returned, for the
    OLS statistics), else that of the logits. Backward: two passes. With `create_graph=True` the backward is built
    from differentiable ops, so double backward (an input-gradient penalty) is exact. `scratch`, when given, is a
    (B, K) float32 buffer the transient results go to instead of new tensors.
    """

    @staticmethod
    def forward(ctx: Any, logits: Tensor, targets: Tensor, scale: float, scratch: Tensor | None,
                top1: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        probs = torch.softmax(logits, dim=1)
        top_prob = probs.amax(dim=1)
        if top1:
            first = first_max_index(probs, top_prob, scratch)
            # clamped: a non-finite row (caught by the caller's checks) must not index out of range
            reference = logits.gather(1, first.long().clamp_(0, logits.size(1) - 1).unsqueeze(1))
        else:
            first, reference = None, logits.amax(dim=1, keepdim=True)
        shifted = torch.sub(logits, reference, out=scratch)
        row_sums = targets.sum(dim=1)
        loss = (shifted.mul_(targets).sum() + torch.dot(row_sums, top_prob.log())) * (-scale / logits.size(0))
        ctx.save_for_backward(logits, probs, targets, row_sums)
        ctx.scale = scale
        ctx.mark_non_differentiable(probs, *([] if first is None else [first]))
        ctx.set_materialize_grads(False)  # no (B, K) zero gradient is built for the softmax output
        return loss, probs, first

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor, *_unused: Tensor) -> tuple[Tensor | None, Tensor | None, None, None,
                                                                           None]:
        if grad_loss is None:  # only the non-differentiable outputs were used
            return None, None, None, None, None
        logits, probs, targets, row_sums = ctx.saved_tensors
        coef = grad_loss * (-ctx.scale / logits.size(0))
        if torch.is_grad_enabled():  # create_graph: recompute what depends on the inputs, differentiably
            probs, row_sums = torch.softmax(logits, dim=1), targets.sum(dim=1)
        grad_logits = grad_targets = None
        if ctx.needs_input_grad[0]:
            grad_logits = torch.addcmul(targets, probs, row_sums.unsqueeze(1), value=-1.0).mul_(coef)  # T - r p
        if ctx.needs_input_grad[1]:
            grad_targets = torch.log_softmax(logits, dim=1) * coef  # not in place: its backward reads it
        return grad_logits, grad_targets, None, None, None


def target_cross_entropy(logits: Tensor, targets: Tensor, scale: float = 1.0, scratch: Tensor | None = None,
                         top1: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
    """scale x cross-entropy of float32 logits against a (B, K) weight matrix (any row sums); also returns the
    softmax (detached) and, with `top1`, the first index of each row's softmax maximum (as float; else None), for
    callers that reuse them. `scratch`: an optional (B, K) float32 work buffer (its content is overwritten), which
    saves allocating one per call."""
    return _TargetCrossEntropy.apply(logits, targets, scale, scratch, top1)


@dataclass(frozen=True)
class TrainingRun:
    """What a loss may need to know of the run it trains in: per-sample state is sized by `num_samples`,
    schedules over training (PS-KD's alpha, MaxSup's lambda) by `epochs` and `steps_per_epoch`."""

    num_samples: int
    epochs: int
    steps_per_epoch: int


@dataclass(frozen=True)
class _StateSpec:
    persistent: bool
    reduce: str | None


class EpochLoss(nn.Module):
    """Base of the toolkit's losses: fixed class count, input checks, declared state, and the hooks a loop calls.

    What a loss asks of the loop, each by a flag: `needs_index` (each sample's position in the training set, passed as
    `index=`), `needs_class_pairs` (batches [a_1..a_n, b_1..b_n] with b_i a same-label partner of a_i) and
    `needs_transition` (a noise transition matrix, given once with `set_transition`). The loop calls `bind(run)`
    once before the first step and `next_epoch()` after every epoch. What a loss hands back:
    `epoch_metrics()` (figures for the epoch's metrics row) and `epoch_matrices()` (matrices the run folder keeps
    per epoch), read after `next_epoch()`. State kept outside parameters and buffers is declared with `add_state`.
    """

    needs_index: bool = False
    needs_class_pairs: bool = False
    needs_transition: bool = False

    def __init__(self, num_classes: int, check_inputs: bool = True) -> None:
        super().__init__()
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.num_classes = int(num_classes)
        self.check_inputs = check_inputs
        self._states: dict[str, _StateSpec] = {}
        self._state_device = torch.device("cpu")

    @classmethod
    def from_options(cls, num_classes: int, **options: Any) -> EpochLoss:
        """The loss from its declared options (checked by the registry); a loss with presets overrides this."""
        return cls(num_classes, **options)

    def checked_options(self, **values: Any) -> dict[str, Any]:
        """Constructor arguments checked against the options this class declared when it registered, so a loss
        states each rule once (`olsmooth.losses.registry.check_declared`)."""
        return check_declared(type(self), values)

    def _prepare(self, logits: Tensor, target: Tensor, values: bool = True) -> tuple[Tensor, bool]:
        """Validate (unless disabled); return the target (class indices as int64) and whether it is dense.

        `values=False` checks shapes only: the caller then runs `check_input_values` itself."""
        if not self.check_inputs:
            dense = target.dim() == 2
        elif values:
            dense = validate_inputs(logits, target, self.num_classes)
        else:
            dense = check_input_shapes(logits, target, self.num_classes)
        if not dense and target.dtype != torch.int64:
            target = target.long()
        return target, dense

    # -- state kept out of parameters and buffers --------------------------------------------------------------
    def add_state(self, name: str, value: Tensor | None, reduce: str | None = None, persistent: bool = True) -> None:
        """Declare the attribute `name` as state: a tensor (or None until set) kept out of parameters and buffers,
        since DistributedDataParallel broadcasts buffers from rank 0 and `.half()` casts them. It follows the
        module's device moves (and `move_state`) in its own dtype; when `persistent`, state_dict() saves it under
        `name` without leading underscores; with reduce="sum", `reduce_state()` sums it over processes."""
        if reduce not in (None, "sum"):
            raise ValueError(f"reduce must be None or 'sum', got {reduce!r}")
        self._states[name] = _StateSpec(persistent, reduce)
        setattr(self, name, None if value is None else value.to(self._state_device))

    @property
    def state_device(self) -> torch.device:
        """The device the declared state lives on."""
        return self._state_device

    def _apply(self, fn: Any, recurse: bool = True) -> EpochLoss:  # type: ignore[override]
        super()._apply(fn, recurse)
        self.move_state(fn(torch.empty(0, device=self._state_device)).device)
        return self

    def move_state(self, device: torch.device) -> None:
        """Move the declared state to `device`, each tensor in its own dtype (losses call it with the logits' device,
        so state follows the data even when the module was not moved)."""
        if device == self._state_device:
            return
        tensors = {name: getattr(self, name) for name in self._states if getattr(self, name) is not None}
        try:
            moved = {name: tensor.to(device) for name, tensor in tensors.items()}
        except torch.OutOfMemoryError as err:
            gib = sum(t.numel() * t.element_size() for t in tensors.values()) / 2**30
            raise MemoryError(f"{type(self).__name__} needs {gib:.2f} GiB on {device} for its state "
                              f"({', '.join(tensors)}), which does not fit") from err
        for name, tensor in moved.items():
            setattr(self, name, tensor)
        self._state_device = device

    def reduce_state(self, process_group: Any = None) -> None:
        """Sum the state declared with reduce="sum" over the processes of torch.distributed, in place (nothing to do
        in one process)."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        for name, spec in self._states.items():
            if spec.reduce == "sum":
                dist.all_reduce(getattr(self, name), group=process_group)

    def _state_tensors(self) -> dict[str, Tensor]:
        """What state_dict() saves besides parameters and buffers: the persistent declared state by its key (a loss
        that saves another form, or more, overrides this and `_load_state_tensors`)."""
        return {name.lstrip("_"): getattr(self, name) for name, spec in self._states.items()
                if spec.persistent and getattr(self, name) is not None}

    def _load_state_tensors(self, state: dict[str, Tensor]) -> None:
        """Restore what `_state_tensors` saved (every key present), each on the state's device in its declared dtype;
        a loss checks the shapes first and raises ValueError for state that does not fit."""
        for name in self._states:
            key, current = name.lstrip("_"), getattr(self, name)
            if key in state:
                dtype = state[key].dtype if current is None else current.dtype
                setattr(self, name, state[key].to(self._state_device, dtype).clone())

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        for key, value in self._state_tensors().items():
            destination[prefix + key] = value if keep_vars else value.detach().clone()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, local_metadata: dict, strict: bool,
                              missing_keys: list, unexpected_keys: list, error_msgs: list) -> None:
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        keys = [prefix + k for k in self._state_tensors()]
        unexpected_keys[:] = [k for k in unexpected_keys if k not in keys]
        absent = [k for k in keys if k not in state_dict]
        if absent:
            missing_keys.extend(absent)
        elif keys:
            self._load_state_tensors({k[len(prefix):]: state_dict[k] for k in keys})

    # -- the loop's hooks --------------------------------------------------------------------------------------
    def bind(self, run: TrainingRun) -> None:
        """Called by training loops before the first step with the run's size and schedule; ignored here."""

    def next_epoch(self) -> None:
        """Called by training loops once per epoch; stateless losses ignore it."""

    def epoch_metrics(self) -> dict[str, float]:
        """Figures of the epoch just ended for the loop's metrics row (named without the loss's name); none here."""
        return {}

    def epoch_matrices(self) -> dict[str, Tensor | tuple[Tensor, Tensor, Tensor]]:
        """Matrices the run folder keeps per epoch, by name (OLS: `soft_labels`, its K x K matrix, or with top_k its
        sparse rows (index, value, residual)); none here."""
        return {}


@register_loss("ce", "cross-entropy with hard labels")
class CrossEntropy(EpochLoss):
    """Plain cross-entropy (hard labels), also accepting dense mixup/cutmix targets."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        target, _ = self._prepare(logits, target)
        return cross_entropy(logits, target)
