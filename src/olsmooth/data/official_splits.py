"""Each fine-grained archive's own train/test split, read from its annotation files beside the image folder."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import UserInputError
from .annotations import load_mat, lookup, parse_int, read_lines, read_table
from .samples import Samples, SplitSamples, class_name_from_folder, labelled_split, names_from_folders


def read_cub(image_dir: Path, hint: str) -> SplitSamples:
    """CUB-200-2011: images.txt, train_test_split.txt, image_class_labels.txt, classes.txt (ids and labels 1-based)."""
    base = image_dir.parent
    images = read_table(base / "images.txt", hint)
    is_train = {e.key: e for e in read_table(base / "train_test_split.txt", hint)}
    labels = {e.key: e for e in read_table(base / "image_class_labels.txt", hint)}
    names = [class_name_from_folder(e.value) for e in read_table(base / "classes.txt", hint)]
    train, test = [], []
    for entry in images:
        label = lookup(labels, entry.key, base / "image_class_labels.txt")
        flag = lookup(is_train, entry.key, base / "train_test_split.txt")
        sample = (entry.value, parse_int(label.value, label.where) - 1)
        (train if parse_int(flag.value, flag.where) == 1 else test).append(sample)
    return labelled_split(train, test, str(base), names)


def read_cars(image_dir: Path, hint: str) -> SplitSamples:
    """Stanford Cars (all-in-one archive): cars_annos.mat with relative_im_path, class (1-based) and test flag."""
    path = image_dir.parent / "cars_annos.mat"
    mat = load_mat(path, ("annotations", "class_names"), hint)
    annotations = mat["annotations"]
    fields = annotations.dtype.names or ()
    for field in ("relative_im_path", "class", "test"):
        if field not in fields:
            raise UserInputError(f"{path}: annotations have no field {field!r}")
    train, test = [], []
    for i, item in enumerate(annotations):
        rel = PurePosixPath(str(item["relative_im_path"]))
        if rel.parts[0] == image_dir.name:
            rel = rel.relative_to(rel.parts[0])
        where = f"{path}: annotation {i + 1}"
        sample = (str(rel), parse_int(item["class"], where) - 1)
        (test if parse_int(item["test"], where) else train).append(sample)
    return labelled_split(train, test, str(path), [str(name) for name in mat["class_names"]])


def read_aircraft(image_dir: Path, hint: str) -> SplitSamples:
    """FGVC-Aircraft 2013b: images_variant_{trainval,test}.txt ('ID VARIANT'), 100 variants from variants.txt."""
    base = image_dir.parent
    variants = read_lines(base / "variants.txt", hint)
    index = {name: i for i, name in enumerate(variants)}

    def read(file: str) -> Samples:
        samples = []
        for entry in read_table(base / file, hint):
            if entry.value not in index:
                raise UserInputError(f"{entry.where}: variant {entry.value!r} is not in {base / 'variants.txt'}")
            samples.append((f"{entry.key}.jpg", index[entry.value]))
        return samples

    return labelled_split(read("images_variant_trainval.txt"), read("images_variant_test.txt"), str(base), variants)


def read_flowers(image_dir: Path, hint: str) -> SplitSamples:
    """Oxford Flowers-102: imagelabels.mat (1-based labels) and setid.mat; train = trnid + valid, test = tstid."""
    base = image_dir.parent
    labels = load_mat(base / "imagelabels.mat", ("labels",), hint)["labels"].astype(np.int64)
    sets = load_mat(base / "setid.mat", ("trnid", "valid", "tstid"), hint)

    def samples(ids: np.ndarray) -> Samples:
        bad = [int(i) for i in ids if not 1 <= i <= len(labels)]
        if bad:
            raise UserInputError(f"{base / 'setid.mat'}: image id {bad[0]} is outside 1..{len(labels)}")
        return [(f"image_{int(i):05d}.jpg", int(labels[i - 1]) - 1) for i in ids]

    train = samples(np.concatenate([sets["trnid"], sets["valid"]]).astype(np.int64))
    return labelled_split(train, samples(sets["tstid"].astype(np.int64)), str(base))


def read_dogs(image_dir: Path, hint: str) -> SplitSamples:
    """Stanford Dogs: train_list.mat / test_list.mat (file_list relative to Images/, labels 1-based)."""
    def read(file: str) -> Samples:
        mat = load_mat(image_dir.parent / file, ("file_list", "labels"), hint)
        if len(mat["file_list"]) != len(mat["labels"]):
            raise UserInputError(f"{image_dir.parent / file}: file_list and labels differ in length")
        where = f"{image_dir.parent / file}: labels"
        return [(str(path), parse_int(label, where) - 1) for path, label in zip(mat["file_list"], mat["labels"])]

    train, test = read("train_list.mat"), read("test_list.mat")
    return labelled_split(train, test, str(image_dir.parent), names_from_folders(train + test))
