"""Fashion-MNIST from its four IDX files (Debian package dataset-fashion-mnist, or torchvision's raw folder)."""

from __future__ import annotations

from pathlib import Path

import torch

from ...errors import UserInputError
from ..datasets import LabelledDataset
from ..formats.idx import read_idx, read_idx_shape
from ..spec import BuildOptions, DatasetBundle, DatasetSpec
from ..transforms import array_preset

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"]
# Mean and std of the 60,000 training images' pixels scaled to [0, 1].
MEAN, STD = (0.2860,), (0.3530,)
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
LAYOUT = ("put the four IDX files (.gz or plain) in DATA_ROOT or DATA_ROOT/FashionMNIST/raw, install the Debian "
          "package dataset-fashion-mnist, or pass download=True")


def _find(root: Path, stem: str) -> Path | None:
    for folder in (root, root / "FashionMNIST" / "raw"):
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                return folder / name
    return None


def locate_files(data_root: Path | None, download: bool) -> dict[str, tuple[Path, Path]]:
    """Paths of (images, labels) per split, downloading with torchvision first when asked and needed."""
    root = data_root or DEFAULT_ROOT
    stems = [stem for pair in FILES.values() for stem in pair]
    if download and any(_find(root, stem) is None for stem in stems):
        from torchvision.datasets import FashionMNIST

        try:
            FashionMNIST(str(root), download=True)
        except (OSError, RuntimeError) as exc:
            raise UserInputError(f"downloading Fashion-MNIST into {root} failed: {exc}") from None
    missing = next((stem for stem in stems if _find(root, stem) is None), None)
    if missing is not None:
        raise UserInputError(f"missing Fashion-MNIST file {root / missing}.gz: {LAYOUT}")
    return {split: (_find(root, images), _find(root, labels)) for split, (images, labels) in FILES.items()}


def _check_pair(images: Path, labels: Path, n_images: int, n_labels: int) -> None:
    if n_images != n_labels:
        raise UserInputError(f"{images} holds {n_images} images but {labels} holds {n_labels} labels")


def load_split(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, list[int]]:
    """Images as an N×1×H×W uint8 tensor and labels in 0..9, validated against each other."""
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    _check_pair(images_path, labels_path, len(images), len(labels))
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(CLASS_NAMES):
        raise UserInputError(f"{labels_path}: labels must lie in 0..{len(CLASS_NAMES) - 1}")
    return torch.from_numpy(images).unsqueeze(1), labels.tolist()


def _build(opts: BuildOptions) -> DatasetBundle:
    paths = locate_files(opts.data_root, opts.download)
    (train_x, train_y), (test_x, test_y) = (load_split(*paths[split]) for split in ("train", "test"))
    preset = array_preset(train_x.shape[-1], opts.image_size, opts.channels, MEAN, STD, crop_and_flip=True,
                          input_norm=opts.input_norm)
    train = LabelledDataset(train_x, train_y, preset.train_transform(opts.augment))
    test = LabelledDataset(test_x, test_y, preset.test)
    return DatasetBundle.from_preset("fashion-mnist", preset, train, test, list(CLASS_NAMES))


def _info(data_root: Path | None, split: str | None) -> dict[str, int]:
    counts = {}
    for name, (images, labels) in locate_files(data_root, download=False).items():
        n_images, n_labels = read_idx_shape(images, ndim=3)[0], read_idx_shape(labels, ndim=1)[0]
        _check_pair(images, labels, n_images, n_labels)
        counts[name] = n_images
    return {**counts, "classes": len(CLASS_NAMES)}


SPEC = DatasetSpec("Fashion-MNIST, 60,000 / 10,000 real 28x28 grayscale images, 10 classes; crop + flip",
                   _build, _info, in_memory=True,
                   defaults=dict(model="small_cnn", epochs=10, batch_size=128, lr=0.05, weight_decay=5e-4))
