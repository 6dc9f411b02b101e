"""CIFAR-10 and CIFAR-100 through torchvision, from a local DATA_ROOT (download opt-in)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from torchvision.datasets import CIFAR10, CIFAR100

from ...errors import UserInputError
from ..paths import require_file, require_root
from ..spec import BuildOptions, DatasetBundle, DatasetSpec
from ..transforms import cifar_preset

_SIZES = {"train": 50_000, "test": 10_000}


_CLASSES: dict[str, type[CIFAR10]] = {"cifar10": CIFAR10, "cifar100": CIFAR100}
DEFAULTS = dict(model="cifar_resnet56", epochs=200, batch_size=128, lr=0.1, weight_decay=5e-4)


def _layout(cls: type[CIFAR10]) -> str:
    return (f"DATA_ROOT must hold {cls.base_folder}/ (the extracted python-version archive {cls.filename}); "
            "or pass download=True")


def locate_root(cls: type[CIFAR10], data_root: Path | None, download: bool) -> Path:
    """The folder that holds the batches folder; DATA_ROOT may also be the batches folder itself."""
    root = require_root(data_root, cls.__name__.lower(), _layout(cls))
    if root.name == cls.base_folder:
        root = root.parent
    if not download:
        for name, _ in cls.train_list + cls.test_list + [[cls.meta["filename"], None]]:
            require_file(root / cls.base_folder / name, _layout(cls))
    return root


def _build(name: str, opts: BuildOptions) -> DatasetBundle:
    cls = _CLASSES[name]
    root = locate_root(cls, opts.data_root, opts.download)
    preset = cifar_preset(opts.image_size, opts.channels, opts.input_norm)
    try:
        train = cls(str(root), train=True, transform=preset.train_transform(opts.augment),
                    download=opts.download)
        test = cls(str(root), train=False, transform=preset.test, download=opts.download)
    except (RuntimeError, OSError) as exc:
        raise UserInputError(f"cannot load {name} from {root / cls.base_folder}: {exc}") from None
    return DatasetBundle.from_preset(name, preset, train, test, list(train.classes))


def _info(name: str, classes: int, data_root: Path | None, split: str | None) -> dict[str, int]:
    locate_root(_CLASSES[name], data_root, download=False)
    return {**_SIZES, "classes": classes}


SPECS = {
    "cifar10": DatasetSpec("CIFAR-10, 50,000 / 10,000 32x32 images, 10 classes; crop (pad 4) + flip",
                           partial(_build, "cifar10"), partial(_info, "cifar10", 10), DEFAULTS),
    "cifar100": DatasetSpec("CIFAR-100, 50,000 / 10,000 32x32 images, 100 classes; crop (pad 4) + flip",
                            partial(_build, "cifar100"), partial(_info, "cifar100", 100), DEFAULTS),
}
