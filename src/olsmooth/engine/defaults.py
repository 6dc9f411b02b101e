"""Per-dataset defaults for options a recipe or the command line leaves unset (model, epochs, batch, lr, wd)."""

from __future__ import annotations

from typing import Any

_SMALL = dict(model="small_cnn", epochs=12, batch_size=64, lr=0.05, weight_decay=5e-4)
_CIFAR = dict(model="cifar_resnet56", epochs=200, batch_size=128, lr=0.1, weight_decay=5e-4)
_FINE = dict(model="resnet50", epochs=100, batch_size=64, lr=0.01, weight_decay=1e-4)

DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": _SMALL,
    "fashion-mnist": dict(_SMALL, epochs=10, batch_size=128),
    "cifar10": _CIFAR,
    "cifar100": _CIFAR,
    "imagenet": dict(model="resnet50", epochs=90, batch_size=64, lr=0.1, weight_decay=1e-4),
    "imagefolder": dict(model="resnet18", epochs=30, batch_size=64, lr=0.01, weight_decay=1e-4),
    "listfile": dict(model="resnet18", epochs=30, batch_size=64, lr=0.01, weight_decay=1e-4),
    "cub200": _FINE, "flowers102": _FINE, "cars": _FINE, "aircraft": _FINE, "dogs": _FINE,
}

# Datasets held in memory as tensors: worker processes would only add start-up time.
IN_MEMORY = {"digits", "fashion-mnist"}


def dataset_defaults(dataset: str) -> dict[str, Any]:
    """The defaults for a dataset (those of image folders for names not listed)."""
    return DATASET_DEFAULTS.get(dataset, DATASET_DEFAULTS["imagefolder"])
