"""CUB-200-2011, Stanford Cars, FGVC-Aircraft, Flowers-102 and Stanford Dogs: the paper's shipped split lists, or
each archive's own split read from its annotation files beside the image folder."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np

from ...errors import UserInputError
from ..formats.annotations import load_mat, lookup, parse_int, read_lines, read_table
from ..formats.list_file import parse_list
from ..paths import require_root
from ..samples import Samples, SplitSamples, class_name_from_folder, labelled_split, names_from_folders
from ..spec import SPLITS, BuildOptions, DatasetBundle, DatasetSpec
from ..transforms import fine_grained_preset

DEFAULTS = dict(model="resnet50", epochs=100, batch_size=64, lr=0.01, weight_decay=1e-4)


# --- official splits, one reader per archive ---------------------------------------------------------------

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


# --- the datasets -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FineGrainedSource:
    """Where a dataset's images sit inside its unpacked archive, and how its splits are read."""

    name: str
    title: str
    image_subpath: str
    unpack: str
    read_official: Callable[[Path, str], SplitSamples]
    paper_lists: tuple[str, str] | None

    @property
    def hint(self) -> str:
        """How DATA_ROOT should look, for error messages."""
        return f"{self.unpack}, so that DATA_ROOT/{self.image_subpath}/ exists, and pass DATA_ROOT"

    def image_dir(self, data_root: Path | None) -> Path:
        """The image folder: DATA_ROOT/<subpath>, any tail of the subpath under DATA_ROOT, or DATA_ROOT itself."""
        root = require_root(data_root, self.name, self.hint)
        parts = PurePosixPath(self.image_subpath).parts
        for start in range(len(parts)):
            candidate = root.joinpath(*parts[start:])
            if candidate.is_dir():
                return candidate
        if root.name == parts[-1] and root.is_dir():
            return root
        raise UserInputError(f"{self.name}: missing image folder {root / self.image_subpath}; {self.hint}"
                             f" (or pass the {parts[-1]}/ folder itself)")

    def read_split(self, image_dir: Path, split: str) -> SplitSamples:
        """The paper's shipped lists, or the archive's own annotations (also for 'paper' when none are shipped)."""
        if split == "official" or self.paper_lists is None:
            return self.read_official(image_dir, self.hint)
        source = f"olsmooth/data/splits/{self.name}"
        folder = files("olsmooth.data") / "splits" / self.name
        train, test = (parse_list((folder / name).read_text(encoding="utf-8"), f"{source}/{name}")
                       for name in self.paper_lists)
        return labelled_split(train, test, source, names_from_folders(train + test))

    def build(self, opts: BuildOptions) -> DatasetBundle:
        """Bundle with the paper's fine-grained preset, once every image of the split is known to exist."""
        image_dir = self.image_dir(opts.data_root)
        samples = self.read_split(image_dir, opts.split)
        samples.require_images(image_dir, f"{self.name} ({opts.split} split)")
        preset = fine_grained_preset(opts.image_size, opts.channels, opts.input_norm)
        return samples.to_bundle(self.name, image_dir, preset, opts.augment)

    def info(self, data_root: Path | None, split: str) -> dict[str, int]:
        """Counts from the lists or annotations; only checks that the image folder exists."""
        return self.read_split(self.image_dir(data_root), split).info()

    def spec(self) -> DatasetSpec:
        """Registry entry."""
        split = "paper split (shipped lists)" if self.paper_lists else "official split"
        return DatasetSpec(f"{self.title}, {split}, paper preset", self.build, self.info, DEFAULTS, splits=SPLITS)


SOURCES = (
    FineGrainedSource("cub200", "CUB-200-2011 birds (200 classes)", "CUB_200_2011/images",
                      "unpack CUB_200_2011.tgz into DATA_ROOT", read_cub, ("train.txt", "test.txt")),
    FineGrainedSource("cars", "Stanford Cars (196 classes)", "car_ims",
                      "unpack car_ims.tgz into DATA_ROOT and put cars_annos.mat beside car_ims/",
                      read_cars, ("train.txt", "test.txt")),
    FineGrainedSource("aircraft", "FGVC-Aircraft 2013b (paper: 90 classes; official: 100 variants)",
                      "fgvc-aircraft-2013b/data/images", "unpack fgvc-aircraft-2013b.tar.gz into DATA_ROOT",
                      read_aircraft, ("trainval.txt", "test.txt")),
    FineGrainedSource("flowers102", "Oxford Flowers-102 (102 classes)", "jpg",
                      "unpack 102flowers.tgz into DATA_ROOT and put imagelabels.mat and setid.mat beside jpg/",
                      read_flowers, ("train.txt", "test.txt")),
    FineGrainedSource("dogs", "Stanford Dogs (120 classes)", "Images",
                      "unpack images.tar and lists.tar into DATA_ROOT"
                      " (train_list.mat and test_list.mat beside Images/)",
                      read_dogs, None),
)

SPECS = {source.name: source.spec() for source in SOURCES}
