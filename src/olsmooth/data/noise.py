"""Label-noise injection for robustness studies: symmetric or pair-flip, at an exact rate, from a seed."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import UserInputError

NOISE_KINDS = ("symmetric", "pair")


def inject_label_noise(labels: Sequence[int], num_classes: int, rate: float, kind: str = "symmetric",
                       seed: int = 0) -> np.ndarray:
    """Noisy copy of labels: exactly round(rate * N) samples, chosen at random, get a wrong label.

    symmetric: the new label is drawn uniformly from the other K - 1 classes;
    pair: label y becomes (y + 1) mod K.
    The draw uses its own generator seeded by `seed`, so the global RNG neither affects it nor is consumed.
    """
    if kind not in NOISE_KINDS:
        raise UserInputError(f"unknown label-noise kind {kind!r}; use one of {', '.join(NOISE_KINDS)}")
    if not 0.0 <= rate <= 1.0:
        raise UserInputError(f"label-noise rate must lie in [0, 1], got {rate}")
    if num_classes < 2:
        raise UserInputError(f"label noise needs at least 2 classes, got {num_classes}")
    clean = np.asarray(labels, dtype=np.int64)
    if clean.size and not 0 <= clean.min() <= clean.max() < num_classes:
        raise UserInputError(f"labels must lie in 0..{num_classes - 1} for label noise")
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(clean), size=round(rate * len(clean)), replace=False)
    shift = rng.integers(1, num_classes, size=len(flipped)) if kind == "symmetric" else 1
    noisy = clean.copy()
    noisy[flipped] = (clean[flipped] + shift) % num_classes
    return noisy
