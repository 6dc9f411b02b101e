"""torchvision's ImageNet ResNets with a CIFAR stem: 3x3 stride-1 first conv and no max-pool (total stride 8)."""

from __future__ import annotations

from torch import nn

from ..layers import init_weights
from ..registry import register_model


def _register(arch: str) -> None:
    @register_model(f"{arch}_cifarstem")
    def build(num_classes: int, in_chans: int = 3, zero_init_residual: bool = False) -> nn.Module:
        import torchvision

        model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes,
                                             zero_init_residual=zero_init_residual)
        model.conv1 = nn.Conv2d(in_chans, 64, 3, stride=1, padding=1, bias=False)
        init_weights(model.conv1)
        model.maxpool = nn.Identity()
        return model

    build.__doc__ = f"torchvision {arch} with a 3x3 stride-1 stem and no max-pool, for 32x32 inputs."


for _arch in ("resnet18", "resnet34", "resnet50"):
    _register(_arch)
