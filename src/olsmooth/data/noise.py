"""Label noise for robustness studies: six kinds, reproducible from a seed, with the realised transition matrix.

`make_noisy_labels` is the one entry point; `NoiseSpec.parse` reads KIND:RATE text into its canonical form. Every draw
comes from a `numpy.random.Generator` seeded by the caller's seed, so the global RNGs are neither read nor
advanced. The kinds, their formulas and the papers behind each convention are in docs/noise.md.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from torch.utils.data import Dataset, Subset

from ..errors import UserInputError
from ..noise_transition import SparseTransition
from .datasets import LabelledDataset, WithIndex
from .noise_maps import BUILTIN_MAPS, NoiseMap, cifar100_superclass_map, load_noise_map
from .registry import canonical_dataset_name

NOISE_KINDS = ("symmetric", "symmetric-any", "asymmetric", "asymmetric-superclass", "pairflip", "instance")
INSTANCE_FLIP_STD = 0.1
"""Standard deviation of the per-sample flip rates of `instance` noise (Xia et al. 2020)."""
MAX_PROJECTION_ENTRIES = 1 << 28
"""Largest K x d x K projection `instance` noise draws (1 GiB of float32); larger inputs must be downsampled."""


@dataclass(frozen=True, eq=False)
class NoisyLabels:
    """Noisy training labels next to the clean ones, with what produced them.

    `transition_pairs` is the realised transition as its (clean, noisy) pairs, linear in the samples at any K;
    `transition` its dense K x K form: [c, k] is the fraction of the samples of clean class c whose noisy label
    is k (rows sum to 1), the identity row for a class with no samples.
    """

    noisy: np.ndarray
    clean: np.ndarray
    kind: str
    rate: float
    rate_realised: float
    seed: int
    transition_pairs: SparseTransition

    @property
    def transition(self) -> np.ndarray:
        """The K x K float64 matrix, built from the pairs for K up to DENSE_MAX_CLASSES (else a UserInputError)."""
        return self.transition_pairs.dense()

    @property
    def corrupted(self) -> np.ndarray:
        """Boolean mask of the samples whose noisy label differs from the clean one."""
        return self.noisy != self.clean

    def to_json(self) -> dict[str, Any]:
        """The record a run folder keeps as noise.json: kind, requested and realised rate, seed, and the transition
        (`transition` rows up to DENSE_RECORD_MAX_CLASSES classes, `transition_sparse` pairs above)."""
        return {"kind": self.kind, "rate": self.rate, "rate_realised": self.rate_realised, "seed": self.seed,
                **self.transition_pairs.to_json()}


def _check_kind(kind: object) -> str:
    if kind not in NOISE_KINDS:
        raise UserInputError(f"unknown label-noise kind {kind!r}; use one of {', '.join(NOISE_KINDS)}")
    return str(kind)


def _check_rate(rate: object) -> float:
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0.0 <= float(rate) < 1.0:
        raise UserInputError(f"label-noise rate must be a number in [0, 1), got {rate!r}")
    return float(rate)


@dataclass(frozen=True)
class NoiseSpec:
    """Label noise as a configuration holds it: a kind of NOISE_KINDS and a rate in [0, 1).

    `parse` is the one reader of KIND:RATE text (command line, recipe, study file, config.yaml) and `str()` its
    canonical text, which the configuration stores: 'Symmetric:0.40' and 'symmetric:.4' are one setting,
    'symmetric:0.4', in every run folder, study cell and report group.
    """

    kind: str
    rate: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", _check_kind(self.kind))
        object.__setattr__(self, "rate", _check_rate(self.rate))

    @classmethod
    def parse(cls, text: object) -> NoiseSpec:
        """KIND:RATE ('symmetric:0.4'; the kind in any case, blanks around either part ignored); a NoiseSpec
        passes through. Anything else is a one-line UserInputError."""
        if isinstance(text, NoiseSpec):
            return text
        if not isinstance(text, str):
            raise UserInputError(f"label noise must be KIND:RATE text (e.g. symmetric:0.4), got {text!r}")
        kind, colon, rate_text = text.strip().rpartition(":")
        if not colon or not kind.strip():
            raise UserInputError(f"label noise must be KIND:RATE (e.g. symmetric:0.4), got {text!r}")
        try:
            rate = float(rate_text)
        except ValueError:
            raise UserInputError(f"label-noise rate must be a number in [0, 1), got {rate_text.strip()!r}") from None
        return cls(kind.strip().lower(), rate)

    def __str__(self) -> str:
        return f"{self.kind}:{self.rate!r}"


def _uniform_flips(clean: np.ndarray, rate: float, num_classes: int, rng: np.random.Generator,
                   other_classes: bool) -> np.ndarray:
    """round(rate N) samples chosen at random get a label uniform over the other K - 1 classes (or over all K)."""
    noisy = clean.copy()
    chosen = rng.choice(len(clean), size=round(rate * len(clean)), replace=False)
    if other_classes:
        noisy[chosen] = (clean[chosen] + rng.integers(1, num_classes, size=len(chosen))) % num_classes
    else:
        noisy[chosen] = rng.integers(0, num_classes, size=len(chosen))
    return noisy


def _mapped_flips(clean: np.ndarray, rate: float, mapping: NoiseMap, rng: np.random.Generator) -> np.ndarray:
    """Exactly round(rate n_c) samples of each mapped source class c, chosen at random, take the label mapping[c]."""
    noisy = clean.copy()
    for source in sorted(mapping):
        members = np.flatnonzero(clean == source)
        noisy[rng.choice(members, size=round(rate * len(members)), replace=False)] = mapping[source]
    return noisy


def truncated_normal(rng: np.random.Generator, mean: float, std: float, size: int, low: float = 0.0,
                     high: float = 1.0) -> np.ndarray:
    """`size` draws of N(mean, std^2) conditioned on [low, high], by redrawing the ones that fall outside."""
    values = rng.normal(mean, std, size=size)
    outside = np.flatnonzero((values < low) | (values > high))
    while outside.size:
        values[outside] = rng.normal(mean, std, size=outside.size)
        outside = outside[(values[outside] < low) | (values[outside] > high)]
    return values


def instance_features(images: Any) -> np.ndarray:
    """(N, d) float32 rows of instance noise: each image flattened, the mean image subtracted, scaled to unit length
    (an image equal to the mean stays zero)."""
    if hasattr(images, "detach"):  # a torch tensor
        images = images.detach().cpu().numpy()
    try:
        flat = np.array(images, dtype=np.float32).reshape(len(images), -1)  # a copy: centred in place below
    except (TypeError, ValueError):
        raise UserInputError("instance noise needs the images as one numeric (N, ...) array or tensor") from None
    if not np.isfinite(flat).all():
        raise UserInputError("instance noise needs finite image values")
    flat -= flat.mean(axis=0, dtype=np.float64).astype(np.float32)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    flat /= np.where(norms > 0, norms, 1.0).astype(np.float32)
    return flat


def instance_images(dataset: Dataset) -> Any:
    """The raw images of an in-memory training set, in sample order (through Subset and WithIndex), for instance
    noise: a LabelledDataset's tensor `items` or a torchvision-style `data` array. Sets read from files: an error."""
    if isinstance(dataset, Subset):
        return instance_images(dataset.dataset)[np.asarray(dataset.indices, dtype=np.int64)]
    if isinstance(dataset, WithIndex):
        return instance_images(dataset.dataset)
    images = dataset.items if isinstance(dataset, LabelledDataset) and dataset.load is None else None
    images = getattr(dataset, "data", None) if images is None else images
    if images is None or isinstance(images, (list, tuple)) or len(images) != len(dataset):
        raise UserInputError("instance noise needs a training set held in memory as one image array "
                             "(digits, fashion-mnist, cifar10, cifar100), not images read from files")
    return images


