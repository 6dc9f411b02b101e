"""Datasets: embedded digits, Fashion-MNIST, CIFAR, ImageNet, image folders, list files, fine-grained sets.

Layout: `sources/` holds one module per dataset family, `formats/` the file readers (IDX, list files, archive
annotations); the modules here are the shared core (specs and bundles, the registry, transforms, the dataset
class, subsets, label noise and its class maps).
"""

from .datasets import LabelledDataset, Relabelled, WithIndex, dataset_labels
from .noise import NOISE_KINDS, NoiseSpec, NoisyLabels, instance_images, make_noisy_labels
from .noise_maps import load_noise_map
from .registry import (
    build_datasets,
    canonical_dataset_name,
    dataset_defaults,
    dataset_info,
    dataset_spec,
    list_datasets,
)
from .spec import AUGMENT_LEVELS, DatasetBundle, DatasetSpec
from .subsets import stratified_subset, training_subset

__all__ = ["AUGMENT_LEVELS", "NOISE_KINDS", "DatasetBundle", "DatasetSpec", "LabelledDataset", "NoiseSpec",
           "NoisyLabels",
           "Relabelled", "WithIndex", "build_datasets", "canonical_dataset_name", "dataset_defaults", "dataset_info",
           "dataset_labels", "dataset_spec", "instance_images", "list_datasets", "load_noise_map",
           "make_noisy_labels", "stratified_subset", "training_subset"]
