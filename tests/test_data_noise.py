"""Label noise: exact counts per kind, the class maps by name, the realised transition, instance noise, errors."""

import json
import math

import numpy as np
import pytest
import torch
from torch.utils.data import Subset

from olsmooth import noise_transition
from olsmooth.data import NOISE_KINDS, LabelledDataset, NoiseSpec, WithIndex, instance_images, make_noisy_labels
from olsmooth.data.noise import (
    instance_features,
    instance_flip_probabilities,
    sample_instance_labels,
    truncated_normal,
)
from olsmooth.data.noise_maps import CIFAR100_COARSE
from olsmooth.data.sources.fashion_mnist import CLASS_NAMES as FASHION_NAMES
from olsmooth.errors import UserInputError
from olsmooth.noise_transition import SparseTransition

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR100_FINE = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
    "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
    "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger "
    "tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm").split()
# The 20 superclasses as the CIFAR page lists them, in the alphabetical order of the coarse label names.
CIFAR100_SUPERCLASSES = {
    "aquatic_mammals": "beaver dolphin otter seal whale",
    "fish": "aquarium_fish flatfish ray shark trout",
    "flowers": "orchid poppy rose sunflower tulip",
    "food_containers": "bottle bowl can cup plate",
    "fruit_and_vegetables": "apple mushroom orange pear sweet_pepper",
    "household_electrical_devices": "clock keyboard lamp telephone television",
    "household_furniture": "bed chair couch table wardrobe",
    "insects": "bee beetle butterfly caterpillar cockroach",
    "large_carnivores": "bear leopard lion tiger wolf",
    "large_man-made_outdoor_things": "bridge castle house road skyscraper",
    "large_natural_outdoor_scenes": "cloud forest mountain plain sea",
    "large_omnivores_and_herbivores": "camel cattle chimpanzee elephant kangaroo",
    "medium_mammals": "fox porcupine possum raccoon skunk",
    "non-insect_invertebrates": "crab lobster snail spider worm",
    "people": "baby boy girl man woman",
    "reptiles": "crocodile dinosaur lizard snake turtle",
    "small_mammals": "hamster mouse rabbit shrew squirrel",
    "trees": "maple_tree oak_tree palm_tree pine_tree willow_tree",
    "vehicles_1": "bicycle bus motorcycle pickup_truck train",
    "vehicles_2": "lawn_mower rocket streetcar tank tractor",
}


def confusion(clean, noisy, k):
    """Row-normalised counts of (clean, noisy) pairs, counted one sample at a time; identity row when empty."""
    counts = np.zeros((k, k))
    for c, n in zip(clean.tolist(), noisy.tolist()):
        counts[c, n] += 1
    return np.array([row / row.sum() if row.sum() else np.eye(k)[c] for c, row in enumerate(counts)])


def by_name(pairs, names):
    return {names.index(a): names.index(b) for a, b in pairs}


def check_mapped_flips(result, mapping, rate):
    """Exactly round(rate n_c) samples of each mapped class took mapping[c]; nothing else changed."""
    for c in range(len(result.transition)):
        members = result.clean == c
        changed = result.noisy[members] != c
        assert changed.sum() == (round(rate * members.sum()) if c in mapping else 0)
        assert np.all(result.noisy[members][changed] == mapping.get(c, c))


@pytest.mark.parametrize("spec, expected", [("symmetric:0.4", ("symmetric", 0.4)), (" Pairflip:0 ", ("pairflip", 0.0)),
                                            ("asymmetric-superclass:.25", ("asymmetric-superclass", 0.25)),
                                            ("Instance : 3e-1", ("instance", 0.3))])
def test_noise_spec_parse(spec, expected):
    parsed = NoiseSpec.parse(spec)
    assert (parsed.kind, parsed.rate) == expected and parsed == NoiseSpec(*expected)
    assert str(parsed) == f"{expected[0]}:{expected[1]!r}" and NoiseSpec.parse(str(parsed)) == parsed
    assert NoiseSpec.parse(parsed) is parsed


