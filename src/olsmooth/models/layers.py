"""Building blocks shared by our networks: residual units, zero-padding shortcuts, the pooled classifier."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

BlockFn = Callable[[int, int, int], nn.Module]  # (in_channels, out_channels, stride) -> block


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a batch norm follows)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def conv_bn(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
            relu: bool = True) -> nn.Sequential:
    """Convolution + batch norm (+ ReLU), the post-activation unit of ResNet-style stems and branches."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                  groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def rebuild_conv(conv: nn.Conv2d, in_channels: int | None = None, stride: int | None = None) -> nn.Conv2d:
    """A fresh Conv2d like `conv` but with other input channels or stride (stem surgery on library models)."""
    return nn.Conv2d(in_channels or conv.in_channels, conv.out_channels, conv.kernel_size,
                     stride=stride or conv.stride, padding=conv.padding, dilation=conv.dilation,
                     groups=conv.groups, bias=conv.bias is not None, padding_mode=conv.padding_mode)


class ZeroPadShortcut(nn.Module):
    """Parameter-free shortcut: subsample (ResNet option A) or 2x2-average (PyramidNet), then zero-pad channels."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, pool: str = "subsample") -> None:
        super().__init__()
        if out_channels < in_channels or pool not in ("subsample", "avg"):
            raise ValueError("ZeroPadShortcut widens only, with pool 'subsample' or 'avg'")
        self.extra_channels, self.stride, self.pool = out_channels - in_channels, stride, pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            if self.pool == "avg":
                x = F.avg_pool2d(x, self.stride, self.stride, ceil_mode=True)
            else:
                x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels)) if self.extra_channels else x


def shortcut(in_channels: int, out_channels: int, stride: int, kind: str = "B") -> nn.Module:
    """Identity when shapes agree; else option A (zero padding) or option B (1x1 conv + BN projection)."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    if kind == "A":
        return ZeroPadShortcut(in_channels, out_channels, stride)
    return conv_bn(in_channels, out_channels, kernel_size=1, stride=stride, relu=False)


class Residual(nn.Module):
    """y = branch(x) + shortcut(x), optionally followed by ReLU (post-activation ResNet units)."""

    def __init__(self, branch: nn.Module, shortcut: nn.Module, final_relu: bool = True) -> None:
        super().__init__()
        self.branch, self.shortcut, self.final_relu = branch, shortcut, final_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x) + self.shortcut(x)
        return F.relu(out, inplace=True) if self.final_relu else out


def basic_block(in_channels: int, out_channels: int, stride: int = 1, shortcut_kind: str = "B") -> Residual:
    """The two-3x3-conv ResNet unit of He et al. 2016, post-activation."""
    branch = nn.Sequential(conv_bn(in_channels, out_channels, stride=stride),
                           conv_bn(out_channels, out_channels, relu=False))
    return Residual(branch, shortcut(in_channels, out_channels, stride, shortcut_kind))


class PreActBlock(nn.Module):
    """Pre-activation unit (He et al., Identity Mappings 2016): BN-ReLU-conv twice; dropout between (WRN)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = conv3x3(out_channels, out_channels)
        self.projection = None
        if stride != 1 or in_channels != out_channels:
            self.projection = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.bn1(x))
        # a projecting shortcut sees the pre-activated input, as in the paper and in WRN
        skip = x if self.projection is None else self.projection(act)
        out = self.conv1(act)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + skip


def residual_stages(block: BlockFn, in_channels: int, widths: Sequence[int], depths: Sequence[int],
                    strides: Sequence[int]) -> list[nn.Sequential]:
    """Stages of `depths[i]` blocks; each stage's first block changes the width to `widths[i]` and strides."""
    stages = []
    for width, depth, stride in zip(widths, depths, strides):
        blocks = [block(in_channels, width, stride)] + [block(width, width, 1) for _ in range(depth - 1)]
        stages.append(nn.Sequential(*blocks))
        in_channels = width
    return stages


def init_weights(module: nn.Module) -> None:
    """He (fan-out) init for convolutions, BN to identity, zero linear biases: the ResNet-paper recipe."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


class ConvClassifier(nn.Module):
    """`features` (any conv trunk) -> global average pool -> linear `fc`; the head every CNN here shares."""

    def __init__(self, features: nn.Module, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.fc = nn.Linear(num_features, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features before the classifier (num_features per image)."""
        return torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))
