"""`resolve()`: a training configuration with every default filled in and checked, without touching the input.

The command line, resume and the study runner all call it, so a configuration means the same run wherever it
comes from. Defaults come from the dataset's spec; fine-tuning from `--pretrained` gets its own learning rate.
"""

from __future__ import annotations

import copy
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from ..data import canonical_dataset_name, dataset_defaults, dataset_spec
from ..data.noise import check_class_map
from ..models import model_source
from .config import TrainConfig

FINETUNE_LR = 0.01
"""Peak learning rate when starting from pretrained weights and none is given: from-scratch rates (0.05-0.1)
wreck ImageNet features in the first epochs (docs/models.md, fine-tuning)."""
FINETUNE_MIN_SIDE = 64
"""Input side under which fine-tuning pretrained weights gets a warning: an ImageNet network's stride-32 features
end in a 1 x 1 map there (fine-tuning beat scratch by 5.3 points at 32 px, by 7.6 at 64 px; docs/models.md)."""


def resolve(cfg: TrainConfig) -> TrainConfig:
    """A copy of `cfg` with the per-dataset defaults (model, epochs, batch size, lr, weight decay), the loader
    workers and the run folder filled in where the user left them unset."""
    cfg = copy.deepcopy(cfg)
    cfg.dataset = canonical_dataset_name(cfg.dataset)
    defaults = dataset_defaults(cfg.dataset)
    if cfg.pretrained and cfg.lr is None:
        cfg.lr = FINETUNE_LR
    for key, value in defaults.items():
        if getattr(cfg, key) is None:
            setattr(cfg, key, value)
    if cfg.workers is None:
        cfg.workers = 0 if dataset_spec(cfg.dataset).in_memory else min(8, torch.multiprocessing.cpu_count())
    if cfg.out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        cfg.out = str(Path("runs") / f"{stamp}-{cfg.dataset}-{cfg.method}")
    return cfg


def check_names(cfg: TrainConfig) -> None:
    """What a run of `cfg` would find wrong only once it builds its data and model, checked without building them:
    the dataset and model names, and asymmetric label noise without a class map for the dataset. One-line
    UserInputError, as the run would give."""
    resolved = resolve(cfg)
    model_source(resolved.model)
    if resolved.noise_spec is not None:
        check_class_map(resolved.noise_spec.kind, resolved.dataset, resolved.noise_map is not None)


def upgrade_stored_config(config: dict[str, Any]) -> dict[str, Any]:
    """A configuration stored by an older version, as this one writes it: `split: paper` was stored for every
    dataset, also those without a choice of splits, where it now means an error."""
    config = dict(config)
    if config.get("split") is not None and not dataset_spec(str(config.get("dataset"))).splits:
        config["split"] = None
    return config


def upgrade_subset_draw(config: dict[str, Any], indices_saved: bool) -> dict[str, Any]:
    """A configuration stored before `train_subset_draw` existed, with the draw its run trained on: the seeded
    stratified one when the run saved its indices (last.pt's data_indices, train_indices.npy), else the first
    `train_subset` samples, all that versions before the seeded draw (c7d9464) took. Other configurations are
    returned unchanged."""
    if "train_subset_draw" in config or config.get("train_subset") is None:
        return config
    return {**config, "train_subset_draw": "stratified" if indices_saved else "first"}


def small_input_note(side: int) -> str | None:
    """The warning for fine-tuning pretrained weights on `side` x `side` inputs, or None from FINETUNE_MIN_SIDE on."""
    if side >= FINETUNE_MIN_SIDE:
        return None
    return (f"fine-tuning pretrained weights on {side} x {side} inputs: an ImageNet network's last feature map is "
            f"{max(1, side // 32)} x {max(1, side // 32)} there and its features transfer poorly; consider "
            f"--image-size {FINETUNE_MIN_SIDE} or more (docs/models.md, fine-tuning)")
