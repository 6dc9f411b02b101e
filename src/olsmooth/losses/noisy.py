"""Losses robust to label noise: symmetric cross-entropy, generalised cross-entropy (Lq), bootstrapping and
DisturbLabel, each a module with a functional form next to it.

All take class indices (B,) or dense (B, K) mixup/cutmix probabilities and compute in float32 under autocast
(float64 logits stay float64, so gradients can be checked numerically). None keeps state across processes.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .common import EpochLoss, autocast_off
from .registry import Option, register_loss

__all__ = ["SCE_PRESETS", "Bootstrapping", "DisturbLabel", "GeneralizedCrossEntropy", "SymmetricCrossEntropy",
           "bootstrap_loss", "disturb_label_loss", "disturb_labels", "gce_loss", "hard_bootstrap_loss", "sce_loss",
           "soft_bootstrap_loss"]

# The authors' per-dataset (alpha, beta) of symmetric cross-entropy; "mnist" covers MNIST-like sets (Fashion-MNIST).
SCE_PRESETS: dict[str, tuple[float, float]] = {"cifar10": (0.1, 1.0), "cifar100": (6.0, 0.1), "mnist": (0.01, 1.0)}


def float_log_softmax(logits: Tensor) -> Tensor:
    """log-softmax in float32 whatever the input precision (float64 logits stay float64)."""
    return F.log_softmax(logits if logits.dtype == torch.float64 else logits.float(), dim=1)


def as_probabilities(target: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """(B, K) target probabilities: dense targets as they are, class indices one-hot."""
    return target.to(dtype) if target.dim() == 2 else F.one_hot(target, num_classes).to(dtype)


def clipped_log_probs(log_probs: Tensor, low: float, high: float = 1.0) -> Tensor:
    """log clamp(p, low, high), taken on the log-probabilities (exact, no log of a rounded softmax)."""
    return log_probs.clamp(min=math.log(low), max=math.log(high) if high < 1.0 else None)


def log_prob_cross_entropy(log_probs: Tensor, target: Tensor) -> Tensor:
    """Mean cross-entropy against class indices or dense targets, in the log-probabilities' precision."""
    if target.dim() == 2:
        return -(target.to(log_probs.dtype) * log_probs).sum(dim=1).mean()
    return F.nll_loss(log_probs, target)


def float_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy against class indices or dense targets in float32 under autocast (float64 kept)."""
    with autocast_off(logits.device.type):
        return log_prob_cross_entropy(float_log_softmax(logits), target)


def sce_loss(logits: Tensor, target: Tensor, alpha: float = 0.1, beta: float = 1.0, label_clip: float = 1e-4,
             pred_clip: float = 1e-7) -> Tensor:
    """Symmetric cross-entropy (Wang et al., ICCV 2019): alpha CE(t, p) + beta RCE, RCE = -sum_k p_k log t_k.

    As in the authors' code the prediction is clipped to [pred_clip, 1] in both terms and the target to
    [label_clip, 1] in the reverse term, so for a hard label RCE = -log(label_clip) * sum_{k != y} p_k.
    """
    with autocast_off(logits.device.type):
        log_p = clipped_log_probs(float_log_softmax(logits), pred_clip)
        t = as_probabilities(target, logits.size(1), log_p.dtype)
        ce = -(t * log_p).sum(dim=1).mean()
        rce = -(log_p.exp() * t.clamp(label_clip, 1.0).log()).sum(dim=1).mean()
        return alpha * ce + beta * rce


def gce_loss(logits: Tensor, target: Tensor, q: float = 0.7) -> Tensor:
    """Generalised cross-entropy, the Lq loss (Zhang & Sabuncu, NeurIPS 2018): mean of (1 - p_y^q) / q.

    A dense target t weights each class's loss: sum_k t_k (1 - p_k^q) / q. q -> 0 is cross-entropy, q = 1 MAE.
    """
    with autocast_off(logits.device.type):
        log_p = float_log_softmax(logits)
        t = as_probabilities(target, logits.size(1), log_p.dtype)
        return (t * (1.0 - torch.exp(q * log_p))).sum(dim=1).mean() / q


def bootstrap_loss(logits: Tensor, target: Tensor, beta: float, mode: str = "soft", pred_clip: float = 1e-7) -> Tensor:
    """Bootstrapping (Reed et al., ICLR 2015 workshop): cross-entropy against beta t + (1 - beta) g.

    g is the prediction p itself ("soft"; its gradient flows, making the second term an entropy penalty) or the
    one-hot of its arg-max ("hard"). As in the SCE authors' code p is clipped to [pred_clip, 1 - pred_clip].
    """
    if mode not in ("soft", "hard"):
        raise ValueError(f"bootstrapping mode must be 'soft' or 'hard', got {mode!r}")
    num_classes = logits.size(1)
    with autocast_off(logits.device.type):
        log_p = clipped_log_probs(float_log_softmax(logits), pred_clip, 1.0 - pred_clip)
        t = as_probabilities(target, num_classes, log_p.dtype)
        guess = log_p.exp() if mode == "soft" else F.one_hot(logits.argmax(dim=1), num_classes).to(log_p.dtype)
        return -((beta * t + (1.0 - beta) * guess) * log_p).sum(dim=1).mean()


def soft_bootstrap_loss(logits: Tensor, target: Tensor, beta: float = 0.95) -> Tensor:
    """Soft bootstrapping with the authors' beta 0.95."""
    return bootstrap_loss(logits, target, beta, "soft")


