"""V-Net (``vnet``): the 3D backbone of UA-MT, DTC and the released CoraNet code (paper §IV-D, Table V).

Milletari, Navab, Ahmadi, "V-Net: Fully Convolutional Neural Networks for Volumetric Medical Image
Segmentation", 3DV 2016 (arXiv:1606.04797). Layout as used by the SSL references: ``width`` (16) base filters,
five stages of 1/2/3/3/3 convolutions (3x3x3 + norm + ReLU) at width x 1/2/4/8/16, down-sampling by 2x2x2 strided
convolution, up-sampling by 2x2x2 transposed convolution, **additive** skip connections, decoder stages of
3/3/2/1 convolutions; the last feature has ``width`` channels.

Options: ``norm`` "batch" (UA-MT) or "instance" (released CoraNet); ``residual`` adds each stage's input to its
output (the original V-Net; the UA-MT/CoraNet code uses plain stages: ``residual=False``); ``dropout`` on the
bottleneck and the last feature (the MC-dropout baseline, p = 0.5); extra heads as every backbone.
Input sizes must be divisible by 16.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ssl_bench.core.backbone import ConvBlock, HeadSpec, SegNet, dropout_nd, norm_nd
from ssl_bench.core.registry import BACKBONES


class Stage(nn.Module):
    """``n`` x (conv3 + norm + ReLU), optionally residual (input added to the output before the last ReLU)."""

    def __init__(self, channels: int, n: int, norm: str, residual: bool) -> None:
        super().__init__()
        self.block = ConvBlock(3, channels, channels, norm, n=n)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.residual else out


def _down(cin: int, cout: int, norm: str) -> nn.Module:
    return nn.Sequential(nn.Conv3d(cin, cout, 2, stride=2), norm_nd(3, norm, cout), nn.ReLU(inplace=True))


def _up(cin: int, cout: int, norm: str) -> nn.Module:
    return nn.Sequential(nn.ConvTranspose3d(cin, cout, 2, stride=2), norm_nd(3, norm, cout), nn.ReLU(inplace=True))


class VNet(SegNet):
    """V-Net; input ``[B, C, D, H, W]`` with D, H, W divisible by 16."""

    input_multiple = 16

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        width: int = 16,
        norm: str = "batch",
        residual: bool = False,
        dropout: float = 0.0,
        extra_heads: Iterable[HeadSpec] = (),
        main_head: str = "linear",
    ) -> None:
        super().__init__(3, width, num_classes, extra_heads, norm, final_dropout=dropout, main_head=main_head)
        w = [width * 2**i for i in range(5)]
        self.stem = ConvBlock(3, in_channels, w[0], norm, n=1)
        self.enc = nn.ModuleList([Stage(w[i], n, norm, residual) for i, n in zip(range(1, 5), (2, 3, 3, 3))])
        self.down = nn.ModuleList([_down(w[i], w[i + 1], norm) for i in range(4)])
        self.up = nn.ModuleList([_up(w[i + 1], w[i], norm) for i in (3, 2, 1, 0)])
        self.dec = nn.ModuleList([Stage(w[i], n, norm, residual) for i, n in zip((3, 2, 1, 0), (3, 3, 2, 1))])
        self.bottleneck_dropout = dropout_nd(3, dropout)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if any(s % 16 for s in x.shape[2:]):
            raise ValueError(f"V-Net input spatial size {tuple(x.shape[2:])} must be divisible by 16")
        skips = [self.stem(x)]
        for down, stage in zip(self.down, self.enc):
            skips.append(stage(down(skips[-1])))
        x = self.bottleneck_dropout(skips.pop())
        for up, stage in zip(self.up, self.dec):
            x = stage(up(x) + skips.pop())  # additive skips (V-Net)
        return x


@BACKBONES.register("vnet", dims=(3,))
def vnet(
    in_channels: int,
    num_classes: int,
    *,
    width: int = 16,
    norm: str = "batch",
    dropout: float = 0.0,
    extra_heads: Iterable[HeadSpec] = (),
    main_head: str = "linear",
    residual: bool = False,
    **_: object,
) -> VNet:
    """V-Net (16 base filters, 4 strided-conv down-samplings, additive skips) as in UA-MT / CoraNet 3D."""
    return VNet(
        in_channels,
        num_classes,
        width=width,
        norm=norm,
        residual=residual,
        dropout=dropout,
        extra_heads=extra_heads,
        main_head=main_head,
    )
