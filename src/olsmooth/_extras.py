"""The `toolkit` extra: the packages the command, engine and analysis need beyond the losses' torch and numpy,
and the one-line error that names the extra when one of them is missing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .errors import UserInputError

TOOLKIT_EXTRA = "olsmooth[toolkit]"

# Import name -> distribution name of every package the toolkit extra adds.
TOOLKIT_PACKAGES = {
    "torchvision": "torchvision",
    "timm": "timm",
    "yaml": "pyyaml",
    "tqdm": "tqdm",
    "matplotlib": "matplotlib",
    "sklearn": "scikit-learn",
    "tensorboard": "tensorboard",
    "safetensors": "safetensors",
    "PIL": "pillow",
    "scipy": "scipy",
    "fontTools": "fonttools",
}


class ToolkitMissingError(UserInputError):
    """A package of the toolkit extra is not installed (the losses work without it; the toolkit does not)."""

    def __init__(self, module_name: str) -> None:
        package = TOOLKIT_PACKAGES[module_name.partition(".")[0]]
        super().__init__(f"the olsmooth toolkit needs {package}, which is not installed; "
                         f"install the extra: pip install '{TOOLKIT_EXTRA}'")


@contextmanager
def toolkit_required() -> Iterator[None]:
    """Turn a ModuleNotFoundError for a toolkit package raised inside the block into ToolkitMissingError; any other
    missing module (a bug, not a missing extra) propagates unchanged."""
    try:
        yield
    except ModuleNotFoundError as err:
        if (err.name or "").partition(".")[0] not in TOOLKIT_PACKAGES:
            raise
        raise ToolkitMissingError(err.name) from err
