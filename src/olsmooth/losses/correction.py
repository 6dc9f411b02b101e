"""Loss correction for label noise (Patrini et al., CVPR 2017): forward and backward correction with a transition
matrix T, its anchor-point estimator, and a reader for matrix files.

T is K x K with rows indexed by the clean class: T[i, j] = P(noisy label j | clean class i), each row summing to 1.
Conventions follow the authors' Keras code: the softmax is clipped to [1e-7, 1 - 1e-7] (Keras' epsilon) before
either correction; forward correction takes the cross-entropy of p T (T multiplies the row vector p on the
right); backward correction weights the per-class losses -log p by the row of T^-1 of the noisy label.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import UserInputError
from ..fileio import io_error, read_array
from ..noise_transition import dense_from_record
from .common import EpochLoss, autocast_off
from .registry import Option, register_loss

__all__ = ["BackwardCorrection", "ForwardCorrection", "backward_corrected_loss", "estimate_transition",
           "forward_corrected_loss", "read_transition"]

CLIP = 1e-7
"""Keras' epsilon: the authors clip the softmax to [CLIP, 1 - CLIP] before correcting."""

ROW_SUM_TOLERANCE = 1e-4
MAX_CONDITION = 1.0 / torch.finfo(torch.float32).eps
"""Backward correction refuses a T whose condition number exceeds this: its float32 inverse would hold no digit."""

SOURCES = ("known", "estimate")
"""Where a loss's matrix comes from besides a file: the realised noise of the run, or the anchor-point estimator."""
TRANSITION_FILE = r".+\.(npy|json)"
"""A `transition` that is not one of SOURCES is the path of a file of this form (`read_transition`)."""


def check_transition(matrix: Any, num_classes: int) -> Tensor:
    """`matrix` as a float32 K x K tensor after checking it is a transition matrix (finite, non-negative, rows
    summing to 1 within 1e-4); a ValueError saying what is wrong otherwise."""
    T = torch.as_tensor(matrix).detach().to("cpu", torch.float64)
    K = int(num_classes)
    if tuple(T.shape) != (K, K):
        raise ValueError(f"the transition matrix must be {K} x {K} (one row per class), got shape {tuple(T.shape)}")
    if not torch.isfinite(T).all():
        raise ValueError("the transition matrix contains NaN or inf")
    if (T < 0).any():
        raise ValueError(f"the transition matrix has a negative entry ({T.min().item():g})")
    worst = (T.sum(dim=1) - 1.0).abs().max().item()
    if worst > ROW_SUM_TOLERANCE:
        row = int((T.sum(dim=1) - 1.0).abs().argmax())
        raise ValueError(f"row {row} of the transition matrix sums to {T[row].sum().item():.6g}, not 1 "
                         f"(rows are clean classes: T[i, j] = P(noisy j | clean i))")
    return T.float()


def inverse_transition(T: Tensor) -> Tensor:
    """T^-1 in float32, computed in float64; a ValueError when T is singular or too ill-conditioned for float32."""
    T64 = T.to(torch.float64)
    condition = torch.linalg.cond(T64).item()
    if not math.isfinite(condition) or condition > MAX_CONDITION:
        raise ValueError(f"backward correction needs an invertible transition matrix; this one is singular or too "
                         f"ill-conditioned (condition number {condition:.3g} > {MAX_CONDITION:.3g})")
    return torch.linalg.inv(T64).float()


