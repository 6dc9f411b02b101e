"""Small networks for the embedded digits (8x8), Fashion-MNIST (28x28) and other small images; CPU-friendly."""

from __future__ import annotations

from typing import Sequence

from torch import nn

from ..errors import UserInputError
from .cifar.resnet import CifarResNet
from .layers import ConvClassifier, conv_bn
from .registry import register_model


@register_model("mlp")
def mlp(num_classes: int, in_chans: int = 3, grid: int = 8, hidden: Sequence[int] = (512, 256),
        dropout: float = 0.0) -> nn.Sequential:
    """Average-pool to grid x grid (identity on 8x8 digits; any input size works), flatten, ReLU hidden layers."""
    if grid < 1 or not hidden or min(hidden) < 1:
        raise UserInputError(f"mlp needs grid >= 1 and positive hidden widths, got grid={grid}, hidden={hidden}")
    layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(grid), nn.Flatten()]
    width = in_chans * grid * grid
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


@register_model("linear")
def linear(num_classes: int, in_chans: int = 3, grid: int = 8) -> nn.Sequential:
    """Average-pool to grid x grid, flatten, one linear layer: a multinomial logistic regression (many-class runs)."""
    if grid < 1:
        raise UserInputError(f"linear needs grid >= 1, got grid={grid}")
    return nn.Sequential(nn.AdaptiveAvgPool2d(grid), nn.Flatten(), nn.Linear(in_chans * grid * grid, num_classes))


@register_model("small_cnn")
def small_cnn(num_classes: int, in_chans: int = 3, widths: Sequence[int] = (32, 64, 128)) -> ConvClassifier:
    """3x3 conv-BN-ReLU blocks with 2x2 max-pooling between them, global average pool, linear."""
    if not widths or min(widths) < 1:
        raise UserInputError(f"small_cnn needs positive widths, got {widths}")
    layers: list[nn.Module] = []
    channels = in_chans
    for i, width in enumerate(widths):
        if i:
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        layers.append(conv_bn(channels, width))
        channels = width
    return ConvClassifier(nn.Sequential(*layers), channels, num_classes)


@register_model("small_resnet")
def small_resnet(num_classes: int, in_chans: int = 3, depth: int = 8,
                 widths: Sequence[int] = (16, 32, 64)) -> CifarResNet:
    """The CIFAR ResNet layout at depth 8 by default (one basic block per stage, option-A shortcuts)."""
    return CifarResNet(depth, num_classes, in_chans, widths=widths)
