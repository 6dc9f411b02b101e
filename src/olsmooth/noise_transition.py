"""The realised transition of label noise kept as its (clean, noisy) pairs, so memory is linear in the samples.

It lives in a module that imports only numpy and the error type, so that the data package (which draws the noise),
the correction losses (which read a noise.json record) and the engine share one reader and one writer of the
record without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import UserInputError

DENSE_RECORD_MAX_CLASSES = 200
"""noise.json keeps the K x K `transition` (nested lists) up to this K (the heatmap limit), above it the pairs."""
DENSE_MAX_CLASSES = 4096
"""The largest K whose dense K x K matrix is built from the pairs (64 MiB of float32): what a correction loss uses."""


@dataclass(frozen=True, eq=False)
class SparseTransition:
    """T[clean[i], noisy[i]] = fraction[i] for each distinct pair that occurs (sorted by clean, then noisy), every
    other entry 0; a class without samples has no pair and stands for the identity row, so every row sums to 1."""

    classes: int
    clean: np.ndarray
    noisy: np.ndarray
    fraction: np.ndarray

    @classmethod
    def from_labels(cls, clean: np.ndarray, noisy: np.ndarray, num_classes: int) -> SparseTransition:
        """Count each (clean, noisy) pair and divide by the size of its clean class: at most min(N, K^2) entries."""
        pairs, counts = np.unique(clean.astype(np.int64) * num_classes + noisy, return_counts=True)
        rows = pairs // num_classes
        totals = np.bincount(clean, minlength=num_classes)
        return cls(int(num_classes), rows, pairs % num_classes, counts / totals[rows])

    @classmethod
    def from_record(cls, record: Any, where: str) -> SparseTransition:
        """The `transition_sparse` object of noise.json; a one-line UserInputError naming `where` when malformed."""
        try:
            classes = record["classes"]
            clean, noisy = (np.asarray(record[key], dtype=np.int64) for key in ("clean", "noisy"))
            fraction = np.asarray(record["fraction"], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            raise UserInputError(f"{where}: transition_sparse must hold classes, clean, noisy and fraction "
                                 f"(lists of equal length)") from None
        if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
            raise UserInputError(f"{where}: transition_sparse classes must be a positive integer, got {classes!r}")
        if not clean.ndim == noisy.ndim == fraction.ndim == 1 or not len(clean) == len(noisy) == len(fraction):
            raise UserInputError(f"{where}: transition_sparse clean, noisy and fraction must be lists of one length")
        if clean.size and not 0 <= min(clean.min(), noisy.min()) <= max(clean.max(), noisy.max()) < classes:
            raise UserInputError(f"{where}: transition_sparse classes must lie in 0..{classes - 1}")
        return cls(classes, clean, noisy, fraction)

    def dense(self, max_classes: int = DENSE_MAX_CLASSES) -> np.ndarray:
        """The K x K float64 matrix; a one-line UserInputError above `max_classes` instead of allocating K^2."""
        K = self.classes
        if K > max_classes:
            raise UserInputError(f"a dense {K:,} x {K:,} transition matrix would take {8 * K * K / 2**30:.1f} GiB; "
                                 f"it is built for at most {max_classes:,} classes")
        matrix = np.eye(K)
        matrix[self.clean] = 0.0  # rows of classes with samples: only their pairs
        matrix[self.clean, self.noisy] = self.fraction
        return matrix

    def to_json(self) -> dict[str, Any]:
        """noise.json's field for it: `transition` (rows) up to DENSE_RECORD_MAX_CLASSES, else `transition_sparse`."""
        if self.classes <= DENSE_RECORD_MAX_CLASSES:
            return {"transition": self.dense().tolist()}
        return {"transition_sparse": {"classes": self.classes, "clean": self.clean.tolist(),
                                      "noisy": self.noisy.tolist(), "fraction": self.fraction.tolist()}}


def dense_from_record(record: dict[str, Any], where: str, max_classes: int = DENSE_MAX_CLASSES) -> np.ndarray:
    """The K x K matrix of a noise.json record, from its `transition` rows or its `transition_sparse` pairs (built
    up to `max_classes`); a one-line UserInputError naming `where` when it holds neither."""
    if "transition" in record:
        return np.asarray(record["transition"], dtype=np.float64)
    if "transition_sparse" in record:
        pairs = SparseTransition.from_record(record["transition_sparse"], where)
        try:
            return pairs.dense(max_classes)
        except UserInputError as err:
            raise UserInputError(f"{where}: {err}") from None
    raise UserInputError(f"{where}: a JSON object must hold the matrix under 'transition' or 'transition_sparse'")