@pytest.mark.parametrize("spec, needle", [("symmetric", "KIND:RATE"), (":0.4", "KIND:RATE"), (" :0.4", "KIND:RATE"),
                                          ("uniform:0.2", "kind"), ("symmetric:", "rate"), ("symmetric:abc", "rate"),
                                          ("symmetric:1", "rate"), ("symmetric:-0.1", "rate"),
                                          ("symmetric:nan", "rate"), (0.4, "KIND:RATE"), (None, "KIND:RATE")])
def test_noise_spec_errors_are_one_line(spec, needle):
    with pytest.raises(UserInputError, match=needle) as info:
        NoiseSpec.parse(spec)
    assert "\n" not in str(info.value)


def test_a_noise_spec_built_directly_is_checked_the_same_way():
    with pytest.raises(UserInputError, match="kind"):
        NoiseSpec("Symmetric", 0.4)  # the kind exactly as listed: only `parse` reads spellings
    with pytest.raises(UserInputError, match="rate"):
        NoiseSpec("symmetric", 1.0)


def test_symmetric_flips_exactly_round_rate_n_to_uniformly_drawn_other_classes():
    labels = np.arange(50_000) % 5
    result = make_noisy_labels(labels, "symmetric", 0.5, 3, 5)
    assert result.corrupted.sum() == 25_000 and result.rate_realised == 0.5  # no chosen sample keeps its label
    for c in range(5):
        flipped = result.noisy[(labels == c) & result.corrupted]
        counts = np.bincount(flipped, minlength=5)
        assert counts[c] == 0
        expected = len(flipped) / 4  # binomial(len, 1/4): std ~ 39 here, bound 6 std
        assert np.all(np.abs(counts[np.arange(5) != c] - expected) < 6 * math.sqrt(len(flipped) * 3 / 16))


@pytest.mark.parametrize("n, rate, flips", [(9, 0.5, 4), (11, 0.5, 6), (7, 0.3, 2), (10, 0.0, 0)])
def test_the_count_is_python_round_ties_to_even(n, rate, flips):
    assert make_noisy_labels(np.arange(n) % 3, "symmetric", rate, 0, 3).corrupted.sum() == flips


def test_symmetric_any_changes_about_rate_times_k_minus_1_over_k():
    labels = np.arange(40_000) % 4
    result = make_noisy_labels(labels, "symmetric-any", 0.6, 1, 4)
    redrawn = 24_000  # each redrawn label stays with probability 1/4: changes ~ Binomial(24000, 3/4)
    assert abs(result.corrupted.sum() - redrawn * 0.75) < 5 * math.sqrt(redrawn * 0.75 * 0.25)
    assert abs(result.rate_realised - 0.6 * 3 / 4) < 0.01
    assert set(np.unique(result.noisy[result.corrupted])) == {0, 1, 2, 3}


def test_cifar10_map_by_class_names():
    mapping = by_name([("truck", "automobile"), ("bird", "airplane"), ("deer", "horse"), ("cat", "dog"),
                       ("dog", "cat")], CIFAR10)
    labels = np.repeat(np.arange(10), 100)
    result = make_noisy_labels(labels, "asymmetric", 0.3, 0, 10, dataset="CIFAR10")
    check_mapped_flips(result, mapping, 0.3)
    assert result.rate_realised == 5 * 30 / 1000
    assert result.transition[9, 1] == 0.3 and result.transition[9, 9] == 0.7 and result.transition[1, 1] == 1.0


def test_fashion_mnist_map_by_class_names():
    assert list(FASHION_NAMES) == FASHION
    mapping = by_name([("T-shirt/top", "Shirt"), ("Shirt", "T-shirt/top"), ("Pullover", "Coat"), ("Coat", "Pullover"),
                       ("Sandal", "Sneaker"), ("Sneaker", "Sandal"), ("Ankle boot", "Sneaker")], FASHION)
    labels = np.repeat(np.arange(10), [30, 31, 32, 33, 34, 35, 36, 37, 38, 39])
    check_mapped_flips(make_noisy_labels(labels, "asymmetric", 0.4, 2, 10, dataset="Fashion_MNIST"), mapping, 0.4)