def hard_bootstrap_loss(logits: Tensor, target: Tensor, beta: float = 0.8) -> Tensor:
    """Hard bootstrapping with the authors' beta 0.8."""
    return bootstrap_loss(logits, target, beta, "hard")


def disturb_labels(target: Tensor, num_classes: int, rate: float, generator: torch.Generator | None = None) -> Tensor:
    """DisturbLabel's draw: each label, with probability `rate`, replaced by one drawn uniformly from all K classes.

    A dense target row that is drawn is replaced by the one-hot of the new class. `generator` (on the target's
    device) defaults to torch's global one, which a training loop reseeds every epoch.
    """
    size = target.size(0)
    replace = torch.rand(size, generator=generator, device=target.device) < rate
    drawn = torch.randint(num_classes, (size,), generator=generator, device=target.device)
    if target.dim() == 2:
        return torch.where(replace.unsqueeze(1), F.one_hot(drawn, num_classes).to(target.dtype), target)
    return torch.where(replace, drawn, target)


def disturb_label_loss(logits: Tensor, target: Tensor, rate: float = 0.1,
                       generator: torch.Generator | None = None) -> Tensor:
    """DisturbLabel (Xie et al., CVPR 2016): cross-entropy against labels disturbed by `disturb_labels`."""
    return float_cross_entropy(logits, disturb_labels(target, logits.size(1), rate, generator))


def check_fraction(name: str, value: float, low_open: bool = True, high_open: bool = True) -> float:
    """`value` as a float inside (0, 1) (ends closed where asked), else a ValueError naming it."""
    low_ok = value > 0.0 if low_open else value >= 0.0
    high_ok = value < 1.0 if high_open else value <= 1.0
    if not (low_ok and high_ok):
        raise ValueError(f"{name} must lie in {'(' if low_open else '['}0, 1{')' if high_open else ']'}, got {value}")
    return float(value)


class FunctionalLoss(EpochLoss):
    """A loss that is a fixed function of (logits, target) and the attributes named in `fields`."""

    fields: tuple[str, ...] = ()
    function: Callable[..., Tensor]  # a staticmethod in subclasses

    def extra_repr(self) -> str:
        return ", ".join([f"num_classes={self.num_classes}"] + [f"{n}={getattr(self, n)!r}" for n in self.fields])

    def loss_kwargs(self) -> dict[str, Any]:
        """The keyword arguments `function` is called with."""
        return {name: getattr(self, name) for name in self.fields}

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        target, _ = self._prepare(logits, target)
        return self.function(logits, target, **self.loss_kwargs())


_FRACTION = {"min": 0.0, "max": 1.0, "min_exclusive": True, "max_exclusive": True}


