"""A dataset folder of .npy arrays and a manifest.json: per split `SPLIT-images.npy` (N x H x W uint8, memory-mapped
when read), `SPLIT-labels.npy` (N int32) and `SPLIT-fonts.npy` (N int16, the index of each image's font in the
manifest). The one place that spells these names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import UserInputError

MANIFEST = "manifest.json"
SPLITS = ("train", "test")
KINDS = {"images": np.uint8, "labels": np.int32, "fonts": np.int16}


def array_path(root: Path, split: str, kind: str) -> Path:
    """Path of one array of a split ('images', 'labels' or 'fonts')."""
    return root / f"{split}-{kind}.npy"


def read_manifest(root: Path, fmt: str, hint: str) -> dict[str, Any]:
    """The folder's manifest, checked to be of format `fmt`; a missing or foreign one is a user error saying `hint`."""
    path = root / MANIFEST
    if not path.is_file():
        raise UserInputError(f"missing file {path}: {hint}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserInputError(f"{path}: not a JSON manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        raise UserInputError(f"{path}: not a {fmt} manifest: {hint}")
    return manifest


def load_split(root: Path, split: str) -> dict[str, np.ndarray]:
    """The arrays of one split, images memory-mapped read-only; shapes and dtypes checked against each other."""
    arrays = {}
    for kind, dtype in KINDS.items():
        path = array_path(root, split, kind)
        if not path.is_file():
            raise UserInputError(f"missing file {path}: the dataset folder is incomplete; build it again")
        try:
            arrays[kind] = np.load(path, mmap_mode="r" if kind == "images" else None, allow_pickle=False)
        except ValueError as exc:
            raise UserInputError(f"{path}: not a readable .npy array ({exc})") from None
        if arrays[kind].dtype != dtype:
            raise UserInputError(f"{path}: expected {np.dtype(dtype).name} values, found {arrays[kind].dtype}")
    n = len(arrays["images"])
    if arrays["images"].ndim != 3 or any(arrays[k].shape != (n,) for k in ("labels", "fonts")):
        raise UserInputError(f"{root}: the {split} arrays disagree in shape (images {arrays['images'].shape}, "
                             f"labels {arrays['labels'].shape}, fonts {arrays['fonts'].shape})")
    return arrays