def instance_flip_probabilities(features: np.ndarray, labels: np.ndarray, flip_rates: np.ndarray,
                                projection: np.ndarray) -> np.ndarray:
    """(N, K) noisy-label distribution of each sample (Xia et al. 2020): with scores s = x_i W[y_i] (features
    (N, d), projection (K, d, K)), p_i = q_i softmax(s over the classes other than y_i) and p_i[y_i] = 1 - q_i."""
    num_samples, num_classes = len(labels), projection.shape[-1]
    scores = np.empty((num_samples, num_classes), dtype=np.float64)
    for label in np.unique(labels):  # one product per clean class, vectorised over its samples
        members = labels == label
        scores[members] = features[members] @ projection[label]
    rows = np.arange(num_samples)
    scores[rows, labels] = -np.inf
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    probabilities = flip_rates[:, None] * weights / weights.sum(axis=1, keepdims=True)
    probabilities[rows, labels] = 1.0 - flip_rates
    return probabilities


def sample_instance_labels(features: np.ndarray, labels: np.ndarray, flip_rates: np.ndarray, projection: np.ndarray,
                           rng: np.random.Generator) -> np.ndarray:
    """One noisy label per sample from instance_flip_probabilities, by inverse CDF on one uniform draw each."""
    cumulative = np.cumsum(instance_flip_probabilities(features, labels, flip_rates, projection), axis=1)
    cumulative[:, -1] = 1.0
    return (cumulative <= rng.random(len(labels))[:, None]).sum(axis=1).astype(np.int64)


