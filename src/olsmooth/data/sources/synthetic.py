"""Many-class synthetic data: 8x8 single-channel "images" drawn around class prototypes, for OLS at large K.

Classes come in families of ten whose prototypes share a base vector, so each class has nine similar ones (the
structure OLS's soft labels should find). Every sample is its prototype plus Gaussian noise, from a fixed seed.
Training samples draw their class uniformly; test samples draw theirs from the classes the training set holds,
so the test figures measure what a model could learn. Sizes stay small at any K, so a 100,000-class run takes
minutes on a CPU: it exercises the toolkit at large K, it is not a benchmark of accuracy.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..datasets import LabelledDataset
from ..spec import BuildOptions, DatasetBundle, DatasetSpec
from ..transforms import array_preset

FAMILY = 10  # classes per family of similar classes
NOISE = 0.9  # per-pixel noise of a sample around its prototype
FAMILY_SPREAD = 0.5  # a class prototype around its family's base vector
SEED = 0
CLASS_COUNTS = {"synthetic-1k": 1_000, "synthetic-10k": 10_000, "synthetic-100k": 100_000}
TRAIN_SAMPLES, TEST_SAMPLES = 20_480, 2_048


def make_split(num_classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train images, train labels, test images, test labels), images N x 1 x 8 x 8 float32; deterministic."""
    g = torch.Generator().manual_seed(SEED)
    families = -(-num_classes // FAMILY)
    base = torch.randn(families, 64, generator=g)
    prototypes = base.repeat_interleave(FAMILY, dim=0)[:num_classes] + FAMILY_SPREAD * torch.randn(
        num_classes, 64, generator=g)
    train_labels = torch.randint(0, num_classes, (TRAIN_SAMPLES,), generator=g)
    test_labels = train_labels[torch.randint(0, TRAIN_SAMPLES, (TEST_SAMPLES,), generator=g)]

    def draw(labels: torch.Tensor) -> torch.Tensor:
        return (prototypes[labels] + NOISE * torch.randn(labels.numel(), 64, generator=g)).view(-1, 1, 8, 8)

    return draw(train_labels), train_labels, draw(test_labels), test_labels


def _spec(name: str, num_classes: int) -> DatasetSpec:
    def build(opts: BuildOptions) -> DatasetBundle:
        train_x, train_y, test_x, test_y = make_split(num_classes)
        preset = array_preset(8, opts.image_size, opts.channels, (0.0,), (1.0,), crop_and_flip=False,
                              input_norm=opts.input_norm)
        train = LabelledDataset(train_x, train_y.tolist(), preset.train_transform(opts.augment))
        test = LabelledDataset(test_x, test_y.tolist(), preset.test)
        width = len(str(num_classes - 1))
        return DatasetBundle.from_preset(name, preset, train, test, [f"c{i:0{width}d}" for i in range(num_classes)])

    def info(data_root: Path | None, split: str | None) -> dict[str, int]:
        return {"train": TRAIN_SAMPLES, "test": TEST_SAMPLES, "classes": num_classes}

    return DatasetSpec(f"synthetic 8x8 features, {num_classes:,} classes in families of {FAMILY}, "
                       f"{TRAIN_SAMPLES:,} / {TEST_SAMPLES:,} samples, embedded (for many-class runs)",
                       build, info, in_memory=True,
                       defaults=dict(model="linear", epochs=2, batch_size=256, lr=0.5, weight_decay=0.0))


SPECS = {name: _spec(name, k) for name, k in CLASS_COUNTS.items()}
