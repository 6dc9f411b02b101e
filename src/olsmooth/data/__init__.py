"""Datasets: embedded digits, Fashion-MNIST, CIFAR, ImageNet, image folders, list files, fine-grained sets."""

from .bundle import DatasetBundle
from .noise import inject_label_noise
from .registry import build_datasets, dataset_info, list_datasets

__all__ = ["DatasetBundle", "build_datasets", "dataset_info", "inject_label_noise", "list_datasets"]