def read_transition(path: str | Path, num_classes: int) -> Tensor:
    """A K x K transition matrix from a .npy file, or a JSON file holding a list of rows or a noise.json record
    ({"transition": rows, ...} or, above 200 classes, {"transition_sparse": pairs, ...}, built dense up to
    DENSE_MAX_CLASSES); a one-line UserInputError naming the file when it is missing or not a valid one."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            matrix: Any = read_array(path)
        elif path.suffix == ".json":
            try:
                matrix = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise UserInputError(f"{path}: not valid JSON ({err})") from None
            if isinstance(matrix, dict):
                matrix = dense_from_record(matrix, str(path))
        else:
            raise UserInputError(f"{path}: a transition matrix file must end in .npy or .json")
    except OSError as err:
        raise io_error(path, err, "read") from None
    try:
        array = np.asarray(matrix, dtype=np.float64)
    except (ValueError, TypeError):
        raise UserInputError(f"{path}: not a {num_classes} x {num_classes} matrix of numbers") from None
    try:
        return check_transition(torch.from_numpy(array), num_classes)
    except ValueError as err:
        raise UserInputError(f"{path}: {err}") from None


@torch.no_grad()
def estimate_transition(probs: Tensor, percentile: float | None = 97.0) -> Tensor:
    """The anchor-point estimate of T from the (N, K) softmax of a model trained with cross-entropy on the noisy
    labels (on the training inputs): row i of T is p(. | x) at the anchor of class i, then normalised to sum to 1.

    The anchor of class i, as in the authors' `NoiseEstimator` with its outlier filter: with v the `percentile`-th
    percentile of p(i | x) over the samples (numpy's `interpolation='higher'`: the sorted value at index
    ceil(percentile / 100 * (N - 1))), the first sample with the largest p(i | x) strictly below v. `None` takes
    the most confident sample (the authors' setting for CIFAR-100). Vectorised over classes, float64 inside.
    """
    if probs.dim() != 2 or probs.size(0) < 1 or probs.size(1) < 2:
        raise ValueError(f"probs must be (samples, classes) with at least 2 classes, got {tuple(probs.shape)}")
    p = probs.detach().to(torch.float64)
    if not torch.isfinite(p).all() or (p < 0).any():
        raise ValueError("probs must be finite and non-negative")
    if percentile is None:
        anchors = p.argmax(dim=0)
    else:
        if not 0.0 <= percentile <= 100.0:
            raise ValueError(f"percentile must lie in [0, 100], got {percentile}")
        rank = math.ceil(percentile / 100.0 * (p.size(0) - 1))
        threshold = p.kthvalue(rank + 1, dim=0).values  # the sorted value at index `rank`, per class
        # the authors zero every value at or above the threshold and take the first maximum of what is left
        anchors = p.masked_fill(p >= threshold, 0.0).argmax(dim=0)
    rows = p.index_select(0, anchors)
    if not (rows.sum(dim=1) > 0).all():
        raise ValueError("an anchor sample has an all-zero probability row; probs must be softmax outputs")
    return (rows / rows.sum(dim=1, keepdim=True)).float()


def float32_or_wider(x: Tensor) -> Tensor:
    """`x` in float32, or kept in float64: half-precision inputs are computed in float32, float64 stays exact."""
    return x if x.dtype == torch.float64 else x.float()


def _clipped_probs(logits: Tensor) -> Tensor:
    """Softmax (float32 or wider) clipped to [CLIP, 1 - CLIP], as the authors' losses (zero gradient where clipped)."""
    return torch.softmax(float32_or_wider(logits), dim=1).clamp(CLIP, 1.0 - CLIP)


def forward_corrected_loss(logits: Tensor, target: Tensor, transition: Tensor) -> Tensor:
    """Mean over the batch of -sum_j t_j log (p T)_j with p the clipped softmax (float32, autocast off); t is the
    one-hot noisy label or a dense target. (p T)_j is floored at 1e-7 too, so a column of zeros in T (a noisy class
    no clean class turns into) cannot make the loss infinite."""
    with autocast_off(logits.device.type):
        probs = _clipped_probs(logits)
        log_noisy = (probs @ transition.to(probs.dtype)).clamp_min(CLIP).log()
        if target.dim() == 2:
            return -(target.to(probs.dtype) * log_noisy).sum(dim=1).mean()
        return -log_noisy.gather(1, target.unsqueeze(1)).mean()


def backward_corrected_loss(logits: Tensor, target: Tensor, inverse: Tensor) -> Tensor:
    """Mean over the batch of (T^-1 l)_y, with l_k = -log p_k the per-class losses of the clipped softmax: the
    authors' -sum_k (t T^-1)_k log p_k for a one-hot or dense target t (float32, autocast off)."""
    with autocast_off(logits.device.type):
        log_probs = _clipped_probs(logits).log()
        inverse = inverse.to(log_probs.dtype)
        weights = target.to(log_probs.dtype) @ inverse if target.dim() == 2 else inverse.index_select(0, target)
        return -(weights * log_probs).sum(dim=1).mean()


class _TransitionCorrection(EpochLoss):
    """A loss corrected with a transition matrix the training loop supplies through `set_transition`.

    `transition_source` says where the loop takes it from: "known" (the realised matrix of the run's label noise),
    "estimate" (`estimate_transition` on a cross-entropy model's softmax, with `estimate_percentile`) or a path of
    a .npy / .json file (`read_transition`). The matrix is part of the state_dict, so a resumed run needs nothing
    else. Held as a plain float32 attribute, like OLS's statistics, so `.half()` cannot degrade it.
    """

    needs_transition = True

    def __init__(self, num_classes: int, transition: str = "known", estimate_percentile: float | None = 97.0,
                 check_inputs: bool = True) -> None:
        super().__init__(num_classes, check_inputs)
        if not isinstance(transition, str) or not (transition in SOURCES or re.fullmatch(TRANSITION_FILE, transition)):
            raise ValueError(f"transition must be 'known', 'estimate' or the path of a .npy or .json file, "
                             f"got {transition!r}")
        if estimate_percentile is not None and not 0.0 <= estimate_percentile <= 100.0:
            raise ValueError(f"estimate_percentile must lie in [0, 100], got {estimate_percentile}")
        self.transition_source = transition
        self.estimate_percentile = estimate_percentile
        self.add_state("_T", None, persistent=False)  # saved as "transition", see _state_tensors
        self.add_state("_matrix", None, persistent=False)  # what the loss multiplies by: T, or T^-1 for backward

    @property
    def transition_matrix(self) -> Tensor | None:
        """The K x K float32 matrix in use (rows = clean classes), or None before `set_transition`."""
        return self._T

    def set_transition(self, matrix: Tensor) -> None:
        """Use `matrix` (K x K, finite, non-negative, rows summing to 1 within 1e-4) from now on; ValueError if not."""
        T = check_transition(matrix, self.num_classes)
        self._matrix = self._loss_matrix(T).to(self.state_device)
        self._T = T.to(self.state_device)

    def _loss_matrix(self, T: Tensor) -> Tensor:
        """The matrix the loss multiplies by, derived from T once per `set_transition`: T itself here."""
        return T

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, transition={self.transition_source!r}"

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if self._matrix is None:
            raise ValueError(f"{type(self).__name__} has no transition matrix yet: call set_transition(T) first "
                             f"(source {self.transition_source!r})")
        target, _ = self._prepare(logits, target)
        self.move_state(logits.device)
        return self._corrected(logits, target, self._matrix)

    def _corrected(self, logits: Tensor, target: Tensor, matrix: Tensor) -> Tensor:
        """The corrected loss of the batch with the matrix from `_loss_matrix`; each correction defines it."""
        raise NotImplementedError

    # -- state: the matrix, (0, 0) while unset -----------------------------------------------------------
    def _state_tensors(self) -> dict[str, Tensor]:
        return {"transition": torch.zeros(0, 0) if self._T is None else self._T}

    def _load_state_tensors(self, state: dict[str, Tensor]) -> None:
        if state["transition"].numel():
            self.set_transition(state["transition"])


_OPTIONS = [
    Option("transition", help="the matrix T[i, j] = P(noisy j | clean i): known (the realised one of the run's "
           "--noise), estimate (anchor points of a cross-entropy model's softmax on the training data), or the path of "
           "a .npy / .json K x K file", file_pattern=TRANSITION_FILE),
    Option("estimate_percentile", help="with transition=estimate, the anchor of class i is the most confident sample "
           "below this percentile of p(i|x); none takes the most confident one (the authors' CIFAR-100 setting)",
           min=0.0, max=100.0),
]


@register_loss("forward", "forward loss correction: cross-entropy of p T (Patrini et al. 2017)", _OPTIONS)
class ForwardCorrection(_TransitionCorrection):
    """Forward correction: the cross-entropy of p T against the noisy label, p the clipped float32 softmax.

    Dense (mixup/cutmix) targets t give -sum_j t_j log (p T)_j. See `_TransitionCorrection` for the matrix.
    """

    def _corrected(self, logits: Tensor, target: Tensor, matrix: Tensor) -> Tensor:
        return forward_corrected_loss(logits, target, matrix)


@register_loss("backward", "backward loss correction: T^-1 times the per-class losses (Patrini et al. 2017)", _OPTIONS)
class BackwardCorrection(_TransitionCorrection):
    """Backward correction: T^-1 applied to the vector of per-class losses -log p, read at the noisy label.

    Dense (mixup/cutmix) targets t give -sum_k (t T^-1)_k log p_k. T must be invertible (`set_transition` refuses a
    singular or float32-ill-conditioned one). See `_TransitionCorrection` for the matrix.
    """

    def _loss_matrix(self, T: Tensor) -> Tensor:
        return inverse_transition(T)

    def _corrected(self, logits: Tensor, target: Tensor, matrix: Tensor) -> Tensor:
        return backward_corrected_loss(logits, target, matrix)
