"""Wide ResNets WRN-d-k (Zagoruyko & Komodakis, BMVC 2016): pre-activation, widths 16k/32k/64k, (d-4)/6 units."""

from __future__ import annotations

from ...errors import UserInputError
from ..registry import register_model_family
from .preact_resnet import PreActResNet


@register_model_family(r"wrn(?P<depth>\d+)_(?P<width>\d+)", examples=("wrn16_4", "wrn16_8", "wrn28_10", "wrn40_4"))
def wide_resnet(num_classes: int, in_chans: int = 3, *, depth: int, width: int,
                dropout: float = 0.0) -> PreActResNet:
    """`wrn{depth}_{width}`, e.g. wrn28_10; the paper's best CIFAR results use dropout=0.3 between the convs."""
    if depth < 10 or (depth - 4) % 6 or width < 1:
        raise UserInputError(f"WRN depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...) and width >= 1, "
                             f"got wrn{depth}_{width}")
    n = (depth - 4) // 6
    return PreActResNet(num_classes, in_chans, 16, (16 * width, 32 * width, 64 * width), (n, n, n), (1, 2, 2),
                        dropout)
