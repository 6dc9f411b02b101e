"""CUB-200-2011, Stanford Cars, FGVC-Aircraft, Flowers-102 and Stanford Dogs: paper or official splits."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path, PurePosixPath
from typing import Callable

from ..errors import UserInputError
from .bundle import BuildOptions, DatasetBundle, DatasetSpec
from .listfile import parse_list
from .official_splits import read_aircraft, read_cars, read_cub, read_dogs, read_flowers
from .paths import require_root
from .samples import SplitSamples, labelled_split, names_from_folders
from .transforms import fine_grained_preset


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
        """Bundle with the paper's fine-grained preset."""
        image_dir = self.image_dir(opts.data_root)
        preset = fine_grained_preset(opts.image_size, opts.channels)
        return self.read_split(image_dir, opts.split).to_bundle(self.name, image_dir, preset, opts.train_augment)

    def info(self, data_root: Path | None, split: str) -> dict[str, int]:
        """Counts from the lists or annotations; only checks that the image folder exists."""
        return self.read_split(self.image_dir(data_root), split).info()

    def spec(self) -> DatasetSpec:
        """Registry entry."""
        split = "paper split (shipped lists)" if self.paper_lists else "official split"
        return DatasetSpec(f"{self.title}, {split}, paper preset", self.build, self.info)


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
