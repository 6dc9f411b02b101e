"""Every model by name: our own networks, torchvision's and timm's, through one `create_model`."""

from __future__ import annotations

import difflib
import inspect
import re
from pathlib import Path
from typing import Any, Callable, Sequence

from torch import nn

from ..errors import UserInputError
from . import external
from .pretrained import load_pretrained

ModelFn = Callable[..., nn.Module]
_MODELS: dict[str, ModelFn] = {}
_FAMILIES: list[tuple[re.Pattern[str], ModelFn, tuple[str, ...]]] = []
_PREFIXES = {"timm/": "timm", "tv/": "torchvision"}
SOURCES = ("olsmooth", "torchvision", "timm", "all")


def register_model(name: str) -> Callable[[ModelFn], ModelFn]:
    """Decorator: make `fn(num_classes, in_chans=3, **options) -> nn.Module` available by `name`."""
    def wrap(fn: ModelFn) -> ModelFn:
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = fn
        return fn
    return wrap


def register_model_family(pattern: str, examples: tuple[str, ...]) -> Callable[[ModelFn], ModelFn]:
    """Decorator: names matching `pattern` (named integer groups, e.g. `wrn(?P<depth>\\d+)_(?P<width>\\d+)`)
    build `fn(num_classes, in_chans, **groups, **options)`; `examples` are the names `list_models` shows."""
    def wrap(fn: ModelFn) -> ModelFn:
        _FAMILIES.append((re.compile(pattern), fn, examples))
        return fn
    return wrap


def _own_builder(name: str) -> tuple[ModelFn, dict[str, int]] | None:
    if name in _MODELS:
        return _MODELS[name], {}
    for pattern, fn, _ in _FAMILIES:
        match = pattern.fullmatch(name)
        if match:
            return fn, {key: int(value) for key, value in match.groupdict().items()}
    return None


def _own_names() -> list[str]:
    return sorted(set(_MODELS).union(*(examples for _, _, examples in _FAMILIES)))


def list_models(source: str = "all") -> list[str]:
    """Model names from one source ("olsmooth", "torchvision", "timm") or all of them, sorted.

    Unprefixed names resolve in the order olsmooth, torchvision, timm; `timm/NAME` and `tv/NAME` pick a source.
    Family patterns (`wrn{depth}_{width}`, ...) are listed by a few examples."""
    if source not in SOURCES:
        raise UserInputError(f"unknown model source {source!r}; choose one of {', '.join(SOURCES)}")
    names: set[str] = set()
    if source in ("olsmooth", "all"):
        names.update(_own_names())
    if source in ("torchvision", "all"):
        names.update(external.torchvision_names())
    if source in ("timm", "all"):
        names.update(external.timm_names())
    return sorted(names)


def _unknown(name: str, candidates: Sequence[str], where: str) -> UserInputError:
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `olsmooth train --list-models`"
    return UserInputError(f"unknown model {name!r} in {where}{hint}")


def _resolve(name: str) -> tuple[str, str]:
    """(source, name within that source) for a user-given model name."""
    if not isinstance(name, str) or not name:
        raise UserInputError(f"model name must be a non-empty string, got {name!r}")
    for prefix, source in _PREFIXES.items():
        if name.startswith(prefix):
            base = name[len(prefix):]
            if source == "timm" and not external.is_timm_model(base):
                raise _unknown(base, external.timm_names(), "timm")
            if source == "torchvision" and base not in external.torchvision_names():
                raise _unknown(base, external.torchvision_names(), "torchvision")
            return source, base
    if _own_builder(name) is not None:
        return "olsmooth", name
    if name in external.torchvision_names():
        return "torchvision", name
    if external.is_timm_model(name):
        return "timm", name
    raise _unknown(name, list_models("all"), "olsmooth, torchvision or timm")


def model_source(name: str) -> str:
    """Which library builds `name`: "olsmooth", "torchvision" or "timm" (UserInputError for unknown names)."""
    return _resolve(name)[0]


def accepts_in_chans(name: str) -> bool:
    """Whether `create_model(name, in_chans=C)` works for C other than 3, so the data layer need not make RGB.

    Our networks take `in_chans` natively, timm passes it through, and every torchvision classifier has its one
    RGB stem convolution rebuilt (checked for all 80 of torchvision 0.29). Raises UserInputError for unknown
    names, like `create_model`."""
    _resolve(name)
    return True


def _build_own(name: str, num_classes: int, in_chans: int, **kwargs: Any) -> nn.Module:
    builder = _own_builder(name)
    assert builder is not None, name  # _resolve found it
    fn, groups = builder
    try:
        inspect.signature(fn).bind(num_classes, in_chans, **groups, **kwargs)
    except TypeError as err:
        raise UserInputError(f"bad options for model {name!r}: {err}") from err
    return fn(num_classes, in_chans, **groups, **kwargs)


def create_model(name: str, num_classes: int, in_chans: int = 3, pretrained: str | Path | None = None,
                 **kwargs: Any) -> nn.Module:
    """Build a classifier by name with `num_classes` outputs and `in_chans` input channels.

    Never downloads weights. `pretrained` is a local file (torchvision/timm state dict, checkpoint or
    safetensors) loaded after the model is built; its `LoadReport` is attached as `model.pretrained_report`."""
    for label, value in (("num_classes", num_classes), ("in_chans", in_chans)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserInputError(f"{label} must be a positive integer, got {value!r}")
    source, base = _resolve(name)
    if source == "olsmooth":
        model = _build_own(base, num_classes, in_chans, **kwargs)
    elif source == "torchvision":
        model = external.build_torchvision(base, num_classes, in_chans, **kwargs)
    else:
        model = external.build_timm(base, num_classes, in_chans, **kwargs)
    if pretrained is not None:
        model.pretrained_report = load_pretrained(model, pretrained)
    return model
