"""Common shape of every segmentation backbone: a feature extractor, a main head, optional extra heads.

``net(x)`` returns the main head's logits; :meth:`SegNet.forward_heads` returns every head's logits from one
shared feature pass (CoraNet's conservative/radical heads, an aleatoric variance head, ...). Inference-time
parameter counts exclude the extra heads (:meth:`SegNet.inference_parameters`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class HeadSpec:
    """An extra output head on the last decoder feature.

    Attributes:
        name: key in :meth:`SegNet.forward_heads`.
        out_channels: number of output channels (usually the number of classes).
        kind: ``"conv"`` = two 3x3 conv + BN + ReLU then a 1x1 conv (CoraNet's branch, paper §IV-A);
            ``"linear"`` = a single 1x1 conv.
    """

    name: str
    out_channels: int
    kind: str = "conv"


def conv_nd(dims: int) -> type[nn.Module]:
    return nn.Conv2d if dims == 2 else nn.Conv3d


def norm_nd(dims: int, norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d)(channels)
    if norm == "instance":
        return (nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d)(channels, affine=True)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}: use 'batch', 'instance' or 'none'")


def dropout_nd(dims: int, p: float) -> nn.Module:
    if p <= 0:
        return nn.Identity()
    return (nn.Dropout2d if dims == 2 else nn.Dropout3d)(p)


class ConvBlock(nn.Sequential):
    """``n`` x (3x3 conv -> norm -> ReLU)."""

    def __init__(self, dims: int, cin: int, cout: int, norm: str = "batch", n: int = 2) -> None:
        layers: list[nn.Module] = []
        for i in range(n):
            layers += [
                conv_nd(dims)(cin if i == 0 else cout, cout, 3, padding=1, bias=norm == "none"),
                norm_nd(dims, norm, cout),
                nn.ReLU(inplace=True),
            ]
        super().__init__(*layers)


def make_head(dims: int, cin: int, spec: HeadSpec, norm: str = "batch") -> nn.Module:
    conv = conv_nd(dims)
    if spec.kind == "linear":
        return conv(cin, spec.out_channels, 1)
    if spec.kind == "conv":
        return nn.Sequential(ConvBlock(dims, cin, cin, norm, n=2), conv(cin, spec.out_channels, 1))
    raise ValueError(f"unknown head kind {spec.kind!r}: use 'conv' or 'linear'")


class SegNet(nn.Module):
    """Base class: subclasses implement :meth:`features`.

    ``main_head`` is the kind of the main head (``"linear"``: a 1x1 conv, the classic U-Net output; ``"conv"``:
    the CoraNet branch of two 3x3 conv + BN + ReLU and a 1x1 conv).
    """

    dims: int
    feature_channels: int
    #: every spatial input size must be a multiple of this (the product of the encoder's strides)
    input_multiple: int = 32

    def __init__(
        self,
        dims: int,
        feature_channels: int,
        num_classes: int,
        extra_heads: Iterable[HeadSpec] = (),
        norm: str = "batch",
        final_dropout: float = 0.0,
        main_head: str = "linear",
    ) -> None:
        super().__init__()
        self.dims = dims
        self.feature_channels = feature_channels
        self.num_classes = num_classes
        self.final_dropout = dropout_nd(dims, final_dropout)
        self.head = make_head(dims, feature_channels, HeadSpec("main", num_classes, main_head), norm)
        self.extra_heads = nn.ModuleDict({h.name: make_head(dims, feature_channels, h, norm) for h in extra_heads})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last decoder feature map ``[B, feature_channels, *spatial]``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Main-head logits ``[B, num_classes, *spatial]`` for input ``[B, C, *spatial]``."""
        return self.head(self.final_dropout(self.features(x)))

    def forward_heads(self, x: torch.Tensor, names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """Logits of the main head (key ``"main"``) and of the extra heads ``names`` (default: all)."""
        feat = self.features(x)
        out = {"main": self.head(self.final_dropout(feat))}
        for name in self.extra_heads if names is None else names:
            out[name] = self.extra_heads[name](feat)
        return out

    def inference_parameters(self) -> int:
        """Parameters used at test time (extra heads are discarded, paper §III-D2)."""
        extra = sum(p.numel() for p in self.extra_heads.parameters())
        return sum(p.numel() for p in self.parameters()) - extra
