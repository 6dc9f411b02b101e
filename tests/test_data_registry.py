"""The registry: one normalised dataset name, per-dataset defaults on the spec, split and augment arguments."""

import pytest

from olsmooth.data import (
    build_datasets,
    canonical_dataset_name,
    dataset_defaults,
    dataset_info,
    dataset_spec,
    list_datasets,
)
from olsmooth.errors import UserInputError

# The values the toolkit has always used (hand-copied from the previous table in the engine).
SMALL = dict(model="small_cnn", epochs=12, batch_size=64, lr=0.05, weight_decay=5e-4)
FOLDER = dict(model="resnet18", epochs=30, batch_size=64, lr=0.01, weight_decay=1e-4)
FINE = dict(model="resnet50", epochs=100, batch_size=64, lr=0.01, weight_decay=1e-4)
EXPECTED_DEFAULTS = {
    "digits": SMALL,
    "fashion-mnist": dict(SMALL, epochs=10, batch_size=128),
    "cifar10": dict(model="cifar_resnet56", epochs=200, batch_size=128, lr=0.1, weight_decay=5e-4),
    "cifar100": dict(model="cifar_resnet56", epochs=200, batch_size=128, lr=0.1, weight_decay=5e-4),
    "imagenet": dict(model="resnet50", epochs=90, batch_size=64, lr=0.1, weight_decay=1e-4),
    "imagefolder": FOLDER, "listfile": FOLDER,
    "cub200": FINE, "flowers102": FINE, "cars": FINE, "aircraft": FINE, "dogs": FINE,
    **{f"synthetic-{k}": dict(model="linear", epochs=2, batch_size=256, lr=0.5, weight_decay=0.0)
       for k in ("1k", "10k", "100k")},
    "glyphs": dict(SMALL, epochs=15, batch_size=128),
}


def one_line_error(fn, *args, match: str, **kwargs) -> str:
    with pytest.raises(UserInputError, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("given, canonical", [
    ("fashion_mnist", "fashion-mnist"), ("Fashion-MNIST", "fashion-mnist"), (" CIFAR10 ", "cifar10"),
    ("cub200", "cub200"), ("ImageFolder", "imagefolder"),
])
def test_canonical_name_normalises_case_blanks_and_underscores(given, canonical):
    assert canonical_dataset_name(given) == canonical


@pytest.mark.parametrize("name", ["mnist-ish", "", None, 3])
def test_unknown_dataset_lists_the_names(name):
    msg = one_line_error(canonical_dataset_name, name, match="unknown dataset")
    assert all(known in msg for known in list_datasets())


def test_every_dataset_owns_its_defaults():
    assert {name: dataset_defaults(name) for name in list_datasets()} == EXPECTED_DEFAULTS


def test_fashion_mnist_with_underscore_gets_fashion_mnist_defaults():
    # '--dataset fashion_mnist' used to load Fashion-MNIST with the image-folder defaults (resnet18, 30 epochs)
    assert dataset_defaults("fashion_mnist") == EXPECTED_DEFAULTS["fashion-mnist"]
    assert dataset_spec("fashion_mnist") is dataset_spec("fashion-mnist")


def test_unknown_dataset_has_no_fallback_defaults():
    one_line_error(dataset_defaults, "my-folder", match="unknown dataset 'my-folder'")


def test_defaults_are_a_copy():
    dataset_defaults("digits")["epochs"] = 999
    assert dataset_defaults("digits")["epochs"] == 12


def test_in_memory_flag():
    assert {name for name in list_datasets() if dataset_spec(name).in_memory} == {
        "digits", "fashion-mnist", "glyphs", "synthetic-1k", "synthetic-10k", "synthetic-100k"}


def test_only_the_fine_grained_sets_have_splits():
    with_splits = {name for name in list_datasets() if dataset_spec(name).splits}
    assert with_splits == {"cub200", "cars", "aircraft", "flowers102", "dogs"}
    assert all(dataset_spec(name).splits == ("paper", "official") for name in with_splits)


@pytest.mark.parametrize("split", ["paper", "official", "val"])
def test_split_on_a_dataset_without_splits_is_an_error(split):
    one_line_error(build_datasets, "digits", split=split, match=f"digits has no splits.*{split!r}")
    one_line_error(dataset_info, "digits", split=split, match="has no splits")


def test_split_unset_is_the_default_and_unknown_split_names_the_choices(tmp_path):
    (tmp_path / "CUB_200_2011" / "images").mkdir(parents=True)
    assert dataset_info("cub200", tmp_path) == dataset_info("cub200", tmp_path, split="paper")
    assert dataset_info("cub200", tmp_path)["classes"] == 200
    one_line_error(dataset_info, "cub200", tmp_path, split="trainval",
                   match="unknown split 'trainval'.*paper, official")


@pytest.mark.parametrize("augment", ["strong", "", True, False, None])
def test_unknown_augment_level_is_an_error(augment):
    one_line_error(build_datasets, "digits", augment=augment, match="augment level.*none, light, default")
