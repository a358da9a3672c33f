"""Common shape of every segmentation backbone: a feature extractor, a main head, optional extra heads.

``net(x)`` returns the main head's logits; :meth:`SegNet.forward_heads` returns every head's logits from one
shared feature pass (CoraNet's conservative/radical heads, an aleatoric variance head, ...). Inference-time
parameter counts exclude the extra heads (:meth:`SegNet.inference_parameters`).

CoraNet's branches (paper §IV-A: "three branches, each two 3x3 and one 1x1 convolutional layers with BN and
ReLU"; §III-D2: U-Net 29.6 M parameters, CoraNet 29.8 M for training and 29.6 M at test) are head kind
``"branch"``: on a backbone whose last decoder block can be duplicated (the U-Nets: two 3x3 conv + BN + ReLU on the
concatenated skip and up-sampled features) a branch is a freshly initialised copy of that block on the same input
plus a 1x1 conv (``"block"``), and the main branch D is the backbone's own last block with its 1x1 output — so
E + D is exactly the plain backbone and D_con + D_rad add two blocks (0.22 M at width 64, the paper's 0.2 M).
Backbones without a duplicable block (V-Net, ResNet-18-3D, smp encoders) build ``"conv"`` heads instead: two
3x3 conv + BN + ReLU on the last feature and a 1x1 conv (and a ``"conv"`` main head).
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
        kind: ``"branch"`` = CoraNet's branch as the backbone defines it (``"block"`` or ``"conv"``, see the module
            docstring); ``"block"`` = a copy of the last decoder block on its input + a 1x1 conv; ``"conv"`` = two
            3x3 conv + BN + ReLU on the last feature then a 1x1 conv; ``"linear"`` = a single 1x1 conv.
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


HEAD_KINDS = ("branch", "block", "conv", "linear")


def make_head(
    dims: int, cin: int, spec: HeadSpec, norm: str = "batch", block_in: int | None = None, dropout: float = 0.0
) -> nn.Module:
    """Head on the last feature (``cin`` channels) or, for ``"block"``, on the last block's input (``block_in``)."""
    conv = conv_nd(dims)
    if spec.kind == "linear":
        return conv(cin, spec.out_channels, 1)
    if spec.kind == "conv":
        return nn.Sequential(ConvBlock(dims, cin, cin, norm, n=2), conv(cin, spec.out_channels, 1))
    if spec.kind == "block":
        if block_in is None:
            raise ValueError(f"head {spec.name!r}: this backbone has no duplicable last block; use kind 'conv'")
        return nn.Sequential(
            ConvBlock(dims, block_in, cin, norm, n=2), dropout_nd(dims, dropout), conv(cin, spec.out_channels, 1)
        )
    raise ValueError(f"unknown head kind {spec.kind!r}: use one of {HEAD_KINDS}")


#: Decoder up-sampling modes (``upsampling=`` of the U-Nets): a 2x2 transposed convolution with stride 2, or a
#: 1x1 convolution followed by x2 interpolation (bilinear/trilinear with align_corners=True, or nearest), the
#: modes of MC-Net's decoders (ycwu1997/MC-Net ``code/networks/unet.py`` ``UpBlock`` modes 0, 1, 2).
UPSAMPLING = ("transposed", "bilinear", "nearest")


def upsampling_layers(dims: int, cin: int, cout: int, mode: str) -> tuple[nn.Module, nn.Module]:
    """(channel reduction, x2 up-sampling) of one decoder level, ``[B, cin, *S] -> [B, cout, *2S]``.

    ``"transposed"``: (identity, 2x2 transposed conv); ``"bilinear"``/``"nearest"``: (1x1 conv, interpolation;
    bilinear is trilinear in 3D).
    """
    if mode == "transposed":
        upconv = nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d
        return nn.Identity(), upconv(cin, cout, 2, stride=2)
    if mode == "bilinear":
        interp = nn.Upsample(scale_factor=2, mode="bilinear" if dims == 2 else "trilinear", align_corners=True)
    elif mode == "nearest":
        interp = nn.Upsample(scale_factor=2, mode="nearest")
    else:
        raise ValueError(f"unknown upsampling {mode!r}: use one of {UPSAMPLING}")
    return conv_nd(dims)(cin, cout, 1), interp


