"""Class maps for asymmetric label noise: the built-in look-alike maps, CIFAR-100's coarse classes, user maps.

A map sends a source class to the class its noisy samples take; classes without an entry keep their labels.
docs/noise.md lists every map with its class names and where it comes from.
"""

from __future__ import annotations

import json
import numbers
import os
from collections.abc import Mapping
from pathlib import Path

from ..errors import UserInputError
from ..fileio import io_error

NoiseMap = dict[int, int]

# CIFAR-10 (Patrini et al. 2017, SCE, GCE, DivideMix): truck -> automobile, bird -> airplane, deer -> horse,
# cat <-> dog.
CIFAR10_MAP: NoiseMap = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}

# Fashion-MNIST look-alikes: T-shirt/top <-> Shirt, Pullover <-> Coat, Sandal <-> Sneaker, Ankle boot -> Sneaker;
# Trouser, Dress and Bag keep their labels.
FASHION_MNIST_MAP: NoiseMap = {0: 6, 6: 0, 2: 4, 4: 2, 5: 7, 7: 5, 9: 7}

# Handwritten digits, the MNIST map of Patrini et al. 2017: 2 -> 7, 3 -> 8, 5 <-> 6, 7 -> 1.
DIGITS_MAP: NoiseMap = {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}

# CIFAR-100's coarse class (0..19) of each fine class 0..99, both in the order of the dataset's meta file
# (alphabetical names: fine 0 'apple' is in coarse 4 'fruit_and_vegetables').
CIFAR100_COARSE: tuple[int, ...] = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)


def next_in_groups(groups: list[list[int]]) -> NoiseMap:
    """Each class to the next one of its group, the last back to the first (groups of one map nothing)."""
    return {c: group[(i + 1) % len(group)] for group in groups if len(group) > 1 for i, c in enumerate(group)}


def cifar100_block_map() -> NoiseMap:
    """CIFAR-100 `asymmetric`: the next class within each block of 5 consecutive indices (0->1->...->4->0, ...).

    The convention of the widely used code (SCE, GCE, Co-teaching); the blocks are not the real coarse classes.
    """
    return next_in_groups([list(range(start, start + 5)) for start in range(0, 100, 5)])


def cifar100_superclass_map() -> NoiseMap:
    """CIFAR-100 `asymmetric-superclass`: the next fine class (by index) within its real coarse class."""
    return next_in_groups([[f for f, c in enumerate(CIFAR100_COARSE) if c == coarse] for coarse in range(20)])


# dataset name -> (number of classes, its `asymmetric` map)
BUILTIN_MAPS: dict[str, tuple[int, NoiseMap]] = {
    "cifar10": (10, CIFAR10_MAP),
    "cifar100": (100, cifar100_block_map()),
    "fashion-mnist": (10, FASHION_MNIST_MAP),
    "digits": (10, DIGITS_MAP),
}


def _class_index(value: object, num_classes: int, where: str) -> int:
    """`value` as a class index in 0..K-1 (an int, or a string of digits for JSON keys), else a one-line error."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < num_classes:
        raise UserInputError(f"{where}: {value!r} is not a class index in 0..{num_classes - 1}")
    return int(value)


def validate_noise_map(mapping: Mapping[object, object], num_classes: int, where: str = "noise map") -> NoiseMap:
    """A checked copy of a class -> class map: keys and values class indices, no class mapped to itself."""
    if not isinstance(mapping, Mapping) or not mapping:
        raise UserInputError(f"{where}: expected a non-empty object of class -> class, e.g. {{\"3\": 5}}")
    checked: NoiseMap = {}
    for key, value in mapping.items():
        source, target = _class_index(key, num_classes, where), _class_index(value, num_classes, where)
        if source == target:
            raise UserInputError(f"{where}: class {source} is mapped to itself")
        if source in checked:
            raise UserInputError(f"{where}: class {source} appears twice")
        checked[source] = target
    return checked


def load_noise_map(source: Mapping[object, object] | str | os.PathLike[str], num_classes: int) -> NoiseMap:
    """A user's map: a dict class -> class, or the path of a JSON file {"3": 5, ...}; errors name the file."""
    if isinstance(source, Mapping):
        return validate_noise_map(source, num_classes)
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise io_error(path, err, "read") from None
    except UnicodeDecodeError:
        raise UserInputError(f"noise map {path}: not a UTF-8 text file") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserInputError(f"noise map {path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    return validate_noise_map(data, num_classes, f"noise map {path}")
