"""The embedded digits dataset and the registry's argument checks."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from olsmooth.data import DatasetBundle, build_datasets, dataset_info, list_datasets
from olsmooth.errors import UserInputError


@pytest.fixture(scope="module")
def bundle() -> DatasetBundle:
    return build_datasets("digits")


def _all(dataset):
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(xs), torch.tensor(ys)


def _sorted_rows(images: np.ndarray) -> np.ndarray:
    flat = images.reshape(len(images), -1)
    return flat[np.lexsort(flat.T[::-1])]


def test_shapes_counts_and_classes(bundle):
    digits = load_digits()
    per_class = np.bincount(digits.target)
    expected_test = int(sum(n // 5 for n in per_class))  # documented rule: every fifth image of each class
    assert len(bundle.test) == expected_test == 355
    assert len(bundle.train) == len(digits.target) - expected_test == 1442
    assert bundle.num_classes == 10 and bundle.class_names == [str(i) for i in range(10)]
    assert (bundle.channels, bundle.image_size) == (1, 8)
    x, y = bundle.train[0]
    assert x.dtype == torch.float32 and x.shape == (1, 8, 8) and isinstance(y, int)
    assert dataset_info("digits") == {"train": 1442, "test": 355, "classes": 10}


def test_split_is_stratified_and_partitions_the_data(bundle):
    digits = load_digits()
    _, test_y = _all(bundle.test)
    _, train_y = _all(bundle.train)
    per_class = np.bincount(digits.target)
    test_counts = np.bincount(test_y.numpy(), minlength=10)
    assert np.all(np.abs(test_counts - 0.2 * per_class) <= 1)
    assert np.array_equal(test_counts + np.bincount(train_y.numpy(), minlength=10), per_class)
    stored = np.concatenate([bundle.train.items.numpy(), bundle.test.items.numpy()])[:, 0] * 16
    assert np.allclose(_sorted_rows(stored), _sorted_rows(digits.images))


def test_split_ignores_the_global_rng():
    torch.manual_seed(1)
    np.random.seed(1)
    first = build_datasets("digits")
    state = torch.get_rng_state()
    torch.manual_seed(12345)
    np.random.seed(999)
    second = build_datasets("digits")
    assert first.test.targets == second.test.targets
    assert torch.equal(first.test.items, second.test.items)
    torch.manual_seed(1)
    build_datasets("digits")
    assert torch.equal(torch.get_rng_state(), state)


def test_normalisation_gives_zero_mean_unit_std_on_train(bundle):
    x, _ = _all(build_datasets("digits", augment="none").train)
    assert abs(x.mean().item()) < 0.01 and abs(x.std().item() - 1) < 0.01
    raw = bundle.train.items[0]
    assert torch.allclose(bundle.train[0][0], (raw - bundle.mean[0]) / bundle.std[0])


def test_channels_and_image_size_overrides():
    b = build_datasets("digits", channels=3, image_size=32)
    x, _ = b.test[0]
    assert x.shape == (3, 32, 32) and (b.channels, b.image_size) == (3, 32)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert len(b.mean) == len(b.std) == 3 and len(set(b.mean)) == 1
    assert build_datasets("digits", image_size=16).train[0][0].shape == (1, 16, 16)


def test_imagenet_normalisation_per_channel_for_rgb_and_averaged_for_grey(bundle):
    raw = bundle.test.items[0].float()  # digits are stored in [0, 1]
    grey = build_datasets("digits", input_norm="imagenet")
    assert (grey.mean, grey.std) == (pytest.approx((0.449,)), pytest.approx((0.226,)))
    assert torch.allclose(grey.test[0][0], (raw - 0.449) / 0.226, atol=1e-6)
    rgb = build_datasets("digits", input_norm="imagenet", channels=3)
    x = rgb.test[0][0]
    for c, (m, s) in enumerate(zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))):
        assert torch.allclose(x[c], (raw[0] - m) / s, atol=1e-6)
    with pytest.raises(UserInputError, match="unknown input normalisation 'imagenet1k'"):
        build_datasets("digits", input_norm="imagenet1k")


def test_pickle_round_trip(bundle):
    clone = pickle.loads(pickle.dumps(bundle.train))
    assert len(clone) == len(bundle.train)
    assert torch.equal(clone[7][0], bundle.train[7][0]) and clone[7][1] == bundle.train[7][1]


def test_list_datasets_describes_every_name():
    names = list_datasets()
    expected = {"digits", "fashion-mnist", "cifar10", "cifar100", "imagenet", "imagefolder", "listfile",
                "cub200", "flowers102", "cars", "aircraft", "dogs"}
    assert expected <= set(names)
    assert all(isinstance(d, str) and d and "\n" not in d for d in names.values())


@pytest.mark.parametrize("kwargs, needle", [
    ({"name": "mnist-ish"}, "unknown dataset"),
    ({"name": "digits", "split": "val"}, "has no splits"),
    ({"name": "digits", "channels": 2}, "channels"),
    ({"name": "digits", "image_size": 0}, "image_size"),
    ({"name": "digits", "image_size": 8.5}, "image_size"),
])
def test_bad_arguments_are_one_line_user_errors(kwargs, needle):
    with pytest.raises(UserInputError, match=needle) as info:
        build_datasets(**kwargs)
    assert "\n" not in str(info.value)
