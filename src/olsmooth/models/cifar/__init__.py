"""Networks for 32x32 images (CIFAR), one module per family; importing this registers them."""

from . import (
    densenet,
    mobilenetv2,
    preact_resnet,
    pyramidnet,
    resnet,
    resnet_cifarstem,
    resnext,
    shufflenetv2,
    wide_resnet,
)

__all__ = ["densenet", "mobilenetv2", "preact_resnet", "pyramidnet", "resnet", "resnet_cifarstem", "resnext",
           "shufflenetv2", "wide_resnet"]
