"""Stratified training subsets, labels without decoding, and the sample-index wrapper."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import ConcatDataset, DataLoader, Subset, TensorDataset

from olsmooth.data import WithIndex, build_datasets, dataset_labels, stratified_subset
from olsmooth.errors import UserInputError


def per_class(labels: np.ndarray, indices: np.ndarray) -> list[int]:
    return np.bincount(labels[indices], minlength=labels.max() + 1).tolist()


# --- stratified_subset: hand-worked cases ---------------------------------------------------------------------

@pytest.mark.parametrize("sizes, size, expected", [
    # quotas 3, 1.5, 0.5: class 2 gets its one sample, the other 4 go 8/3 and 4/3 -> floors 2, 1, remainder to 0
    ((6, 3, 1), 5, [3, 1, 1]),
    # quotas 9, 0.5, 0.5: both small classes get one, class 0 the other 8
    ((90, 5, 5), 10, [8, 1, 1]),
    # quotas 7, 1.1, 1.0, 0.9: class 3 gets one, then 9 seats on (70, 11, 10): 6.92, 1.09, 0.99 -> class 2 gets
    # one, then 8 seats on (70, 11): 6.91, 1.09 -> floors 6, 1 and the last seat to class 0 (remainder 0.91)
    ((70, 11, 10, 9), 10, [7, 1, 1, 1]),
    # fewer samples than classes: quotas 1, 0.6, 0.4 -> class 0, then the largest remainder, class 1
    ((5, 3, 2), 2, [1, 1, 0]),
    # balanced classes: exactly size / K each
    ((100,) * 10, 100, [10] * 10),
    ((4, 4), 3, None),  # quotas 1.5, 1.5: a tie, broken by the seed; checked below
])
def test_hand_worked_class_counts(sizes, size, expected):
    labels = np.repeat(np.arange(len(sizes)), sizes)
    counts = per_class(labels, stratified_subset(labels, size, seed=0))
    if expected is None:
        assert sorted(counts) == [1, 2]
    else:
        assert counts == expected


def test_class_sorted_folder_order_covers_every_class():
    # an image folder lists its samples class by class: the first 1,000 of 10 x 300 cover 4 classes
    labels = np.repeat(np.arange(10), 300)
    indices = stratified_subset(labels, 1000, seed=3)
    assert per_class(labels, indices) == [100] * 10


def test_subset_is_sorted_unique_and_deterministic_from_the_seed():
    labels = np.random.default_rng(5).integers(0, 7, size=500)
    a = stratified_subset(labels, 60, seed=11)
    assert a.dtype == np.int64 and np.all(np.diff(a) > 0) and 0 <= a[0] and a[-1] < 500
    assert np.array_equal(a, stratified_subset(labels.tolist(), 60, seed=11))
    assert not np.array_equal(a, stratified_subset(labels, 60, seed=12))


def test_ties_are_not_always_won_by_the_first_classes():
    labels = np.repeat(np.arange(10), 5)
    chosen = set()
    for seed in range(20):
        counts = per_class(labels, stratified_subset(labels, 3, seed))
        assert sorted(counts) == [0] * 7 + [1] * 3
        chosen |= {c for c, n in enumerate(counts) if n}
    assert len(chosen) > 3


def test_subset_neither_reads_nor_advances_the_global_rng():
    labels = np.arange(200) % 4
    np.random.seed(0)
    torch.manual_seed(0)
    state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state()
    first = stratified_subset(labels, 30, seed=1)
    assert np.array_equal(np.random.get_state()[1], state) and torch.equal(torch.get_rng_state(), torch_state)
    np.random.seed(99)
    assert np.array_equal(first, stratified_subset(labels, 30, seed=1))


def test_size_at_least_the_dataset_is_everything():
    labels = [2, 0, 1, 1]
    assert stratified_subset(labels, 4, seed=0).tolist() == [0, 1, 2, 3]
    assert stratified_subset(labels, 10, seed=0).tolist() == [0, 1, 2, 3]


def test_proportions_on_random_class_sizes():
    rng = np.random.default_rng(0)
    for trial in range(200):
        sizes = rng.integers(1, 60, size=rng.integers(2, 12))
        labels = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
        n, k = len(labels), len(sizes)
        size = int(rng.integers(1, n))
        counts = np.array(per_class(labels, stratified_subset(labels, size, seed=trial)))
        quotas = size * sizes / n
        assert counts.sum() == size and np.all(counts <= sizes)
        if size >= k:
            assert np.all(counts >= 1)
        if quotas.min() >= 1 or size < k:
            assert np.all(np.abs(counts - quotas) < 1), (sizes, size, counts)


@pytest.mark.parametrize("kwargs, needle", [
    ({"size": 0}, "positive"), ({"size": -3}, "positive"), ({"size": 2.5}, "positive"), ({"size": True}, "positive"),
    ({"seed": -1}, "non-negative"), ({"labels": [[0, 1], [1, 0]]}, "1-D"), ({"labels": [0, -1, 1]}, "non-negative"),
])
def test_bad_arguments(kwargs, needle):
    args = {"labels": [0, 1, 0, 1], "size": 2, "seed": 0, **kwargs}
    with pytest.raises(UserInputError, match=needle):
        stratified_subset(**args)


# --- dataset_labels -----------------------------------------------------------------------------------------

def _corrupt_folder(root):
    """A class-folder tree whose 'images' cannot be decoded: reading a label must not open them."""
    for split, counts in (("train", (3, 2, 4)), ("val", (1, 1, 1))):
        for c, n in enumerate(counts):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(n):
                (root / split / f"c{c}" / f"{i}.png").write_bytes(b"not an image")
    return root


def test_labels_come_from_targets_without_decoding(tmp_path):
    train = build_datasets("imagefolder", _corrupt_folder(tmp_path)).train
    with pytest.raises(UserInputError, match="cannot read image"):
        train[0]
    labels = dataset_labels(train)
    assert labels.dtype == np.int64 and labels.tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2]
    indices = stratified_subset(labels, 3, seed=0)
    assert per_class(labels, indices) == [1, 1, 1]


def test_labels_through_wrappers():
    base = TensorDataset(torch.zeros(6, 1), torch.tensor([3, 1, 4, 1, 5, 9]))  # no targets: iterated
    assert dataset_labels(base).tolist() == [3, 1, 4, 1, 5, 9]
    digits = build_datasets("digits").train
    sub = Subset(Subset(digits, [10, 3, 7]), [2, 0])
    assert dataset_labels(sub).tolist() == [digits.targets[7], digits.targets[10]]
    assert dataset_labels(WithIndex(sub)).tolist() == dataset_labels(sub).tolist()
    assert dataset_labels(ConcatDataset([base, sub])).tolist() == [3, 1, 4, 1, 5, 9, digits.targets[7],
                                                                   digits.targets[10]]


# --- WithIndex -------------------------------------------------------------------------------------------------

def test_with_index_yields_the_position_and_leaves_the_dataset_alone():
    train = build_datasets("digits").train
    wrapped = WithIndex(train)
    assert len(wrapped) == len(train) and len(train[5]) == 2
    image, label, index = wrapped[5]
    assert torch.equal(image, train[5][0]) and label == train[5][1] and index == 5


def test_with_index_and_subsets():
    train = build_datasets("digits").train
    picked = [40, 2, 17]
    full_indices = Subset(WithIndex(train), picked)  # keeps the positions in the full training set
    assert [full_indices[i][2] for i in range(3)] == picked
    renumbered = WithIndex(Subset(train, picked))  # numbers the subset 0..2
    assert [renumbered[i][2] for i in range(3)] == [0, 1, 2]
    assert all(torch.equal(renumbered[i][0], train[j][0]) and renumbered[i][1] == train[j][1]
               for i, j in enumerate(picked))
    images, labels, indices = next(iter(DataLoader(full_indices, batch_size=3)))
    assert images.shape == (3, 1, 8, 8) and indices.tolist() == picked
    assert labels.tolist() == [train.targets[j] for j in picked]
    clone = pickle.loads(pickle.dumps(renumbered))
    assert clone[1][2] == 1 and torch.equal(clone[1][0], renumbered[1][0])


def test_with_index_on_an_image_folder(tmp_path):
    for split in ("train", "val"):
        for c in range(2):
            (tmp_path / split / f"c{c}").mkdir(parents=True)
            Image.new("RGB", (8, 8), (200 * c, 0, 0)).save(tmp_path / split / f"c{c}" / "0.png")
    wrapped = WithIndex(build_datasets("imagefolder", tmp_path, image_size=8).train)
    assert [(wrapped[i][1], wrapped[i][2]) for i in range(2)] == [(0, 0), (1, 1)]
