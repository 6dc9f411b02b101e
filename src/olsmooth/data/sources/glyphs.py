"""Printed characters rendered from typefaces (`olsmooth build-dataset glyphs`), read from their array folder:
train on some design groups' faces, test on unseen ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import UserInputError
from ..datasets import LabelledDataset
from ..formats.array_folder import load_split, read_manifest
from ..glyphs.build import FORMAT
from ..paths import require_root
from ..spec import BuildOptions, DatasetBundle, DatasetSpec
from ..transforms import array_preset

HINT = "build one with `olsmooth build-dataset glyphs --out DIR` (docs/datasets.md, glyphs)"


class ArrayImages:
    """Images of an N x H x W uint8 array (memory-mapped) as 1 x H x W uint8 tensors, read on access."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.images[index])).unsqueeze(0)


def _manifest(data_root: Path | None) -> tuple[Path, dict[str, Any]]:
    root = require_root(data_root, "glyphs", HINT)
    return root, read_manifest(root, FORMAT, HINT)


def _build(opts: BuildOptions) -> DatasetBundle:
    root, manifest = _manifest(opts.data_root)
    image = manifest["image"]
    preset = array_preset(image["size"], opts.image_size, opts.channels, (image["mean"],), (image["std"],),
                          crop_and_flip=False, input_norm=opts.input_norm)
    splits = {split: load_split(root, split) for split in ("train", "test")}
    classes = list(manifest["charset"]["chars"])
    for split, arrays in splits.items():
        labels = arrays["labels"]
        if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(classes):
            raise UserInputError(f"{root}: {split} labels must lie in 0..{len(classes) - 1}")
    train = LabelledDataset(ArrayImages(splits["train"]["images"]), splits["train"]["labels"],
                            preset.train_transform(opts.augment))
    test = LabelledDataset(ArrayImages(splits["test"]["images"]), splits["test"]["labels"], preset.test)
    return DatasetBundle.from_preset("glyphs", preset, train, test, classes)


def _info(data_root: Path | None, split: str | None) -> dict[str, int]:
    _, manifest = _manifest(data_root)
    counts = manifest["counts"]
    return {"train": counts["train"]["images"], "test": counts["test"]["images"],
            "classes": manifest["charset"]["classes"],
            "train_faces": counts["train"]["faces"], "test_faces": counts["test"]["faces"],
            "train_groups": counts["train"]["groups"], "test_groups": counts["test"]["groups"]}


SPEC = DatasetSpec("printed characters rendered from typefaces (olsmooth build-dataset glyphs), test fonts unseen "
                   "designs; needs data_root", _build, _info, in_memory=True,
                   defaults=dict(model="small_cnn", epochs=15, batch_size=128, lr=0.05, weight_decay=5e-4))