def test_digits_map_is_the_mnist_one():
    labels = np.repeat(np.arange(10), 50)
    result = make_noisy_labels(labels, "asymmetric", 0.2, 0, 10, dataset="digits")
    check_mapped_flips(result, {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}, 0.2)


def test_cifar100_asymmetric_is_the_next_class_in_blocks_of_five():
    labels = np.repeat(np.arange(100), 10)
    mapping = {c: 5 * (c // 5) + (c % 5 + 1) % 5 for c in range(100)}  # 0->1, ..., 4->0, 5->6, ..., 99->95
    check_mapped_flips(make_noisy_labels(labels, "asymmetric", 0.4, 0, 100, dataset="cifar100"), mapping, 0.4)


def test_cifar100_coarse_map_matches_the_published_superclasses():
    assert len(CIFAR100_FINE) == 100 and CIFAR100_FINE == sorted(CIFAR100_FINE)
    coarse_names = list(CIFAR100_SUPERCLASSES)
    assert coarse_names == sorted(coarse_names)
    expected = [next(coarse_names.index(s) for s, members in CIFAR100_SUPERCLASSES.items() if fine in members.split())
                for fine in CIFAR100_FINE]
    assert list(CIFAR100_COARSE) == expected
    known = {"apple": "fruit_and_vegetables", "worm": "non-insect_invertebrates", "pickup_truck": "vehicles_1",
             "lawn_mower": "vehicles_2", "beaver": "aquatic_mammals", "maple_tree": "trees", "baby": "people"}
    for fine, coarse in known.items():
        assert CIFAR100_COARSE[CIFAR100_FINE.index(fine)] == coarse_names.index(coarse)
    assert CIFAR100_COARSE[0] == 4


def test_cifar100_superclass_noise_moves_to_the_next_fine_class_of_the_coarse_class():
    groups = [sorted(CIFAR100_FINE.index(f) for f in members.split()) for members in CIFAR100_SUPERCLASSES.values()]
    mapping = {g[i]: g[(i + 1) % 5] for g in groups for i in range(5)}
    assert mapping[4] == 30 and mapping[95] == 4  # beaver -> dolphin, whale -> beaver
    labels = np.repeat(np.arange(100), 10)
    check_mapped_flips(make_noisy_labels(labels, "asymmetric-superclass", 0.5, 1, 100, dataset="cifar100"),
                       mapping, 0.5)


def test_pairflip_moves_exactly_round_rate_n_c_of_each_class_to_the_next():
    labels = np.repeat(np.arange(3), [10, 21, 7])
    result = make_noisy_labels(labels, "pairflip", 0.3, 4, 3)
    check_mapped_flips(result, {0: 1, 1: 2, 2: 0}, 0.3)
    assert [result.corrupted[labels == c].sum() for c in range(3)] == [3, 6, 2]


@pytest.mark.parametrize("kind", ["symmetric", "symmetric-any", "asymmetric", "pairflip", "instance"])
def test_transition_is_the_empirical_confusion_with_identity_rows_for_absent_classes(kind):
    rng = np.random.default_rng(0)
    labels = rng.choice([0, 1, 2, 4, 5, 6, 7, 8, 9], size=3000)  # class 3 absent
    result = make_noisy_labels(labels, kind, 0.45, 5, 10, images=rng.random((3000, 2, 3)), dataset="cifar10")
    assert np.allclose(result.transition, confusion(labels, result.noisy, 10), atol=1e-12)
    assert np.allclose(result.transition.sum(axis=1), 1.0)
    assert np.array_equal(result.transition[3], np.eye(10)[3])
    assert result.rate_realised == np.mean(result.noisy != labels) and result.noisy.dtype == np.int64


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_every_kind_is_reproducible_from_its_seed_and_leaves_the_global_rngs_alone(kind):
    labels = np.repeat(np.arange(100), 20)
    images = np.random.default_rng(1).integers(0, 256, size=(2000, 3, 4, 4), dtype=np.uint8)
    np.random.seed(0)
    torch.manual_seed(0)
    numpy_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state()
    runs = [make_noisy_labels(labels, kind, 0.3, seed, 100, images=images, dataset="cifar100") for seed in (7, 7, 8)]
    assert np.array_equal(runs[0].noisy, runs[1].noisy)
    assert not np.array_equal(runs[0].noisy, runs[2].noisy)
    assert np.array_equal(np.random.get_state()[1], numpy_state) and torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(runs[0].clean, labels)


def test_to_json_round_trips_through_json():
    result = make_noisy_labels([0, 1, 2, 0, 1, 2], "pairflip", 0.5, 9, 3)
    record = json.loads(json.dumps(result.to_json()))
    assert set(record) == {"kind", "rate", "rate_realised", "seed", "transition"}
    assert (record["kind"], record["rate"], record["seed"]) == ("pairflip", 0.5, 9)
    assert record["rate_realised"] == result.rate_realised == 3 / 6  # round(0.5 * 2) = 1 of each class
    assert np.array_equal(np.array(record["transition"]), result.transition)
    assert np.array_equal(result.transition, [[0.5, 0.5, 0], [0, 0.5, 0.5], [0.5, 0, 0.5]])


def test_instance_flip_probabilities_hand_worked():
    # scores x W[0] = [0, ln 2, 0]; own class 0 excluded, softmax over classes 1, 2 = [2/3, 1/3]; q = 0.3
    projection = np.zeros((3, 2, 3))
    projection[0, 0, 1] = math.log(2.0)
    p = instance_flip_probabilities(np.array([[1.0, 0.0]]), np.array([0]), np.array([0.3]), projection)
    assert np.allclose(p, [[0.7, 0.2, 0.1]])


def test_instance_flips_go_where_the_projection_points():
    # one-hot features e_j and a projection whose score for class (y + 1 + j) mod 4 is 60 above the rest: every
    # sample with q = 1 takes that class, every sample with q = 0 keeps its label.
    k = 4
    labels, slots = np.repeat(np.arange(k), 30), np.tile(np.arange(k), 30)
    target = lambda y, j: (y + 1 + j % (k - 1)) % k  # noqa: E731  (never y)
    projection = np.zeros((k, k, k))
    for y in range(k):
        for j in range(k):
            projection[y, j, target(y, j)] = 60.0
    flip_rates = (np.arange(len(labels)) % 2 == 0).astype(float)
    noisy = sample_instance_labels(np.eye(k)[slots], labels, flip_rates, projection, np.random.default_rng(0))
    expected = np.where(flip_rates == 1, [target(y, j) for y, j in zip(labels, slots)], labels)
    assert np.array_equal(noisy, expected)


def test_instance_sampling_follows_the_probabilities():
    projection = np.zeros((3, 2, 3))
    projection[0, 0, 1] = math.log(2.0)
    n = 30_000
    noisy = sample_instance_labels(np.tile([1.0, 0.0], (n, 1)), np.zeros(n, dtype=np.int64), np.full(n, 0.3),
                                   projection, np.random.default_rng(2))
    frequencies = np.bincount(noisy, minlength=3) / n
    assert np.all(np.abs(frequencies - [0.7, 0.2, 0.1]) < 5 * math.sqrt(0.25 / n))


def truncnorm_mean(mu, sigma=0.1):
    """Mean of N(mu, sigma^2) truncated to [0, 1]: mu + sigma (phi(a) - phi(b)) / (Phi(b) - Phi(a))."""
    a, b = -mu / sigma, (1 - mu) / sigma
    phi = lambda t: math.exp(-t * t / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda t: 0.5 * (1 + math.erf(t / math.sqrt(2)))  # noqa: E731
    return mu + sigma * (phi(a) - phi(b)) / (cdf(b) - cdf(a))


def test_truncated_normal_stays_in_range_with_the_truncated_mean():
    values = truncated_normal(np.random.default_rng(0), 0.05, 0.1, 40_000)
    assert values.min() >= 0.0 and values.max() <= 1.0
    assert abs(values.mean() - truncnorm_mean(0.05)) < 0.003


@pytest.mark.parametrize("rate", [0.1, 0.4])
def test_instance_noise_realised_rate_is_the_mean_flip_rate(rate):
    n = 20_000
    rng = np.random.default_rng(3)
    labels, images = rng.integers(0, 10, size=n), rng.normal(size=(n, 16))
    result = make_noisy_labels(labels, "instance", rate, 0, 10, images=torch.from_numpy(images))
    expected = truncnorm_mean(rate)  # 0.129 for 0.1: the truncation at 0 lifts the mean
    assert abs(result.rate_realised - expected) < 5 * math.sqrt(expected * (1 - expected) / n)
    assert np.array_equal(result.noisy, make_noisy_labels(labels, "instance", rate, 0, 10, images=images).noisy)


def test_instance_features_are_centred_unit_rows_and_leave_the_images_alone():
    images = np.array([[[1.0, 1.0]], [[3.0, 1.0]], [[2.0, 1.0]]], dtype=np.float32)
    features = instance_features(images)
    assert np.allclose(features, [[-1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])  # mean [2, 1]; the mean image stays zero
    assert images[0, 0, 0] == 1.0


def test_noise_map_from_a_dict_and_a_json_file(tmp_path):
    labels = np.repeat(np.arange(6), 10)
    check_mapped_flips(make_noisy_labels(labels, "asymmetric", 0.5, 0, 6, noise_map={3: 5, 1: 0}), {3: 5, 1: 0}, 0.5)
    path = tmp_path / "map.json"
    path.write_text('{"3": 5, "1": 0}')
    result = make_noisy_labels(labels, "asymmetric", 0.5, 0, 6, noise_map=path, dataset="imagefolder")
    check_mapped_flips(result, {3: 5, 1: 0}, 0.5)
    override = make_noisy_labels(np.repeat(np.arange(10), 10), "asymmetric", 0.5, 0, 10, noise_map={0: 1},
                                 dataset="cifar10")
    check_mapped_flips(override, {0: 1}, 0.5)  # a given map replaces the built-in one


@pytest.mark.parametrize("text, needle", [('{"3": 9}', "9 is not a class index"), ('{"-1": 2}', "'-1' is not"),
                                          ('{"2": 2}', "mapped to itself"), ('{"2": 1.5}', "1.5"),
                                          ("[3, 5]", "non-empty object"), ("{}", "non-empty object"),
                                          ('{"3": ', "not valid JSON"), ('{"3": true}', "True")])
def test_bad_noise_map_files_name_the_file(tmp_path, text, needle):
    path = tmp_path / "map.json"
    path.write_text(text)
    with pytest.raises(UserInputError, match=needle) as info:
        make_noisy_labels([0, 1, 2, 3], "asymmetric", 0.5, 0, 6, noise_map=str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_noise_map_file(tmp_path):
    with pytest.raises(UserInputError, match="cannot read .*missing.json"):
        make_noisy_labels([0, 1], "asymmetric", 0.5, 0, 2, noise_map=tmp_path / "missing.json")


@pytest.mark.parametrize("kwargs, needle", [
    ({"rate": 1.0}, "rate"), ({"rate": -0.1}, "rate"), ({"rate": float("nan")}, "rate"), ({"rate": True}, "rate"),
    ({"rate": "0.3"}, "rate"), ({"kind": "uniform"}, "unknown label-noise kind"), ({"kind": "pair"}, "kind"),
    ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"), ({"num_classes": 1}, "2 classes"),
    ({"labels": [0, 7]}, "labels must lie"), ({"labels": [0.0, 1.0]}, "integer"), ({"labels": [[0, 1]]}, "1-D"),
    ({"kind": "asymmetric"}, "no built-in class map for unnamed"),
    ({"kind": "asymmetric", "dataset": "imagefolder"}, "no built-in class map for imagefolder"),
    ({"kind": "asymmetric", "dataset": "cifar100"}, "for 100 classes, the labels have 3"),
    ({"kind": "asymmetric", "dataset": "no-such-set"}, "unknown dataset"),
    ({"kind": "asymmetric-superclass", "dataset": "cifar10"}, "cifar100 .* only"),
    ({"kind": "symmetric", "noise_map": {0: 1}}, "asymmetric noise only"),
    ({"kind": "instance"}, "needs the training images"),
    ({"kind": "instance", "images": np.zeros((2, 4))}, "2 images for 3 labels"),
    ({"kind": "instance", "images": np.full((3, 2), np.inf)}, "finite"),
])
def test_bad_input_is_a_one_line_user_error(kwargs, needle):
    args = {"labels": [0, 1, 2], "kind": "symmetric", "rate": 0.2, "seed": 0, "num_classes": 3, **kwargs}
    with pytest.raises(UserInputError, match=needle) as info:
        make_noisy_labels(**args)
    assert "\n" not in str(info.value)


# a hand-worked realised transition: class 3 has no samples (identity row)
HAND_CLEAN, HAND_NOISY = [0, 0, 0, 0, 1, 1, 2], [0, 1, 1, 3, 1, 0, 2]
HAND_T = [[0.25, 0.5, 0, 0.25], [0.5, 0.5, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]


def test_the_transition_pairs_and_the_dense_matrix_agree_on_a_hand_worked_case(monkeypatch):
    pairs = SparseTransition.from_labels(np.array(HAND_CLEAN), np.array(HAND_NOISY), 4)
    assert (pairs.clean.tolist(), pairs.noisy.tolist()) == ([0, 0, 0, 1, 1, 2], [0, 1, 3, 0, 1, 2])
    assert pairs.fraction.tolist() == [0.25, 0.5, 0.25, 0.5, 0.5, 1.0]
    assert np.array_equal(pairs.dense(), HAND_T)
    dense = json.loads(json.dumps(pairs.to_json()))
    monkeypatch.setattr(noise_transition, "DENSE_RECORD_MAX_CLASSES", 3)  # above it: the sparse form
    sparse = json.loads(json.dumps(pairs.to_json()))
    assert list(dense) == ["transition"] and dense["transition"] == HAND_T
    assert sparse == {"transition_sparse": {"classes": 4, "clean": [0, 0, 0, 1, 1, 2], "noisy": [0, 1, 3, 0, 1, 2],
                                            "fraction": [0.25, 0.5, 0.25, 0.5, 0.5, 1.0]}}
    for record in (dense, sparse):
        assert np.array_equal(noise_transition.dense_from_record(record, "noise.json"), HAND_T)


def test_a_hundred_thousand_classes_keep_their_transition_as_pairs():
    labels = np.arange(0, 100_000, 997)  # 101 samples, one per class used
    result = make_noisy_labels(labels, "symmetric", 0.5, 3, 100_000)
    record = result.to_json()["transition_sparse"]
    flipped = result.noisy != labels
    assert record["classes"] == 100_000 and "transition" not in result.to_json()
    assert record["clean"] == labels.tolist() and record["noisy"] == result.noisy.tolist()
    assert record["fraction"] == [1.0] * len(labels) and flipped.sum() == round(0.5 * len(labels))
    with pytest.raises(UserInputError, match="at most 4,096 classes") as err:
        _ = result.transition  # 80 GB dense: refused, not allocated
    assert "\n" not in str(err.value)

def test_empty_labels_give_identity_transition():
    result = make_noisy_labels([], "symmetric", 0.5, 0, 3)
    assert result.noisy.size == 0 and result.rate_realised == 0.0 and np.array_equal(result.transition, np.eye(3))


def test_instance_images_of_in_memory_sets_follow_subsets_and_sample_indices():
    images = torch.arange(5 * 4).view(5, 1, 2, 2)
    dataset = LabelledDataset(images, [0, 1, 2, 0, 1], transform=lambda x: x)
    assert torch.equal(instance_images(WithIndex(dataset)), images)
    subset = Subset(Subset(dataset, [4, 0, 3]), [2, 0])  # samples 3 and 4 of the full set
    assert torch.equal(instance_images(subset), images[[3, 4]])

    class TorchvisionLike(torch.utils.data.Dataset):
        data = np.zeros((3, 2, 2, 3), dtype=np.uint8)

        def __len__(self):
            return 3

    assert instance_images(TorchvisionLike()) is TorchvisionLike.data


def test_instance_images_refuses_sets_read_from_files():
    files = LabelledDataset(["a.png", "b.png"], [0, 1], transform=lambda x: x, load=lambda path: path)
    with pytest.raises(UserInputError, match="held in memory"):
        instance_images(files)
