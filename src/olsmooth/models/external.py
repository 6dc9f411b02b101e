"""torchvision and timm classifiers by name, built without weights; both libraries are imported lazily."""

from __future__ import annotations

from functools import cache
from typing import Any

import torch
from torch import nn

from ..errors import UserInputError
from .layers import rebuild_conv

# The Inception family returns auxiliary logits in training mode unless told otherwise; a trainer wants logits.
_TORCHVISION_DEFAULTS: dict[str, dict[str, Any]] = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}


@cache
def torchvision_names() -> tuple[str, ...]:
    """torchvision's image-classification model names."""
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


@cache
def timm_names() -> tuple[str, ...]:
    """timm's model names (architectures, without pretrained tags)."""
    import timm

    return tuple(timm.list_models())


def is_timm_model(name: str) -> bool:
    """Whether timm builds `name` (an architecture, optionally with a `.tag`)."""
    import timm

    return bool(timm.is_model(name))


def replace_rgb_stem(model: nn.Module, in_chans: int, name: str) -> None:
    """Rebuild the model's single 3-channel convolution for `in_chans` inputs, tiling its initial weights."""
    stems = [(path, m) for path, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3]
    if len(stems) != 1:
        raise UserInputError(f"model {name!r} has no single RGB stem convolution to rebuild for "
                             f"in_chans={in_chans}; use in_chans=3")
    path, old = stems[0]
    new = rebuild_conv(old, in_channels=in_chans)
    with torch.no_grad():  # keep the family's own initial distribution, channel by channel
        new.weight.copy_(old.weight.repeat(1, -(-in_chans // 3), 1, 1)[:, :in_chans])
        if old.bias is not None:
            new.bias.copy_(old.bias)
    parent, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent), attr, new)


def build_torchvision(name: str, num_classes: int, in_chans: int, **kwargs: Any) -> nn.Module:
    """A torchvision classifier, randomly initialised, with `in_chans` inputs."""
    import torchvision

    options = {**_TORCHVISION_DEFAULTS.get(name, {}), **kwargs}
    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **options)
    except TypeError as err:
        raise UserInputError(f"bad options for torchvision model {name!r}: {err}") from err
    if in_chans != 3:
        replace_rgb_stem(model, in_chans, name)
    return model


def build_timm(name: str, num_classes: int, in_chans: int, **kwargs: Any) -> nn.Module:
    """A timm model, randomly initialised (`pretrained=False`: never downloads)."""
    import timm

    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    except TypeError as err:
        raise UserInputError(f"bad options for timm model {name!r}: {err}") from err
