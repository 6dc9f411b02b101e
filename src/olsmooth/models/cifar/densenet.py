"""DenseNet-BC for 32x32 images (Huang et al., Densely Connected Convolutional Networks, CVPR 2017)."""

from __future__ import annotations

import torch
from torch import nn

from ...errors import UserInputError
from ..layers import ConvClassifier
from ..registry import register_model_family


def _bn_relu_conv(in_channels: int, out_channels: int, kernel_size: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)]


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (4k) - BN-ReLU-3x3 conv (k); the k new maps are concatenated to the input."""

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(*_bn_relu_conv(in_channels, 4 * growth, 1), *_bn_relu_conv(4 * growth, growth, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.branch(x)], dim=1)


class DenseNetBC(ConvClassifier):
    """3x3 conv stem (2k maps), three dense blocks of (L-4)/6 bottleneck layers, transitions that halve
    channels (compression 0.5) and resolution, a final BN-ReLU, global pool and fc."""

    def __init__(self, depth: int, growth: int, num_classes: int, in_chans: int = 3,
                 compression: float = 0.5) -> None:
        if depth < 10 or (depth - 4) % 6 or growth < 1:
            raise UserInputError(f"DenseNet-BC depth must be 6n+4 with n >= 1 and growth >= 1, got {depth}, {growth}")
        layers: list[nn.Module] = [nn.Conv2d(in_chans, 2 * growth, 3, padding=1, bias=False)]
        channels = 2 * growth
        for block in range(3):
            for _ in range((depth - 4) // 6):
                layers.append(DenseLayer(channels, growth))
                channels += growth
            if block < 2:
                out = int(channels * compression)
                layers.append(nn.Sequential(*_bn_relu_conv(channels, out, 1), nn.AvgPool2d(2)))
                channels = out
        layers += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        super().__init__(nn.Sequential(*layers), channels, num_classes)


@register_model_family(r"densenet_bc(?P<depth>\d+)_k(?P<growth>\d+)", examples=(
    "densenet_bc100_k12", "densenet_bc190_k40", "densenet_bc250_k24"))
def densenet_bc(num_classes: int, in_chans: int = 3, *, depth: int, growth: int) -> DenseNetBC:
    """`densenet_bc{L}_k{k}`, e.g. densenet_bc100_k12 (0.8M in the paper)."""
    return DenseNetBC(depth, growth, num_classes, in_chans)