class SegNet(nn.Module):
    """Base class: subclasses implement :meth:`features`.

    ``main_head`` is the kind of the main head (``"linear"``: a 1x1 conv, the classic U-Net output; ``"conv"``:
    two 3x3 conv + BN + ReLU and a 1x1 conv; ``"branch"``: CoraNet's main branch D, i.e. ``"linear"`` on a backbone
    with a duplicable last block, whose own last block is then D, else ``"conv"``).

    A backbone with a duplicable last decoder block passes ``block_in_channels`` (that block's input channels) and
    implements :meth:`trunk` (the block's input) and :attr:`last_block`.

    Multi-scale interface (URPC's pyramid, MC-Net's shared encoder, UniMatch's feature perturbation): an
    encoder-decoder backbone sets :attr:`decoder_channels` and :attr:`encoder_modules` and implements
    :meth:`encode` and :meth:`decoder_levels`; :meth:`decoder_features`, :meth:`decode` and :meth:`share_encoder`
    follow. Backbones without it raise ``NotImplementedError`` naming the backbone.
    """

    dims: int
    feature_channels: int
    #: every spatial input size must be a multiple of this (the product of the encoder's strides)
    input_multiple: int = 32
    #: output channels of each decoder level, deepest first (the last is ``feature_channels``); () = not exposed
    decoder_channels: tuple[int, ...] = ()
    #: attribute names of the encoder's modules (what :meth:`share_encoder` ties); () = not exposed
    encoder_modules: tuple[str, ...] = ()
    #: the decoder's up-sampling mode (one of :data:`UPSAMPLING`); None = fixed by the backbone, not an option
    upsampling: str | None = None

    def __init__(
        self,
        dims: int,
        feature_channels: int,
        num_classes: int,
        extra_heads: Iterable[HeadSpec] = (),
        norm: str = "batch",
        final_dropout: float = 0.0,
        main_head: str = "linear",
        block_in_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.dims = dims
        self.feature_channels = feature_channels
        self.num_classes = num_classes
        self.block_in_channels = block_in_channels
        self.final_dropout = dropout_nd(dims, final_dropout)
        main = self._resolve(HeadSpec("main", num_classes, main_head), main=True)
        if main.kind == "block":
            raise ValueError("the main head cannot be a 'block' head: the backbone's own last block is the main branch")
        self.head = make_head(dims, feature_channels, main, norm)
        specs = [self._resolve(h) for h in extra_heads]
        #: names of the heads computed from the last block's input
        self.block_heads = {h.name for h in specs if h.kind == "block"}
        self.extra_heads = nn.ModuleDict(
            {h.name: make_head(dims, feature_channels, h, norm, block_in_channels, final_dropout) for h in specs}
        )

    def _resolve(self, spec: HeadSpec, main: bool = False) -> HeadSpec:
        """Turn kind ``"branch"`` into this backbone's CoraNet branch (see the module docstring)."""
        if spec.kind != "branch":
            return spec
        duplicable = self.block_in_channels is not None
        kind = ("linear" if main else "block") if duplicable else "conv"
        return HeadSpec(spec.name, spec.out_channels, kind)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Input of the last decoder block ``[B, block_in_channels, *spatial]`` (backbones with ``"block"`` heads)."""
        raise NotImplementedError(f"{type(self).__name__} has no duplicable last block")

    @property
    def last_block(self) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} has no duplicable last block")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last decoder feature map ``[B, feature_channels, *spatial]``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Main-head logits ``[B, num_classes, *spatial]`` for input ``[B, C, *spatial]``."""
        return self.head_logits(self.features(x))

    def head_logits(self, feat: torch.Tensor) -> torch.Tensor:
        """Main-head logits ``[B, num_classes, *S]`` of a last decoder feature ``[B, feature_channels, *S]``."""
        return self.head(self.final_dropout(feat))

    # -- multi-scale interface ------------------------------------------------------------------------------------

    def _no_levels(self, what: str) -> NotImplementedError:
        return NotImplementedError(
            f"backbone {type(self).__name__} does not expose its {what}; use a U-Net (unet2d, unet3d, ssl4mis-unet)"
        )

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features, shallowest (stride 1) first, the bottleneck last."""
        raise self._no_levels("encoder features (encode)")

    def decoder_levels(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Output of every decoder level for encoder features ``feats`` (from :meth:`encode`), deepest first."""
        raise self._no_levels("decoder levels (decoder_levels)")

    def decoder_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Output of every decoder level, deepest first: with ``n = len(decoder_channels)`` levels, level ``i`` is
        ``[B, decoder_channels[i], *S / 2^(n-1-i)]`` for input ``[B, C, *S]``; the last is :meth:`features` ``(x)``."""
        if not self.decoder_channels:
            raise self._no_levels("decoder levels (decoder_features)")
        return self.decoder_levels(self.encode(x))

    def decode(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Main-head logits ``[B, num_classes, *S]`` from encoder features (``net.decode(net.encode(x)) == net(x)``)."""
        return self.head_logits(self.decoder_levels(feats)[-1])

    def share_encoder(self, other: SegNet) -> None:
        """Use ``other``'s encoder modules (the same parameters, not copies): one encoder, several decoders."""
        if not self.encoder_modules or type(other) is not type(self):
            raise self._no_levels("encoder for sharing (share_encoder)")
        for name in self.encoder_modules:
            setattr(self, name, getattr(other, name))

    def forward_heads(self, x: torch.Tensor, names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """Logits of the main head (key ``"main"``) and of the extra heads ``names`` (default: all)."""
        names = list(self.extra_heads if names is None else names)
        trunk = None
        if self.block_heads.intersection(names):
            trunk = self.trunk(x)
            feat = self.last_block(trunk)
        else:
            feat = self.features(x)
        out = {"main": self.head(self.final_dropout(feat))}
        for name in names:
            out[name] = self.extra_heads[name](trunk if name in self.block_heads else feat)
        return out

    def inference_parameters(self) -> int:
        """Parameters used at test time (extra heads are discarded, paper §III-D2)."""
        extra = sum(p.numel() for p in self.extra_heads.parameters())
        return sum(p.numel() for p in self.parameters()) - extra


class TrunkDecoderNet(SegNet):
    """A :class:`SegNet` whose decoder is written once, as :meth:`_decode_to_trunk` (every decoder level but the last
    block, then that block's input); :meth:`trunk`, :meth:`features` and :meth:`decoder_levels` follow from it."""

    def _decode_to_trunk(self, feats: list[torch.Tensor], levels: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Every decoder level but the last block (outputs appended to ``levels``), then the last block's input."""
        raise NotImplementedError

    def decoder_levels(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        levels: list[torch.Tensor] = []
        levels.append(self.last_block(self._decode_to_trunk(feats, levels)))
        return levels

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Input of the last decoder block ``[B, block_in_channels, *S]`` (skip and up-sampled features)."""
        return self._decode_to_trunk(self.encode(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_block(self.trunk(x))
