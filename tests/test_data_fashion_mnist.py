"""The IDX reader on hand-written bytes, Fashion-MNIST on fake and (when installed) real files."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from olsmooth.data import build_datasets, dataset_info
from olsmooth.data.formats.idx import read_idx, read_idx_shape
from olsmooth.errors import UserInputError

REAL_ROOT = Path("/usr/share/datasets/fashion-mnist")
REAL_FILES = [REAL_ROOT / f"{p}-{k}-ubyte.gz" for p in ("train", "t10k") for k in ("images-idx3", "labels-idx1")]


def _ubyte_file(path: Path, shape: tuple, values: bytes, compress: bool = False) -> Path:
    """IDX bytes written by hand: 0, 0, type 0x08, ndim, big-endian dims, data."""
    raw = bytes([0, 0, 0x08, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + values
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip_ubyte(tmp_path, compress):
    path = _ubyte_file(tmp_path / "a.idx", (2, 2, 3), bytes(range(12)), compress)
    array = read_idx(path, ndim=3)
    assert array.dtype == np.uint8 and array.tolist() == [[[0, 1, 2], [3, 4, 5]], [[6, 7, 8], [9, 10, 11]]]
    assert read_idx_shape(path) == (2, 2, 3)


def test_idx_big_endian_int16(tmp_path):
    path = tmp_path / "b.idx"
    path.write_bytes(b"\x00\x00\x0b\x01" + b"\x00\x00\x00\x03" + b"\xff\xfe" + b"\x01\x2c" + b"\x00\x07")
    assert read_idx(path).tolist() == [-2, 300, 7]


@pytest.mark.parametrize("content, needle", [
    (b"\x01\x02\x08\x01\x00\x00\x00\x01\x05", "bad magic number"),
    (b"\x00\x00\x42\x01\x00\x00\x00\x01\x05", "bad magic number"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x04\x05", "header"),
    (b"\x00\x00\x08\x02\x00\x00\x00\x01", "header ends early"),
])
def test_idx_errors_name_the_file(tmp_path, content, needle):
    path = tmp_path / "broken-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(UserInputError, match=needle) as info:
        read_idx(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_idx_wrong_rank_is_reported(tmp_path):
    path = _ubyte_file(tmp_path / "c.idx", (4,), bytes(4))
    with pytest.raises(UserInputError, match="3 dimension"):
        read_idx(path, ndim=3)


def _fake_fashion_root(root: Path) -> Path:
    """torchvision's raw layout: train as plain files, test gzipped; 3 train and 2 test 28x28 images."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    train_pixels = bytes([0] * 784 + [255] * 784 + [51] * 784)
    _ubyte_file(raw / "train-images-idx3-ubyte", (3, 28, 28), train_pixels)
    _ubyte_file(raw / "train-labels-idx1-ubyte", (3,), bytes([9, 0, 4]))
    _ubyte_file(raw / "t10k-images-idx3-ubyte.gz", (2, 28, 28), bytes(range(256)) * 6 + bytes(32), compress=True)
    _ubyte_file(raw / "t10k-labels-idx1-ubyte.gz", (2,), bytes([1, 8]), compress=True)
    return root


def test_fake_fashion_mnist_tree(tmp_path):
    root = _fake_fashion_root(tmp_path)
    assert dataset_info("fashion-mnist", root) == {"train": 3, "test": 2, "classes": 10}
    bundle = build_datasets("fashion-mnist", root, augment="none")
    assert [bundle.train[i][1] for i in range(3)] == [9, 0, 4]
    assert bundle.class_names[9] == "Ankle boot" and bundle.class_names[0] == "T-shirt/top"
    x, _ = bundle.train[1]
    assert x.shape == (1, 28, 28)
    assert torch.allclose(x, torch.full((1, 28, 28), (1.0 - 0.2860) / 0.3530))
    assert torch.allclose(bundle.train[2][0], torch.full((1, 28, 28), (0.2 - 0.2860) / 0.3530))
    expected = (torch.arange(784, dtype=torch.float32) % 256 / 255).view(1, 28, 28)
    assert torch.allclose(bundle.test[0][0], (expected - 0.2860) / 0.3530, atol=1e-6)
    big = build_datasets("fashion-mnist", root, channels=3, image_size=64)
    assert big.train[0][0].shape == (3, 64, 64) and big.mean == (0.2860,) * 3


def test_mismatched_counts_are_reported(tmp_path):
    root = _fake_fashion_root(tmp_path)
    raw = root / "FashionMNIST" / "raw"
    _ubyte_file(raw / "train-labels-idx1-ubyte", (2,), bytes([9, 0]))
    with pytest.raises(UserInputError, match="3 images but .* 2 labels"):
        dataset_info("fashion-mnist", root)


def test_missing_files_name_the_expected_path(tmp_path):
    with pytest.raises(UserInputError, match="missing Fashion-MNIST file") as info:
        build_datasets("fashion-mnist", tmp_path)
    assert str(tmp_path / "train-images-idx3-ubyte") in str(info.value)


@pytest.mark.skipif(not all(p.is_file() for p in REAL_FILES),
                    reason="Debian package dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    assert dataset_info("fashion-mnist") == {"train": 60000, "test": 10000, "classes": 10}
    bundle = build_datasets("fashion-mnist")
    assert (len(bundle.train), len(bundle.test), bundle.num_classes) == (60000, 10000, 10)
    x, y = bundle.test[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and 0 <= y < 10
    with gzip.open(REAL_FILES[3]) as f:
        assert bundle.test[0][1] == f.read()[8]  # first test label, straight from the file
    counts = torch.bincount(torch.tensor(bundle.train.targets), minlength=10)
    assert counts.tolist() == [6000] * 10
