"""A run's label noise: its clean and noisy training labels, and how much of the noise a model memorises.

The labels are drawn once (`--noise KIND:RATE`, `--noise-seed`) on the training set after --train-subset and
the validation split, and saved in last.pt, so a resumed run reads them instead of drawing them again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..data import dataset_labels, instance_images, make_noisy_labels
from ..losses.topk import sparse_entries
from .config import TrainConfig
from .distributed import DistInfo, all_reduce_sum
from .evaluate import autocast_context


@dataclass
class TrainingNoise:
    """Clean and noisy labels of the training set (in its order) and noise.json's description of them."""

    clean: np.ndarray
    noisy: np.ndarray
    description: dict[str, Any]

    @classmethod
    def draw(cls, cfg: TrainConfig, train: Dataset, num_classes: int) -> TrainingNoise:
        """The noise of `cfg.noise` on `train`'s labels, from --noise-seed (default: the run's seed)."""
        spec = cfg.noise_spec
        clean = dataset_labels(train)
        drawn = make_noisy_labels(clean, spec.kind, spec.rate, cfg.seed if cfg.noise_seed is None else cfg.noise_seed,
                                  num_classes, images=instance_images(train) if spec.kind == "instance" else None,
                                  noise_map=cfg.noise_map, dataset=cfg.dataset)
        return cls(drawn.clean, drawn.noisy, drawn.to_json())

    @classmethod
    def from_payload(cls, saved: dict[str, Any]) -> TrainingNoise:
        """What `payload()` put in a checkpoint."""
        return cls(saved["clean"].numpy(), saved["noisy"].numpy(), saved["description"])

    def payload(self) -> dict[str, Any]:
        """For last.pt: the labels as tensors, and the description."""
        return {"clean": torch.from_numpy(self.clean), "noisy": torch.from_numpy(self.noisy),
                "description": self.description}

    @property
    def changed(self) -> np.ndarray:
        """Positions in the training set of the samples whose label the noise changed."""
        return np.flatnonzero(self.clean != self.noisy)

    def codes(self, num_classes: int) -> np.ndarray:
        """clean * K + noisy of the changed samples: one label that carries both, for a loader."""
        changed = self.changed
        return self.clean[changed] * num_classes + self.noisy[changed]

    def soft_label_mass(self, soft_labels: Tensor | tuple[Tensor, Tensor, Tensor]) -> dict[str, float]:
        """`ols_noise_mass`: the mean mass row y of the soft labels puts on the other classes the samples labelled
        y truly come from; `noise_source_mass`: that true share, 1 - P(clean = y | noisy = y), averaged over y.

        `soft_labels`: the (K, K) matrix, or top-k OLS's sparse rows (index, value, residual). Either is read only
        at the (noisy, clean) pairs of the training set, so memory is O(N) at any K, and both give the same
        figure for the same rows."""
        sparse = isinstance(soft_labels, tuple)
        K = (soft_labels[0] if sparse else soft_labels).size(0)
        rows, cols, counts = self._source_pairs(K)
        at = torch.from_numpy(rows), torch.from_numpy(cols)
        if sparse:
            entries = sparse_entries(*(t.detach().cpu() for t in soft_labels), *at)
        else:
            entries = soft_labels.detach().cpu()[at]
        mass = np.bincount(rows, weights=entries.double().numpy(), minlength=K)
        return {"ols_noise_mass": float(mass.mean()), "noise_source_mass": self._source_share(rows, counts, K)}

    def noise_source_mass(self, num_classes: int) -> float:
        """The true share of a noisy label's samples that come from other classes, 1 - P(clean = y | noisy = y),
        averaged over the classes y."""
        rows, _, counts = self._source_pairs(num_classes)
        return self._source_share(rows, counts, num_classes)

    def _source_share(self, rows: np.ndarray, counts: np.ndarray, num_classes: int) -> float:
        """`noise_source_mass` from the pairs `_source_pairs` gave (their rows and sample counts)."""
        labelled = np.maximum(np.bincount(self.noisy, minlength=num_classes), 1)
        return float(np.bincount(rows, weights=counts / labelled[rows], minlength=num_classes).mean())

    def _source_pairs(self, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(noisy label y, clean class j != y, number of training samples) for every pair that occurs."""
        K = num_classes
        pairs, counts = np.unique(self.noisy.astype(np.int64) * K + self.clean, return_counts=True)
        rows, cols = pairs // K, pairs % K  # row y, a class its samples truly come from
        off = rows != cols
        return rows[off], cols[off], counts[off]


@torch.no_grad()
def fit_on_corrupted(model: nn.Module, loader: DataLoader, num_classes: int, dist: DistInfo, amp: str = "none",
                     channels_last: bool = False) -> dict[str, float]:
    """On the training samples with a corrupted label (`loader` yields their `codes`): the % the model predicts
    as their clean label (`noisy_fit_clean`) and as their noisy label (`noisy_fit_noisy`, memorised noise),
    summed over processes."""
    model.eval()
    counts = torch.zeros(3, dtype=torch.float64, device=dist.device)  # samples, as clean, as noisy
    for images, codes in loader:
        images, codes = images.to(dist.device), codes.to(dist.device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast_context(dist.device, amp):
            predicted = model(images).argmax(dim=1)
        counts += torch.stack([torch.tensor(float(len(codes)), device=counts.device),
                               (predicted == codes // num_classes).sum(),
                               (predicted == codes % num_classes).sum()]).double()
    n, as_clean, as_noisy = all_reduce_sum(counts).tolist()
    return {"noisy_fit_clean": 100.0 * as_clean / max(n, 1.0), "noisy_fit_noisy": 100.0 * as_noisy / max(n, 1.0)}
