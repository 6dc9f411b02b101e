"""Losses by name, so recipes and the command line can pick one: `build_loss("ols", num_classes=K, ...)`."""

from __future__ import annotations

from typing import Any, Callable

from ..errors import UserInputError
from .common import CrossEntropy, EpochLoss
from .online import OnlineLabelSmoothing
from .smoothing import LabelSmoothingCrossEntropy, TfKDRegularization

LossFactory = Callable[..., EpochLoss]
_REGISTRY: dict[str, tuple[LossFactory, str]] = {}


def register_loss(name: str, description: str) -> Callable[[LossFactory], LossFactory]:
    """Decorator: make a factory `fn(num_classes, **options) -> EpochLoss` available by name."""
    def wrap(fn: LossFactory) -> LossFactory:
        _REGISTRY[name] = (fn, description)
        return fn
    return wrap


def list_losses() -> dict[str, str]:
    """Registered loss names with a one-line description each."""
    return {name: desc for name, (_, desc) in sorted(_REGISTRY.items())}


def build_loss(name: str, num_classes: int, **options: Any) -> EpochLoss:
    """Build a registered loss; unknown names and options are user errors."""
    if name not in _REGISTRY:
        raise UserInputError(f"unknown method {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    try:
        return _REGISTRY[name][0](num_classes, **options)
    except TypeError as err:
        raise UserInputError(f"bad options for method {name!r}: {err}") from err


@register_loss("ce", "cross-entropy with hard labels")
def _ce(num_classes: int, **options: Any) -> EpochLoss:
    return CrossEntropy(num_classes, **options)


@register_loss("ls", "label smoothing (eps/K convention, eps 0.1 by default)")
def _ls(num_classes: int, **options: Any) -> EpochLoss:
    return LabelSmoothingCrossEntropy(num_classes, **options)


@register_loss("ols", "Online Label Smoothing (preset=paper-cifar | paper-fine-grained, or our defaults)")
def _ols(num_classes: int, preset: str | None = None, **options: Any) -> EpochLoss:
    if preset:
        return OnlineLabelSmoothing.from_preset(preset, num_classes, **options)
    return OnlineLabelSmoothing(num_classes, **options)


@register_loss("tfkd", "Tf-KD regulariser: virtual teacher 0.99, alpha 0.95, temperature 6")
def _tfkd(num_classes: int, **options: Any) -> EpochLoss:
    return TfKDRegularization(num_classes, **options)
