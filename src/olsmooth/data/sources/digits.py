"""The embedded default: scikit-learn's 1,797 real 8x8 handwritten digits, with a fixed stratified split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..datasets import LabelledDataset
from ..spec import BuildOptions, DatasetBundle, DatasetSpec
from ..transforms import array_preset

TEST_EVERY = 5
# Mean and std of the training split's pixels scaled to [0, 1].
MEAN, STD = (0.3051,), (0.3762,)


def split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices: within each class, in dataset order, every fifth image (positions 4, 9, ...) is test.

    No random numbers are drawn, so the split never depends on a seed or a library's RNG; 1,442 / 355 images.
    """
    position = np.zeros(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        position[members] = np.arange(len(members))
    is_test = position % TEST_EVERY == TEST_EVERY - 1
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def _load() -> tuple[torch.Tensor, np.ndarray]:
    """Images N×1×8×8 as float32 in [0, 1] (pixel values 0..16 divided by 16) and labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1), digits.target.astype(np.int64)


def _build(opts: BuildOptions) -> DatasetBundle:
    images, labels = _load()
    train_idx, test_idx = split_indices(labels)
    preset = array_preset(8, opts.image_size, opts.channels, MEAN, STD, crop_and_flip=False,
                          input_norm=opts.input_norm)
    train = LabelledDataset(images[train_idx], labels[train_idx].tolist(), preset.train_transform(opts.augment))
    test = LabelledDataset(images[test_idx], labels[test_idx].tolist(), preset.test)
    return DatasetBundle.from_preset("digits", preset, train, test, [str(i) for i in range(10)])


def _info(data_root: Path | None, split: str | None) -> dict[str, int]:
    train_idx, test_idx = split_indices(_load()[1])
    return {"train": len(train_idx), "test": len(test_idx), "classes": 10}


SPEC = DatasetSpec("scikit-learn digits, 1,797 real 8x8 grayscale images, 10 classes, embedded (default)",
                   _build, _info, in_memory=True,
                   defaults=dict(model="small_cnn", epochs=12, batch_size=64, lr=0.05, weight_decay=5e-4))
