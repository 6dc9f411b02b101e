"""The names of a run folder's files: the only place that spells them.

A run folder (`olsmooth train --out DIR`) holds what `RunFolder` writes (the resolved configuration, the metrics,
the summary, checkpoints, TensorBoard, soft labels, the label noise and the training/validation indices), the
`transition-estimate/` run of a `transition=estimate` loss, and `results/`, where `eval` and `attack` keep their
results with --save-to-run. Every reader and writer builds its paths from these names.
"""

from __future__ import annotations

import re

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
LAST = "last.pt"
BEST = "best.pt"
LOCK = ".lock"
TENSORBOARD = "tensorboard"
SOFT_LABELS = "soft_labels"
RESULTS = "results"
NOISE = "noise.json"
TRANSITION = "transition.json"
MEMORISATION = "memorisation.png"
ESTIMATE = "transition-estimate"
"""The cross-entropy run (a run folder of its own) that a --loss-opt transition=estimate run trains first."""
STAGING, REPLACED = ".olsmooth-replacing", ".olsmooth-replaced"
"""Suffixes of the hidden siblings `.NAME<suffix>` of a run folder NAME that a forced replacement uses."""
PREVIOUS_BEST, PREVIOUS_BEST_GLOB = ".best.pt.before-{:03d}.tmp", ".best.pt.before-*.tmp"
"""best.pt as it was before epoch N replaced it, kept until N's last.pt is written (a temporary file)."""
SNAPSHOT_GLOB = "epoch-*.pt"
SOFT_LABELS_GLOB = f"{SOFT_LABELS}/epoch-*.*"
EPOCH_PLACEHOLDER = "epoch-NNN"
"""How messages and help texts name the files of an epoch."""

_SNAPSHOT = re.compile(r"epoch-(\d+)\.pt")
_SOFT_LABELS = re.compile(r"epoch-(\d+)\.np[yz]")  # the matrices; the .png beside them are their heatmaps
_EPOCH_OF = re.compile(r"(?:\.best\.pt\.before-|epoch-)(\d+)\.")  # the epoch a file of an epoch is named after
RUN_ENTRY = re.compile("(?:" + "|".join([
    *(re.escape(name) for name in (LOCK, CONFIG, METRICS, SUMMARY, BEST, TENSORBOARD, SOFT_LABELS, NOISE, MEMORISATION,
                                   TRANSITION, ESTIMATE)),
    _SNAPSHOT.pattern, r"(train|val)_indices\.npy", r"(clean|noisy)_labels\.npy", r"\..+\.tmp"]) + ")")
"""Names a run writes: a folder holding only these and no last.pt is what a run that stopped before its first
checkpoint left behind (a stub), which a new run may reuse without --force."""


def snapshot_name(epoch: int) -> str:
    """File name of the epoch-N snapshot."""
    return f"epoch-{epoch:03d}.pt"


def soft_labels_name(epoch: int, suffix: str) -> str:
    """File name, in `soft_labels/`, of epoch N's matrix (.npy dense, .npz top-k rows) or heatmap (.png)."""
    return f"epoch-{epoch:03d}{suffix}"


def snapshot_epoch(name: str) -> int | None:
    """The epoch of a snapshot file name (epoch-NNN.pt), None for other names."""
    match = _SNAPSHOT.fullmatch(name)
    return int(match.group(1)) if match else None


def soft_labels_epoch(name: str) -> int | None:
    """The epoch of a saved soft-label matrix's file name (epoch-NNN.npy or .npz), None for other names."""
    match = _SOFT_LABELS.fullmatch(name)
    return int(match.group(1)) if match else None


def epoch_of(name: str) -> int:
    """The epoch a file of an epoch (snapshot, soft labels, kept best.pt) is named after; 0 for other names."""
    match = _EPOCH_OF.match(name)
    return int(match.group(1)) if match else 0


def indices_name(split: str) -> str:
    """`train_indices.npy` or `val_indices.npy`: which samples of the dataset's training split a run uses."""
    return f"{split}_indices.npy"


def labels_name(kind: str) -> str:
    """`clean_labels.npy` or `noisy_labels.npy`: the training labels of a run with --noise."""
    return f"{kind}_labels.npy"


def eval_result_name(stem: str) -> str:
    """The results/ file of `olsmooth eval --save-to-run` on checkpoint STEM.pt."""
    return f"eval-{stem}.json"


def attack_result_name(attack: str, norm: str, eps_text: str, transfer: bool) -> str:
    """The results/ file of `olsmooth attack --save-to-run`: attack-ATTACK-NORM-EPS[-transfer].json, the '/' of a
    fraction written '_'."""
    suffix = "-transfer" if transfer else ""
    return f"attack-{attack}-{norm}-{eps_text.replace('/', '_')}{suffix}.json"
