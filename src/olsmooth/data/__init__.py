"""Datasets: embedded digits, Fashion-MNIST, CIFAR, ImageNet, image folders, list files, fine-grained sets.

Layout: `sources/` holds one module per dataset family, `formats/` the file readers (IDX, list files, archive
annotations); the modules here are the shared core (specs and bundles, the registry, transforms, the dataset
class, subsets, label noise).
"""

from .datasets import LabelledDataset, WithIndex, dataset_labels
from .noise import inject_label_noise
from .registry import (
    build_datasets,
    canonical_dataset_name,
    dataset_defaults,
    dataset_info,
    dataset_spec,
    list_datasets,
)
from .spec import AUGMENT_LEVELS, DatasetBundle, DatasetSpec
from .subsets import stratified_subset

__all__ = ["AUGMENT_LEVELS", "DatasetBundle", "DatasetSpec", "LabelledDataset", "WithIndex", "build_datasets",
           "canonical_dataset_name", "dataset_defaults", "dataset_info", "dataset_labels", "dataset_spec",
           "inject_label_noise", "list_datasets", "stratified_subset"]
