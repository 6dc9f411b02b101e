"""Load local pretrained weights (torchvision/timm state dicts, training checkpoints, safetensors) safely.

Nothing is unpickled beyond tensors (`weights_only=True`); tensors whose shape disagrees with the model (a
1000-class classifier in a 200-class model) are skipped and reported, so those layers keep their fresh init."""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import UserInputError

# Containers a state dict is found in: timm / torchvision reference / our own checkpoints, and their EMA copies.
_CONTAINER_KEYS = ("state_dict", "model", "model_ema", "state_dict_ema", "ema")
_EMA_FIRST = ("state_dict_ema", "model_ema", "ema", "state_dict", "model")
# Prefixes added by DistributedDataParallel / timm's EMA wrapper and by torch.compile.
_WRAPPER_PREFIXES = re.compile(r"^(?:module\.|_orig_mod\.)+")
# Old torchvision DenseNet files name `norm1` as `norm.1` (torchvision renames them the same way on load).
_LEGACY_KEYS = [(re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.[a-z_]+)$"), r"\1\2")]
# BatchNorm's step counter is not a weight: files without it (older torchvision ones) are not "missing" it.
_IGNORED_MISSING = ("num_batches_tracked",)


@dataclass
class LoadReport:
    """What `load_pretrained` did with each key (model-side names)."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)          # in the model, absent from the file
    unexpected: list[str] = field(default_factory=list)       # in the file, absent from the model
    shape_mismatch: list[str] = field(default_factory=list)   # in both with another shape: skipped
    adapted: list[str] = field(default_factory=list)          # loaded after converting RGB input channels

    def summary(self) -> str:
        """One line for the training log."""
        def some(keys: list[str]) -> str:
            return f" ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})" if keys else ""
        adapted = f", {len(self.adapted)} adapted to the input channels{some(self.adapted)}" if self.adapted else ""
        return (f"loaded {len(self.loaded)} tensors{adapted}; skipped {len(self.shape_mismatch)} of another "
                f"shape{some(self.shape_mismatch)}; {len(self.missing)} missing{some(self.missing)}; "
                f"{len(self.unexpected)} unexpected{some(self.unexpected)}")


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """RGB first-conv weights for `in_chans` inputs (timm's rule): summed for 1, else tiled and scaled by 3/C."""
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    tiled = weight.repeat(1, -(-in_chans // 3), 1, 1)[:, :in_chans]
    return tiled * (3 / in_chans)


def _read(path: Path) -> object:
    if not path.is_file():
        raise UserInputError(f"pretrained weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # weights_only met something it will not rebuild
        if re.search(r"Unsupported operand|invalid load key", str(err)):
            raise UserInputError(f"cannot read {path}: not a PyTorch or safetensors weights file") from err
        found = re.search(r"GLOBAL (\S+)", str(err))
        what = f"a pickled {found.group(1)}" if found else "pickled Python objects"
        raise UserInputError(f"{path} holds {what}; olsmooth refuses to unpickle code: re-save the file as a "
                             "plain state dict of tensors or as safetensors") from err
    except Exception as err:  # a corrupt or foreign file fails in many ways, all of them the user's input
        detail = (str(err).splitlines() or [""])[0][:200]
        raise UserInputError(f"cannot read {path}: not a readable PyTorch or safetensors weights file "
                             f"({type(err).__name__}: {detail})") from err


def extract_state_dict(obj: object, prefer_ema: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a state dict, found inside common checkpoint containers, with wrapper prefixes removed."""
    keys = _EMA_FIRST if prefer_ema else _CONTAINER_KEYS
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in keys if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise UserInputError(f"expected a state dict (a mapping of names to tensors), found {type(obj).__name__}")
    return {_WRAPPER_PREFIXES.sub("", str(k)): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _model_key(key: str, model_keys: Mapping[str, torch.Tensor]) -> str:
    if key in model_keys:
        return key
    for pattern, replacement in _LEGACY_KEYS:
        renamed = pattern.sub(replacement, key)
        if renamed in model_keys:
            return renamed
    return key


def _is_rgb_conv_for(file_w: torch.Tensor, model_w: torch.Tensor) -> bool:
    """A 4-D weight that differs from the model's only in having 3 input channels."""
    return (file_w.ndim == 4 and model_w.ndim == 4 and file_w.shape[1] == 3
            and file_w.shape[:1] + file_w.shape[2:] == model_w.shape[:1] + model_w.shape[2:])


def load_pretrained(model: nn.Module, path: str | Path, prefer_ema: bool = False) -> LoadReport:
    """Copy the matching tensors of a local weights file into `model` and say what matched.

    `.safetensors` is read with safetensors, anything else with `torch.load(weights_only=True)`. The state dict
    may sit under `state_dict`, `model`, `model_ema`, `state_dict_ema` or `ema` (olsmooth's checkpoints), the EMA
    copies first if `prefer_ema`, and carry `module.` prefixes. A 3-channel first conv is converted for a model
    with other input channels."""
    path = Path(path)
    source = extract_state_dict(_read(path), prefer_ema)
    target = model.state_dict()
    report, to_load = LoadReport(), {}
    for file_key, tensor in source.items():
        key = _model_key(file_key, target)
        if key not in target:
            report.unexpected.append(file_key)
        elif tensor.shape == target[key].shape:
            to_load[key] = tensor
        elif _is_rgb_conv_for(tensor, target[key]):
            to_load[key] = adapt_input_conv(tensor, target[key].shape[1])
            report.adapted.append(key)
        else:
            report.shape_mismatch.append(key)
    if not to_load:
        raise UserInputError(f"{path} matches none of the model's parameters (file keys like "
                             f"{', '.join(list(source)[:3]) or 'none'}; model keys like {', '.join(list(target)[:3])})")
    model.load_state_dict(to_load, strict=False)
    report.loaded = list(to_load)
    seen = set(to_load) | set(report.shape_mismatch)
    report.missing = [k for k in target if k not in seen and not k.endswith(_IGNORED_MISSING)]
    return report
