"""Transform presets (ImageNet, fine-grained paper, CIFAR, in-memory arrays), PCA lighting and channel repeat."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torchvision import transforms as T

from ..errors import UserInputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Principal components of ImageNet RGB pixels (AlexNet paper; values as in fb.resnet.torch): eigenvector i
# is column i of IMAGENET_EIGVEC, IMAGENET_EIGVAL[i] its eigenvalue.
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)

Transform = Callable[[object], torch.Tensor]


class Lighting:
    """AlexNet-style PCA lighting noise on a C×H×W RGB tensor: adds eigvec @ (alpha * eigval), alpha ~ N(0, std)."""

    def __init__(self, alpha_std: float = 0.1, eigval: Sequence[float] = IMAGENET_EIGVAL,
                 eigvec: Sequence[Sequence[float]] = IMAGENET_EIGVEC) -> None:
        self.alpha_std = alpha_std
        self.eigval = torch.tensor(eigval, dtype=torch.float32)
        self.eigvec = torch.tensor(eigvec, dtype=torch.float32)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.alpha_std == 0:
            return img
        alpha = torch.randn(3) * self.alpha_std
        shift = self.eigvec @ (alpha * self.eigval)
        return img + shift.to(img.dtype).view(3, 1, 1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(alpha_std={self.alpha_std})"


class RepeatChannels:
    """Repeat a single-channel C×H×W tensor to `channels` channels (feeds grayscale data to RGB models)."""

    def __init__(self, channels: int) -> None:
        self.channels = channels

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return img.repeat(self.channels, 1, 1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.channels})"


@dataclass(frozen=True)
class Preset:
    """Transforms of one dataset (default and light training augmentation, test) and the tensor format they make."""

    train: Transform
    light: Transform
    test: Transform
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int
    image_size: int

    def train_transform(self, augment: str) -> Transform:
        """The train split's transform at a level of AUGMENT_LEVELS; 'none' is the test transform."""
        return {"default": self.train, "light": self.light, "none": self.test}[augment]


def output_channels(native: int, requested: int | None) -> int:
    """Channel count the tensors will have; grayscale can be repeated to 3, nothing else is converted."""
    if requested is None or requested == native:
        return native
    if native == 1 and requested == 3:
        return 3
    allowed = "1 or 3" if native == 1 else str(native)
    raise UserInputError(f"channels={requested} is not available for {native}-channel data; use {allowed}")


def normalisation(mean: Sequence[float], std: Sequence[float], native_channels: int, out_channels: int,
                  input_norm: str = "dataset") -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std of the output tensors: the dataset's own (repeated with the channels), or ImageNet's, per channel
    for RGB output and averaged over RGB for single-channel output (what a summed RGB stem sees of a grey image)."""
    if input_norm == "imagenet":
        if out_channels == 3:
            return IMAGENET_MEAN, IMAGENET_STD
        return (sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,)
    repeat = out_channels // native_channels
    return tuple(mean) * repeat, tuple(std) * repeat


def _preset(size: int, native_channels: int, channels: int | None, mean: Sequence[float],
            std: Sequence[float], train_steps: list, light_steps: list, test_steps: list,
            input_norm: str = "dataset") -> Preset:
    """Finish every pipeline with the optional channel repeat and the normalisation."""
    out = output_channels(native_channels, channels)
    repeat = out // native_channels
    mean_out, std_out = normalisation(mean, std, native_channels, out, input_norm)
    tail = ([RepeatChannels(repeat)] if repeat > 1 else []) + [T.Normalize(mean_out, std_out)]
    train, light, test = (T.Compose(steps + tail) for steps in (train_steps, light_steps, test_steps))
    return Preset(train, light, test, mean_out, std_out, out, size)


def _resize_side(crop: int) -> int:
    """Resize side that keeps the 256/224 ratio of the ImageNet and paper presets at any crop size."""
    return round(crop * 256 / 224)


def light_padding(size: int) -> int:
    """Padding of the light level's random crop for small images: size/16, at least one pixel."""
    return max(1, size // 16)


def imagenet_preset(image_size: int | None, channels: int | None, color_augment: bool,
                    input_norm: str = "dataset") -> Preset:
    """RandomResizedCrop + flip (+ ColorJitter 0.4 and PCA lighting 0.1); test resize 256, centre crop 224.

    Light: resize 256, random (not centre) crop 224, no flip.
    """
    size = image_size or 224
    color = [T.ColorJitter(0.4, 0.4, 0.4)] if color_augment else []
    lighting = [Lighting(0.1)] if color_augment else []
    train = [T.RandomResizedCrop(size), T.RandomHorizontalFlip(), *color, T.ToTensor(), *lighting]
    resize = T.Resize(_resize_side(size))
    light = [resize, T.RandomCrop(size), T.ToTensor()]
    test = [resize, T.CenterCrop(size), T.ToTensor()]
    return _preset(size, 3, channels, IMAGENET_MEAN, IMAGENET_STD, train, light, test, input_norm)


def fine_grained_preset(image_size: int | None, channels: int | None, input_norm: str = "dataset") -> Preset:
    """The paper's fine-grained recipe: Resize((256, 256)), RandomCrop 224 + flip; test CenterCrop 224.

    Light: the same random crop without the flip.
    """
    size = image_size or 224
    resize = T.Resize((_resize_side(size), _resize_side(size)))
    train = [resize, T.RandomCrop(size), T.RandomHorizontalFlip(), T.ToTensor()]
    light = [resize, T.RandomCrop(size), T.ToTensor()]
    test = [resize, T.CenterCrop(size), T.ToTensor()]
    return _preset(size, 3, channels, IMAGENET_MEAN, IMAGENET_STD, train, light, test, input_norm)


def cifar_preset(image_size: int | None, channels: int | None, input_norm: str = "dataset") -> Preset:
    """Random crop with 4-pixel padding (scaled with the size) + flip; resized first when image_size != 32.

    Light: random crop with `light_padding` (2 pixels at 32), no flip.
    """
    size = image_size or 32
    resize = [T.Resize(size)] if size != 32 else []
    train = [*resize, T.RandomCrop(size, padding=size // 8), T.RandomHorizontalFlip(), T.ToTensor()]
    light = [*resize, T.RandomCrop(size, padding=light_padding(size)), T.ToTensor()]
    test = [*resize, T.ToTensor()]
    return _preset(size, 3, channels, CIFAR_MEAN, CIFAR_STD, train, light, test, input_norm)


def array_preset(native_size: int, image_size: int | None, channels: int | None, mean: Sequence[float],
                 std: Sequence[float], crop_and_flip: bool, input_norm: str = "dataset") -> Preset:
    """For in-memory 1-channel tensors (uint8 or float in [0, 1]): optional resize; the default level crops
    (padding size/14) and flips when `crop_and_flip`, else equals the test transform; light: crop with
    `light_padding`, no flip."""
    size = image_size or native_size
    base = [T.ConvertImageDtype(torch.float32)]
    if size != native_size:
        base.append(T.Resize((size, size), antialias=True))
    default = [T.RandomCrop(size, padding=max(1, size // 14)), T.RandomHorizontalFlip()] if crop_and_flip else []
    light = [T.RandomCrop(size, padding=light_padding(size))]
    return _preset(size, 1, channels, mean, std, base + default, base + light, list(base), input_norm)
