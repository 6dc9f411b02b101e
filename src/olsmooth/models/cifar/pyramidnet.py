"""Additive PyramidNet for 32x32 images (Han, Kim & Kim, Deep Pyramidal Residual Networks, CVPR 2017).

Widths grow by alpha/N after each of the N = 3n basic units (16 -> 16 + alpha); units are BN-conv-BN-ReLU-conv-BN
with no ReLU after the addition; shortcuts zero-pad the new channels and average-pool 2x2 when downsampling."""

from __future__ import annotations

from torch import nn

from ...errors import UserInputError
from ..layers import ConvClassifier, Residual, ZeroPadShortcut, conv3x3, conv_bn
from ..registry import register_model_family


def pyramid_block(in_channels: int, out_channels: int, stride: int) -> Residual:
    """The paper's basic pyramidal unit."""
    branch = nn.Sequential(nn.BatchNorm2d(in_channels), conv3x3(in_channels, out_channels, stride),
                           nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
                           conv3x3(out_channels, out_channels), nn.BatchNorm2d(out_channels))
    return Residual(branch, ZeroPadShortcut(in_channels, out_channels, stride, pool="avg"), final_relu=False)


class PyramidNet(ConvClassifier):
    """conv-BN stem (16), 3n pyramidal units (stride 2 at the first unit of stages 2 and 3), BN-ReLU, pool, fc."""

    def __init__(self, depth: int, alpha: int, num_classes: int, in_chans: int = 3) -> None:
        if depth < 8 or (depth - 2) % 6 or alpha < 0:
            raise UserInputError(f"PyramidNet depth must be 6n+2 with n >= 1 and alpha >= 0, got {depth}, {alpha}")
        n = (depth - 2) // 6
        layers: list[nn.Module] = [conv_bn(in_chans, 16, relu=False)]
        channels = 16
        for k in range(3 * n):
            width = round(16 + alpha * (k + 1) / (3 * n))
            layers.append(pyramid_block(channels, width, 2 if k in (n, 2 * n) else 1))
            channels = width
        layers += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        super().__init__(nn.Sequential(*layers), channels, num_classes)


@register_model_family(r"pyramidnet(?P<depth>\d+)_a(?P<alpha>\d+)", examples=(
    "pyramidnet110_a48", "pyramidnet110_a84", "pyramidnet110_a270"))
def pyramidnet(num_classes: int, in_chans: int = 3, *, depth: int, alpha: int) -> PyramidNet:
    """`pyramidnet{depth}_a{alpha}`, e.g. pyramidnet110_a48 (1.7M in the paper)."""
    return PyramidNet(depth, alpha, num_classes, in_chans)
