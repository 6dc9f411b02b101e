"""Rebuild models and data from checkpoints; evaluate one checkpoint or a softmax-averaged ensemble of several."""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import chain
from pathlib import Path
from typing import Any

from torch import nn

from ..data import DatasetBundle, build_datasets
from ..errors import UserInputError
from ..models import create_model
from .checkpoint import load_checkpoint
from .distributed import setup
from .evaluate import Evaluation, eval_loader, evaluate
from .resolve import upgrade_stored_config


def build_model(name: str, options: dict[str, Any], num_classes: int, channels: int,
                pretrained: str | None = None) -> nn.Module:
    """A registered network with its options (`--model-opt`); an option it does not take is a one-line error."""
    try:
        return create_model(name, num_classes=num_classes, in_chans=channels, pretrained=pretrained, **options)
    except TypeError as err:
        raise UserInputError(f"model {name!r} does not take the options {options}: {err}") from None


def model_from_checkpoint(ckpt: dict[str, Any], ema: bool = False) -> nn.Module:
    """The checkpoint's network with its (or its EMA's) weights."""
    cfg = ckpt["config"]
    model = build_model(cfg["model"], cfg.get("model_options") or {}, ckpt["num_classes"], ckpt["channels"])
    weights = ckpt.get("ema") if ema else ckpt["model"]
    if weights is None:
        raise UserInputError("this checkpoint holds no EMA weights (train with --ema-decay)")
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        lines = str(err).splitlines()
        detail = (lines[1] if len(lines) > 1 else lines[0]).strip()[:200]
        raise UserInputError(f"checkpoint weights do not fit model {cfg['model']!r}: {detail}") from None
    return model


def data_for_checkpoint(ckpt: dict[str, Any], data_root: str | None = None) -> DatasetBundle:
    """The evaluation data of the checkpoint's run, optionally read from another data root."""
    cfg = upgrade_stored_config(ckpt["config"])
    return build_datasets(cfg["dataset"], data_root=data_root or cfg.get("data_root"), split=cfg.get("split"),
                          image_size=cfg.get("image_size"), channels=ckpt["channels"])


def _same_data(first: dict[str, Any], ckpt: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """`ckpt`, after checking that it was trained on the dataset and classes of `first`."""
    a, b = first["config"], ckpt["config"]
    if (b["dataset"], ckpt["num_classes"]) != (a["dataset"], first["num_classes"]):
        raise UserInputError(f"{path} was trained on {b['dataset']} ({ckpt['num_classes']} classes), "
                             f"not {a['dataset']} ({first['num_classes']} classes)")
    return ckpt


def evaluate_checkpoints(paths: Sequence[str | Path], data_root: str | None = None, batch_size: int = 256,
                         workers: int = 0, device: str | None = None, ema: bool = False,
                         collect: bool = False) -> Evaluation:
    """Evaluate one checkpoint, or the average of the softmax outputs of several trained on the same data."""
    first = load_checkpoint(paths[0])
    ckpts = [first] + [_same_data(first, load_checkpoint(p), p) for p in paths[1:]]
    dist = setup(device)
    models = [model_from_checkpoint(c, ema).to(dist.device) for c in ckpts]
    loader = eval_loader(data_for_checkpoint(first, data_root).test, batch_size, workers, dist)
    what = "evaluating" if len(models) == 1 else f"evaluating an ensemble of {len(models)}"
    return evaluate(models, loader, dist, collect=collect, progress=what)


def evaluate_each(paths: Sequence[str | Path], data_root: str | None = None, batch_size: int = 256,
                  workers: int = 0, device: str | None = None, ema: bool = False) -> list[Evaluation]:
    """Evaluate several checkpoints one at a time on one test loader, keeping each one's probabilities.

    Averaging any subset of the returned `probs` gives that subset's ensemble without evaluating it again;
    only one model is in memory at a time."""
    first = load_checkpoint(paths[0])
    dist = setup(device)
    loader = eval_loader(data_for_checkpoint(first, data_root).test, batch_size, workers, dist)
    ckpts = chain([first], (_same_data(first, load_checkpoint(p), p) for p in paths[1:]))  # loaded one by one
    return [evaluate([model_from_checkpoint(c, ema).to(dist.device)], loader, dist, collect=True,
                     progress=f"evaluating checkpoint {i + 1} of {len(paths)}") for i, c in enumerate(ckpts)]


def snapshot_epochs(run_dir: Path) -> dict[int, Path]:
    """The epoch-NNN.pt snapshots of a run, by epoch."""
    found = {}
    for path in run_dir.glob("epoch-*.pt"):
        match = re.fullmatch(r"epoch-(\d+)\.pt", path.name)
        if match:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def pick_snapshots(run_dir: str | Path, count: int) -> list[Path]:
    """`count` snapshots spread uniformly over training: those nearest to epochs E/count, 2E/count, ..., E."""
    run_dir = Path(run_dir)
    snaps = snapshot_epochs(run_dir)
    if count < 1:
        raise UserInputError("--count must be at least 1")
    if len(snaps) < count:
        raise UserInputError(f"{run_dir} has {len(snaps)} epoch snapshots, fewer than --count {count} "
                             f"(train with --save-every)")
    epochs = list(snaps)
    last = epochs[-1]
    chosen: list[int] = []
    for i in range(1, count + 1):
        goal = last * i / count
        free = [e for e in epochs if e not in chosen]
        chosen.append(min(free, key=lambda e: (abs(e - goal), -e)))
    return [snaps[e] for e in sorted(chosen)]
