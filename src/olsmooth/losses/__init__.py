"""Losses: Online Label Smoothing and the baselines it is compared with, each with a functional form.

Every module of this package is imported here: each registers its losses by name (`register_loss`) and lists its
public names in its `__all__`, which this package re-exports. A new loss is one new module; nothing here changes.
"""

import importlib as _importlib
import pkgutil as _pkgutil

from .common import CrossEntropy, EpochLoss, LossInputError, TrainingRun, cross_entropy, validate_inputs
from .registry import Option, build_loss, list_losses, loss_entry, loss_options, register_loss, validate_loss_options

__all__ = ["CrossEntropy", "EpochLoss", "LossInputError", "Option", "TrainingRun", "build_loss", "cross_entropy",
           "list_losses", "loss_entry", "loss_options", "register_loss", "validate_inputs", "validate_loss_options"]

for _module in _pkgutil.iter_modules(__path__):
    _loaded = _importlib.import_module(f"{__name__}.{_module.name}")
    for _name in getattr(_loaded, "__all__", ()):
        if _name not in __all__:
            globals()[_name] = getattr(_loaded, _name)
            __all__.append(_name)