@register_loss("sce", "symmetric cross-entropy alpha CE + beta RCE (cifar10 0.1/1, cifar100 6/0.1, mnist 0.01/1)", [
    Option("preset", help="the authors' alpha/beta for a dataset (mnist also for Fashion-MNIST); alpha or beta given "
           "as well override it", choices=tuple(SCE_PRESETS)),
    Option("alpha", help="weight of the cross-entropy term", min=0.0, default_text="from the preset"),
    Option("beta", help="weight of the reverse cross-entropy term", min=0.0, default_text="from the preset"),
    Option("label_clip", help="the one-hot label is clipped to [label_clip, 1] in the reverse term", **_FRACTION),
    Option("pred_clip", help="the softmax is clipped to [pred_clip, 1]", **_FRACTION),
])
class SymmetricCrossEntropy(FunctionalLoss):
    """Symmetric cross-entropy; `preset` picks the authors' per-dataset alpha/beta, explicit values override it."""

    fields = ("alpha", "beta", "label_clip", "pred_clip")
    function = staticmethod(sce_loss)

    def __init__(self, num_classes: int, alpha: float | None = None, beta: float | None = None,
                 preset: str = "cifar10", label_clip: float = 1e-4, pred_clip: float = 1e-7,
                 check_inputs: bool = True) -> None:
        super().__init__(num_classes, check_inputs)
        if preset not in SCE_PRESETS:
            raise ValueError(f"unknown SCE preset {preset!r}; presets: {', '.join(SCE_PRESETS)}")
        preset_alpha, preset_beta = SCE_PRESETS[preset]
        self.preset = preset
        self.alpha = float(preset_alpha if alpha is None else alpha)
        self.beta = float(preset_beta if beta is None else beta)
        if self.alpha < 0 or self.beta < 0:
            raise ValueError(f"alpha and beta must be non-negative, got {self.alpha} and {self.beta}")
        self.label_clip = check_fraction("label_clip", label_clip)
        self.pred_clip = check_fraction("pred_clip", pred_clip)


@register_loss("gce", "generalised cross-entropy, the Lq loss (1 - p_y^q)/q, q 0.7", [
    Option("q", help="0 < q <= 1: towards 0 cross-entropy, 1 mean absolute error", min=0.0, max=1.0,
           min_exclusive=True),
])
class GeneralizedCrossEntropy(FunctionalLoss):
    """The Lq loss, (1 - p_y^q) / q, with the authors' q 0.7."""

    fields = ("q",)
    function = staticmethod(gce_loss)

    def __init__(self, num_classes: int, q: float = 0.7, check_inputs: bool = True) -> None:
        super().__init__(num_classes, check_inputs)
        self.q = check_fraction("q", q, high_open=False)


@register_loss("boothard", "hard bootstrapping: target beta y + (1 - beta) onehot(argmax p), beta 0.8", [
    Option("beta", float, 0.8, "weight of the given label; 1 - beta goes to the model's arg-max class", min=0.0,
           max=1.0),
], mode="hard")
@register_loss("bootsoft", "soft bootstrapping: target beta y + (1 - beta) p, beta 0.95", [
    Option("beta", float, 0.95, "weight of the given label; 1 - beta goes to the model's softmax", min=0.0, max=1.0),
], mode="soft")
class Bootstrapping(FunctionalLoss):
    """Soft (beta 0.95) or hard (beta 0.8) bootstrapping: the target blends the label with the model's guess."""

    fields = ("beta", "mode")
    function = staticmethod(bootstrap_loss)
    DEFAULT_BETA = {"soft": 0.95, "hard": 0.8}

    def __init__(self, num_classes: int, beta: float | None = None, mode: str = "soft",
                 check_inputs: bool = True) -> None:
        super().__init__(num_classes, check_inputs)
        if mode not in self.DEFAULT_BETA:
            raise ValueError(f"bootstrapping mode must be 'soft' or 'hard', got {mode!r}")
        self.mode = mode
        self.beta = check_fraction("beta", self.DEFAULT_BETA[mode] if beta is None else beta,
                                   low_open=False, high_open=False)


@register_loss("disturb", "DisturbLabel: each training label redrawn uniformly from all classes at rate 0.1", [
    Option("rate", help="probability that a label is replaced by a uniformly drawn class", min=0.0, max=1.0),
])
class DisturbLabel(EpochLoss):
    """DisturbLabel: cross-entropy against labels disturbed at `rate` while the module is in training mode.

    The draw uses `generator` when given, else torch's global generator (reseeded by the trainer every epoch, so a
    run and its resumption draw the same labels); in eval mode the labels are used as they are.
    """

    def __init__(self, num_classes: int, rate: float = 0.1, generator: torch.Generator | None = None,
                 check_inputs: bool = True) -> None:
        super().__init__(num_classes, check_inputs)
        self.rate = check_fraction("rate", rate, low_open=False, high_open=False)
        self.generator = generator

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, rate={self.rate}"

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        target, _ = self._prepare(logits, target)
        if not self.training:
            return float_cross_entropy(logits, target)
        return disturb_label_loss(logits, target, self.rate, self.generator)
