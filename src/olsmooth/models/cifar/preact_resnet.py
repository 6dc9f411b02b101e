"""Pre-activation ResNets (He et al., Identity Mappings in Deep Residual Networks, ECCV 2016) for 32x32 images."""

from __future__ import annotations

from functools import partial
from typing import Sequence

from torch import nn

from ..layers import ConvClassifier, PreActBlock, conv3x3, residual_stages
from ..registry import register_model


class PreActResNet(ConvClassifier):
    """3x3 conv stem, stages of pre-activation units, a final BN-ReLU (the paper's extra activation), pool, fc.

    Also the skeleton of Wide ResNets, which are pre-activation ResNets with wide stages and dropout."""

    def __init__(self, num_classes: int, in_chans: int, stem_width: int, widths: Sequence[int],
                 depths: Sequence[int], strides: Sequence[int], dropout: float = 0.0) -> None:
        stages = residual_stages(partial(PreActBlock, dropout=dropout), stem_width, widths, depths, strides)
        features = nn.Sequential(conv3x3(in_chans, stem_width), *stages, nn.BatchNorm2d(widths[-1]),
                                 nn.ReLU(inplace=True))
        super().__init__(features, widths[-1], num_classes)


_WIDTHS, _STRIDES = (64, 128, 256, 512), (1, 2, 2, 2)


@register_model("preact_resnet18")
def preact_resnet18(num_classes: int, in_chans: int = 3) -> PreActResNet:
    """PreAct ResNet-18: [2, 2, 2, 2] units of widths 64-512 on a stride-1 stem (the usual CIFAR layout)."""
    return PreActResNet(num_classes, in_chans, 64, _WIDTHS, (2, 2, 2, 2), _STRIDES)


@register_model("preact_resnet34")
def preact_resnet34(num_classes: int, in_chans: int = 3) -> PreActResNet:
    """PreAct ResNet-34: [3, 4, 6, 3] units of widths 64-512 on a stride-1 stem."""
    return PreActResNet(num_classes, in_chans, 64, _WIDTHS, (3, 4, 6, 3), _STRIDES)
