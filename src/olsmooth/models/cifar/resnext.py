"""ResNeXt-29 for CIFAR (Xie et al., Aggregated Residual Transformations, CVPR 2017, Sec. 5.3).

A 3x3 conv stem (64), three stages of three bottleneck blocks with outputs 256/512/1024 (strides 1, 2, 2 on
the grouped 3x3 conv), global pool and fc: 29 layers. `resnext29_{C}x{d}d` has cardinality C and d channels
per group in the first stage, doubled in each later stage; projection shortcuts where shapes change."""

from __future__ import annotations

from functools import partial

from torch import nn

from ...errors import UserInputError
from ..layers import ConvClassifier, Residual, conv_bn, residual_stages, shortcut
from ..registry import register_model_family


def resnext_block(in_channels: int, out_channels: int, stride: int, cardinality: int, base_width: int) -> Residual:
    """1x1 reduce -> grouped 3x3 (C groups of d * out/256 channels) -> 1x1 expand, post-activation."""
    group_width = cardinality * (base_width * out_channels // 256)
    branch = nn.Sequential(conv_bn(in_channels, group_width, kernel_size=1),
                           conv_bn(group_width, group_width, stride=stride, groups=cardinality),
                           conv_bn(group_width, out_channels, kernel_size=1, relu=False))
    return Residual(branch, shortcut(in_channels, out_channels, stride, "B"))


class ResNeXt29(ConvClassifier):
    """The CIFAR ResNeXt-29 of the paper with cardinality C and bottleneck width d."""

    def __init__(self, cardinality: int, base_width: int, num_classes: int, in_chans: int = 3) -> None:
        if cardinality < 1 or base_width < 1:
            raise UserInputError(f"ResNeXt cardinality and width must be positive, got {cardinality}x{base_width}d")
        block = partial(resnext_block, cardinality=cardinality, base_width=base_width)
        stages = residual_stages(block, 64, (256, 512, 1024), (3, 3, 3), (1, 2, 2))
        super().__init__(nn.Sequential(conv_bn(in_chans, 64), *stages), 1024, num_classes)


@register_model_family(r"resnext29_(?P<cardinality>\d+)x(?P<base_width>\d+)d", examples=(
    "resnext29_2x64d", "resnext29_4x64d", "resnext29_8x64d", "resnext29_16x64d", "resnext29_32x4d"))
def resnext29(num_classes: int, in_chans: int = 3, *, cardinality: int, base_width: int) -> ResNeXt29:
    """`resnext29_{C}x{d}d`, e.g. resnext29_8x64d (the paper's 34.4M model)."""
    return ResNeXt29(cardinality, base_width, num_classes, in_chans)