def _instance_flips(clean: np.ndarray, rate: float, num_classes: int, rng: np.random.Generator,
                    images: Any) -> np.ndarray:
    """Instance-dependent noise: flip rates q ~ N(rate, 0.1^2) on [0, 1], then a projection W ~ N(0, 1) of shape
    (K, d, K), then one draw per sample (in this order from `rng`)."""
    if images is None:
        raise UserInputError("instance noise needs the training images (images=...)")
    features = instance_features(images)
    if len(features) != len(clean):
        raise UserInputError(f"instance noise got {len(features)} images for {len(clean)} labels")
    if num_classes * num_classes * features.shape[1] > MAX_PROJECTION_ENTRIES:
        raise UserInputError(f"instance noise on {features.shape[1]} values per image and {num_classes} classes "
                             f"needs a projection over 1 GiB; downsample the images")
    flip_rates = truncated_normal(rng, rate, INSTANCE_FLIP_STD, len(clean))
    projection = rng.standard_normal((num_classes, features.shape[1], num_classes), dtype=np.float32)
    return sample_instance_labels(features, clean, flip_rates, projection, rng)


def check_class_map(kind: str, dataset: str | None, has_noise_map: bool) -> None:
    """The rules of the asymmetric kinds that need no labels, so that a configuration can be checked before its
    data is built: asymmetric-superclass is CIFAR-100's and takes no noise map; asymmetric takes a noise map, or
    the built-in map of `dataset` (a canonical name; None for unnamed classes)."""
    if kind == "asymmetric-superclass":
        if has_noise_map:
            raise UserInputError("asymmetric-superclass noise uses CIFAR-100's coarse classes and takes no noise map")
        if dataset != "cifar100":
            raise UserInputError(f"asymmetric-superclass noise is defined for cifar100 (its 20 coarse classes) only, "
                                 f"not for {dataset or 'unnamed classes'}")
    if kind == "asymmetric" and not has_noise_map and dataset not in BUILTIN_MAPS:
        raise UserInputError(f"asymmetric noise has no built-in class map for {dataset or 'unnamed classes'} "
                             f"(built in: {', '.join(BUILTIN_MAPS)}); give a noise map, a JSON file "
                             f"{{\"3\": 5, ...}} of class -> class")


