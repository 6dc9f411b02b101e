"""ShuffleNet V2 (Ma et al., ECCV 2018) for 32x32 images: torchvision's network with a stride-1 stem, no max-pool."""

from __future__ import annotations

from torch import nn

from ...errors import UserInputError
from ..layers import rebuild_conv
from ..registry import register_model

# Output channels of conv1, stages 2-4 and conv5 per width multiplier (the paper's Table 5).
_CHANNELS = {0.5: (24, 48, 96, 192, 1024), 1.0: (24, 116, 232, 464, 1024),
             1.5: (24, 176, 352, 704, 1024), 2.0: (24, 244, 488, 976, 2048)}


@register_model("shufflenetv2_cifar")
def shufflenetv2_cifar(num_classes: int, in_chans: int = 3, width: float = 1.0) -> nn.Module:
    """Stages of [4, 8, 4] units, each starting with stride 2: 32x32 inputs end at 4x4 (total stride 8)."""
    from torchvision.models.shufflenetv2 import ShuffleNetV2

    if width not in _CHANNELS:
        raise UserInputError(f"ShuffleNet V2 width must be one of {sorted(_CHANNELS)}, got {width}")
    model = ShuffleNetV2([4, 8, 4], list(_CHANNELS[width]), num_classes=num_classes)
    model.conv1[0] = rebuild_conv(model.conv1[0], in_channels=in_chans, stride=1)
    model.maxpool = nn.Identity()
    return model
