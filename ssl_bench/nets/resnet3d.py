"""ResNet-18 made 3D (``resnet18-3d``), the backbone of UMCT and of CoraNet's second Table V block (§IV-D).

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016. Made 3D as the paper says: the first
7x7 convolution becomes 7x7x3 (``(3, 7, 7)`` in our (Z, Y, X) order) and every other 3x3 convolution 3x3x1
(``(1, 3, 3)``) — the anisotropic 2.5D design of AH-Net/UMCT (Liu et al. 2018; Xia et al. 2020). Stages of two
basic blocks at width x 1/2/4/8 (width 64 = ResNet-18), strides: stem (1, 2, 2), then 1, 2, 2, 2.

The decoder is ours (the paper does not describe one): at every scale a transposed convolution up-samples,
the encoder feature of that scale is added, and a (1, 3, 3) + (3, 3, 3) convolution pair mixes them; a final
transposed convolution restores the input in-plane resolution. The last feature has ``width // 2`` channels.
Input: Z divisible by 8, Y and X by 16.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ssl_bench.core.backbone import HeadSpec, SegNet, dropout_nd, norm_nd
from ssl_bench.core.registry import BACKBONES


class BasicBlock3d(nn.Module):
    """ResNet basic block with (1, 3, 3) convolutions; ``stride`` applies to all three axes."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, (1, 3, 3), stride=stride, padding=(0, 1, 1), bias=False)
        self.n1 = norm_nd(3, norm, cout)
        self.conv2 = nn.Conv3d(cout, cout, (1, 3, 3), padding=(0, 1, 1), bias=False)
        self.n2 = norm_nd(3, norm, cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv3d(cin, cout, 1, stride=stride, bias=False), norm_nd(3, norm, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.n1(self.conv1(x)))
        return self.relu(self.n2(self.conv2(out)) + self.shortcut(x))


class UpStage(nn.Module):
    def __init__(self, cin: int, cout: int, norm: str) -> None:
        super().__init__()
        self.up = nn.ConvTranspose3d(cin, cout, 2, stride=2)
        self.mix = nn.Sequential(
            nn.Conv3d(cout, cout, (1, 3, 3), padding=(0, 1, 1), bias=False),
            norm_nd(3, norm, cout),
            nn.ReLU(inplace=True),
            nn.Conv3d(cout, cout, 3, padding=1, bias=False),
            norm_nd(3, norm, cout),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.mix(self.up(x) + skip)


class ResNet18_3D(SegNet):
    """ResNet-18-3D encoder + our additive U-shaped decoder; input ``[B, C, D, H, W]``."""

    input_multiple = 16  # 8 along D (the stem keeps it), 16 in-plane; one multiple for all axes

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        width: int = 64,
        norm: str = "batch",
        dropout: float = 0.0,
        extra_heads: Iterable[HeadSpec] = (),
        main_head: str = "linear",
    ) -> None:
        feat = max(1, width // 2)
        super().__init__(3, feat, num_classes, extra_heads, norm, final_dropout=dropout, main_head=main_head)
        w = [width * 2**i for i in range(4)]
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, w[0], (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            norm_nd(3, norm, w[0]),
            nn.ReLU(inplace=True),
        )
        self.layers = nn.ModuleList()
        cin = w[0]
        for i, cout in enumerate(w):
            stride = 1 if i == 0 else 2
            self.layers.append(nn.Sequential(BasicBlock3d(cin, cout, stride, norm), BasicBlock3d(cout, cout, 1, norm)))
            cin = cout
        self.bottleneck_dropout = dropout_nd(3, dropout)
        self.ups = nn.ModuleList([UpStage(w[i + 1], w[i], norm) for i in (2, 1, 0)])
        self.final_up = nn.Sequential(
            nn.ConvTranspose3d(w[0], feat, (1, 2, 2), stride=(1, 2, 2)), norm_nd(3, norm, feat), nn.ReLU(inplace=True)
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        z, y, xx = x.shape[2:]
        if z % 8 or y % 16 or xx % 16:
            raise ValueError(f"ResNet-18-3D input size {tuple(x.shape[2:])} needs Z % 8 == 0 and Y, X % 16 == 0")
        skips = []
        h = self.stem(x)
        for layer in self.layers:
            h = layer(h)
            skips.append(h)
        h = self.bottleneck_dropout(skips.pop())
        for up in self.ups:
            h = up(h, skips.pop())
        return self.final_up(h)


@BACKBONES.register("resnet18-3d", dims=(3,))
def resnet18_3d(
    in_channels: int,
    num_classes: int,
    *,
    width: int = 64,
    norm: str = "batch",
    dropout: float = 0.0,
    extra_heads: Iterable[HeadSpec] = (),
    main_head: str = "linear",
    **_: object,
) -> ResNet18_3D:
    """ResNet-18 made 3D (7x7x3 stem, 3x3x1 convolutions, §IV-D) with a U-shaped additive decoder (ours)."""
    return ResNet18_3D(
        in_channels, num_classes, width=width, norm=norm, dropout=dropout, extra_heads=extra_heads, main_head=main_head
    )
