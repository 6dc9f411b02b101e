"""SAN-15 with pairwise self-attention (Zhao, Jia & Koltun, Exploring Self-attention for Image Recognition,
CVPR 2020), in plain PyTorch for 224x224 ImageNet-style inputs.

Pairwise attention: y_i = sum_{j in R(i)} softmax_j(gamma([phi(x_i) - psi(x_j), p_i - p_j])) * beta(x_j), with R(i)
the k x k window around i, p the pixel coordinates in [-1, 1] through a learned linear map, and each attention
weight shared by `share` (8) channels of beta. Window positions outside the image are left out of the softmax
(the paper's footprint restricted to the image), so any input size works; the authors' CUDA code reflection-pads
instead, which needs feature maps wider than k // 2."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvClassifier, Residual, conv_bn
from .registry import register_model


class PairwiseSelfAttention(nn.Module):
    """The pairwise subtraction-relation operator of the paper (Eq. 2 and 3, with position encoding)."""

    def __init__(self, in_channels: int, rel_channels: int, out_channels: int, kernel_size: int,
                 share: int = 8) -> None:
        super().__init__()
        self.kernel_size, self.share = kernel_size, share
        self.phi = nn.Conv2d(in_channels, rel_channels, 1)
        self.psi = nn.Conv2d(in_channels, rel_channels, 1)
        self.beta = nn.Conv2d(in_channels, out_channels, 1)
        self.position = nn.Conv2d(2, 2, 1)
        self.gamma = nn.Sequential(
            nn.BatchNorm2d(rel_channels + 2), nn.ReLU(inplace=True),
            nn.Conv2d(rel_channels + 2, rel_channels, 1, bias=False),
            nn.BatchNorm2d(rel_channels), nn.ReLU(inplace=True),
            nn.Conv2d(rel_channels, out_channels // share, 1))

    def _window(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, k*k, H*W): every pixel's k x k neighbourhood, zero outside the image."""
        b, c = x.shape[:2]
        return F.unfold(x, self.kernel_size, padding=self.kernel_size // 2).view(b, c, self.kernel_size ** 2, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype),
                                torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype), indexing="ij")
        pos = self.position(torch.stack([xs, ys]).unsqueeze(0))
        rel_pos = pos.flatten(2).unsqueeze(2) - self._window(pos)
        rel_feat = self.phi(x).flatten(2).unsqueeze(2) - self._window(self.psi(x))
        logits = self.gamma(torch.cat([rel_feat, rel_pos.expand(b, -1, -1, -1)], dim=1))
        inside = self._window(torch.ones(1, 1, h, w, device=x.device, dtype=x.dtype)) > 0
        weights = logits.masked_fill(~inside, float("-inf")).softmax(dim=2)   # (B, C/share, k*k, H*W)
        values = self._window(self.beta(x))
        # channel c of beta uses weight channel c % (C/share), as in the authors' aggregation kernel
        values = values.view(b, self.share, -1, *values.shape[2:])
        return (values * weights.unsqueeze(1)).sum(dim=3).view(b, -1, h, w)


def san_block(channels: int, kernel_size: int, share: int = 8) -> Residual:
    """Bottleneck: BN-ReLU, attention to C/4 channels (relations in C/16), BN-ReLU, 1x1 conv back to C, + x."""
    branch = nn.Sequential(
        nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
        PairwiseSelfAttention(channels, channels // 16, channels // 4, kernel_size, share),
        nn.BatchNorm2d(channels // 4), nn.ReLU(inplace=True),
        nn.Conv2d(channels // 4, channels, 1))
    return Residual(branch, nn.Identity(), final_relu=False)


class SAN(ConvClassifier):
    """1x1 conv stem (64), then five stages: 2x2 max-pool, 1x1 conv to the stage width (64, 256, 512, 1024,
    2048) + BN-ReLU around the attention blocks, global pool, fc. 224x224 inputs end at 7x7."""

    def __init__(self, layers: Sequence[int], kernels: Sequence[int], num_classes: int, in_chans: int = 3) -> None:
        widths = (64, 256, 512, 1024, 2048)
        trunk: list[nn.Module] = [conv_bn(in_chans, widths[0], kernel_size=1)]
        channels = widths[0]
        for width, depth, kernel in zip(widths, layers, kernels):
            trunk += [nn.MaxPool2d(2), nn.Conv2d(channels, width, 1, bias=False),
                      *(san_block(width, kernel) for _ in range(depth)), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            channels = width
        super().__init__(nn.Sequential(*trunk), channels, num_classes)


@register_model("san15")
def san15(num_classes: int, in_chans: int = 3) -> SAN:
    """SAN15, pairwise: [3, 2, 3, 5, 2] blocks with windows [3, 7, 7, 7, 7] (14.1M parameters published)."""
    return SAN((3, 2, 3, 5, 2), (3, 7, 7, 7, 7), num_classes, in_chans)