def _asymmetric_map(kind: str, num_classes: int, noise_map: Mapping[object, object] | str | os.PathLike[str] | None,
                    dataset: str | None) -> NoiseMap:
    """The class map of `asymmetric` (a user's map, else the dataset's built-in) or `asymmetric-superclass`."""
    check_class_map(kind, dataset, noise_map is not None)
    if kind == "asymmetric-superclass":
        if num_classes != 100:
            raise UserInputError(f"asymmetric-superclass noise is defined for cifar100 (its 20 coarse classes) only, "
                                 f"not for {num_classes} classes")
        return cifar100_superclass_map()
    if noise_map is not None:
        return load_noise_map(noise_map, num_classes)
    map_classes, mapping = BUILTIN_MAPS[dataset]
    if num_classes != map_classes:
        raise UserInputError(f"the {dataset} noise map is for {map_classes} classes, the labels have {num_classes}")
    return dict(mapping)


def _check_labels(labels: Sequence[int] | np.ndarray, num_classes: int) -> np.ndarray:
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 2:
        raise UserInputError(f"label noise needs at least 2 classes, got {num_classes!r}")
    if hasattr(labels, "detach"):  # a torch tensor
        labels = labels.detach().cpu().numpy()
    clean = np.asarray(labels)
    if clean.ndim != 1 or not (clean.size == 0 or np.issubdtype(clean.dtype, np.integer)):
        raise UserInputError("label noise needs a 1-D sequence of integer class indices")
    clean = clean.astype(np.int64)
    if clean.size and not 0 <= clean.min() <= clean.max() < num_classes:
        raise UserInputError(f"labels must lie in 0..{num_classes - 1} for label noise")
    return clean


def make_noisy_labels(labels: Sequence[int] | np.ndarray, kind: str, rate: float, seed: int, num_classes: int, *,
                      images: Any = None, noise_map: Mapping[object, object] | str | os.PathLike[str] | None = None,
                      dataset: str | None = None) -> NoisyLabels:
    """Noisy copy of `labels` of the given kind at the requested rate, reproducible from `seed`.

    symmetric: exactly round(rate N) random samples get a label uniform over the other K - 1 classes;
    symmetric-any: round(rate N) random samples get a label uniform over all K (realised rate ~ rate (K-1)/K);
    asymmetric: exactly round(rate n_c) samples of each mapped class c take its look-alike (`noise_map`, a dict or
    a JSON file, else the built-in map of `dataset`); asymmetric-superclass: the same with the next fine class of
    the CIFAR-100 coarse class; pairflip: the same with c -> c + 1 mod K; instance: Xia et al. 2020, needs
    `images` (N, ...). `dataset` is any spelling of a registered dataset name. Bad input: UserInputError.
    """
    kind, rate = _check_kind(kind), _check_rate(rate)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise UserInputError(f"label-noise seed must be a non-negative integer, got {seed!r}")
    clean = _check_labels(labels, num_classes)
    if noise_map is not None and kind != "asymmetric":
        raise UserInputError(f"a noise map applies to asymmetric noise only, not to {kind}")
    if dataset is not None:
        dataset = canonical_dataset_name(dataset)
    rng = np.random.default_rng(int(seed))
    if kind in ("symmetric", "symmetric-any"):
        noisy = _uniform_flips(clean, rate, num_classes, rng, other_classes=kind == "symmetric")
    elif kind == "pairflip":
        noisy = _mapped_flips(clean, rate, {c: (c + 1) % num_classes for c in range(num_classes)}, rng)
    elif kind == "instance":
        noisy = _instance_flips(clean, rate, num_classes, rng, images)
    else:
        noisy = _mapped_flips(clean, rate, _asymmetric_map(kind, num_classes, noise_map, dataset), rng)
    realised = float(np.mean(noisy != clean)) if clean.size else 0.0
    return NoisyLabels(noisy=noisy, clean=clean, kind=kind, rate=rate, rate_realised=realised, seed=int(seed),
                       transition_pairs=SparseTransition.from_labels(clean, noisy, num_classes))
