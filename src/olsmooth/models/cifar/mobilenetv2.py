"""MobileNetV2 (Sandler et al., CVPR 2018) for 32x32 images: torchvision's network, stride-1 stem and stage 2."""

from __future__ import annotations

from torch import nn

from ..layers import init_weights, rebuild_conv
from ..registry import register_model

# (expansion t, channels c, repeats n, first stride s) of the paper's Table 2, with the stride of the 24-channel
# stage set to 1 (the stem's too, below): total stride 8, so 32x32 inputs end at 4x4.
_CIFAR_SETTING = [[1, 16, 1, 1], [6, 24, 2, 1], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2],
                  [6, 320, 1, 1]]


@register_model("mobilenetv2_cifar")
def mobilenetv2_cifar(num_classes: int, in_chans: int = 3, width_mult: float = 1.0,
                      dropout: float = 0.2) -> nn.Module:
    """MobileNetV2 with the CIFAR strides; same parameters as the ImageNet model of the same width."""
    from torchvision.models.mobilenetv2 import MobileNetV2

    model = MobileNetV2(num_classes=num_classes, width_mult=width_mult, inverted_residual_setting=_CIFAR_SETTING,
                        dropout=dropout)
    model.features[0][0] = rebuild_conv(model.features[0][0], in_channels=in_chans, stride=1)
    init_weights(model.features[0][0])
    return model
