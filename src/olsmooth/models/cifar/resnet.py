"""ResNets for 32x32 images (He et al., CVPR 2016, Sec. 4.2): 6n+2 layers, widths 16/32/64, option-A shortcuts."""

from __future__ import annotations

from functools import partial
from typing import Sequence

from torch import nn

from ...errors import UserInputError
from ..layers import ConvClassifier, basic_block, conv_bn, residual_stages
from ..registry import register_model_family


class CifarResNet(ConvClassifier):
    """3x3 conv stem, three stages of n basic blocks (strides 1, 2, 2), global pool, linear."""

    def __init__(self, depth: int, num_classes: int, in_chans: int = 3, widths: Sequence[int] = (16, 32, 64),
                 shortcut: str = "A") -> None:
        if depth < 8 or (depth - 2) % 6:
            raise UserInputError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, ...), got {depth}")
        if shortcut not in ("A", "B"):
            raise UserInputError(f"shortcut must be 'A' (zero padding) or 'B' (projection), got {shortcut!r}")
        n = (depth - 2) // 6
        stages = residual_stages(partial(basic_block, shortcut_kind=shortcut), widths[0], widths, (n, n, n),
                                 (1, 2, 2))
        super().__init__(nn.Sequential(conv_bn(in_chans, widths[0]), *stages), widths[-1], num_classes)


@register_model_family(r"cifar_resnet(?P<depth>\d+)", examples=(
    "cifar_resnet20", "cifar_resnet32", "cifar_resnet44", "cifar_resnet56", "cifar_resnet110", "cifar_resnet1202"))
def cifar_resnet(num_classes: int, in_chans: int = 3, *, depth: int, shortcut: str = "A") -> CifarResNet:
    """`cifar_resnet{6n+2}`: the paper's CIFAR-10 ResNets; shortcut "A" as published, "B" for 1x1 projections."""
    return CifarResNet(depth, num_classes, in_chans, shortcut=shortcut)
