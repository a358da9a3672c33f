"""The paper's U-Net (CoraNet §IV-A), in 2D (``unet2d``) and 3D (``unet3d``).

Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image Segmentation", MICCAI 2015.
Per level two 3x3 conv + BN + ReLU, 2x2 max-pooling down, 2x2 transposed convolution up, skip concatenation;
the last decoder feature has ``width`` channels (64 in the paper). With ``width=64, depth=4`` this is the classic
U-Net (31.0 M parameters in 2D for 1 input channel and 2 classes; the paper quotes 29.6 M for its variant,
whose exact layer list is not published).

Deviations: ``dropout`` (default 0) is applied to the bottleneck and the last feature, as the paper's
MC-dropout baseline describes (§IV-D: "the last downsampled feature and the final feature", p = 0.5);
``norm`` can be switched to instance norm; ``unet3d`` is our 3D twin for contract checks and small 3D runs.
``upsampling`` (default ``"transposed"``, the paper's) can be ``"bilinear"`` or ``"nearest"`` (1x1 conv +
interpolation; MC-Net's decoders).

Multi-scale interface (:class:`~ssl_bench.core.backbone.SegNet`): ``encode`` gives the ``depth + 1`` encoder
features ``[B, width 2^i, *S / 2^i]`` (i = 0..depth), ``decoder_features`` the ``depth`` decoder levels deepest
first, ``[B, width 2^(depth-1-j), *S / 2^(depth-1-j)]`` (j = 0..depth-1; the last is ``features``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ssl_bench.core.backbone import ConvBlock, HeadSpec, TrunkDecoderNet, dropout_nd, upsampling_layers
from ssl_bench.core.registry import BACKBONES


class UNet(TrunkDecoderNet):
    """U-Net; input ``[B, C, H, W]`` (or ``[B, C, D, H, W]``), spatial size divisible by ``2**depth``."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        dims: int = 2,
        width: int = 64,
        depth: int = 4,
        norm: str = "batch",
        dropout: float = 0.0,
        extra_heads: Iterable[HeadSpec] = (),
        main_head: str = "linear",
        upsampling: str = "transposed",
    ) -> None:
        super().__init__(
            dims,
            width,
            num_classes,
            extra_heads,
            norm,
            final_dropout=dropout,
            main_head=main_head,
            block_in_channels=2 * width,
        )
        chans = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([ConvBlock(dims, in_channels, chans[0], norm)])
        self.down.extend(ConvBlock(dims, chans[i - 1], chans[i], norm) for i in range(1, depth + 1))
        pool = nn.MaxPool2d if dims == 2 else nn.MaxPool3d
        self.pool = pool(2)
        self.bottleneck_dropout = dropout_nd(dims, dropout)
        self.up = nn.ModuleList(self._upsampler(dims, chans[i], chans[i - 1], upsampling) for i in range(depth, 0, -1))
        self.up_blocks = nn.ModuleList(
            ConvBlock(dims, 2 * chans[i - 1], chans[i - 1], norm) for i in range(depth, 0, -1)
        )
        self.depth = depth
        self.input_multiple = 2**depth
        self.upsampling = upsampling
        self.decoder_channels = tuple(chans[i - 1] for i in range(depth, 0, -1))
        self.encoder_modules = ("down",)

    @staticmethod
    def _upsampler(dims: int, cin: int, cout: int, mode: str) -> nn.Module:
        """The transposed conv alone (the paper's U-Net, unchanged state-dict keys) or 1x1 conv + interpolation."""
        reduce, up = upsampling_layers(dims, cin, cout, mode)
        return up if mode == "transposed" else nn.Sequential(reduce, up)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features ``[B, width 2^i, *S / 2^i]``, i = 0..depth (the bottleneck last)."""
        multiple = self.input_multiple
        if any(s % multiple for s in x.shape[2:]):
            raise ValueError(f"U-Net input spatial size {tuple(x.shape[2:])} must be divisible by {multiple}")
        feats = [self.down[0](x)]
        for block in self.down[1:]:
            feats.append(block(self.pool(feats[-1])))
        return feats

    def _decode_to_trunk(self, feats: list[torch.Tensor], levels: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Every decoder level but the last block (outputs appended to ``levels``), then the last block's input."""
        skips = list(feats)
        x = self.bottleneck_dropout(skips.pop())
        for up, block in zip(self.up[:-1], self.up_blocks[:-1]):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
            if levels is not None:
                levels.append(x)
        return torch.cat([self.up[-1](x), skips.pop()], dim=1)

    @property
    def last_block(self) -> nn.Module:
        return self.up_blocks[-1]


@BACKBONES.register("unet2d", dims=(2,))
def unet2d(
    in_channels: int,
    num_classes: int,
    *,
    width: int = 64,
    depth: int = 4,
    norm: str = "batch",
    dropout: float = 0.0,
    extra_heads: Iterable[HeadSpec] = (),
    main_head: str = "linear",
    upsampling: str = "transposed",
    **_: object,
) -> UNet:
    """The paper's 2D U-Net (§IV-A): 4 poolings, 64-channel last feature, transposed-conv up-sampling."""
    return UNet(
        in_channels,
        num_classes,
        dims=2,
        width=width,
        depth=depth,
        norm=norm,
        dropout=dropout,
        extra_heads=extra_heads,
        main_head=main_head,
        upsampling=upsampling,
    )


@BACKBONES.register("unet3d", dims=(3,))
def unet3d(
    in_channels: int,
    num_classes: int,
    *,
    width: int = 16,
    depth: int = 3,
    norm: str = "batch",
    dropout: float = 0.0,
    extra_heads: Iterable[HeadSpec] = (),
    main_head: str = "linear",
    upsampling: str = "transposed",
    **_: object,
) -> UNet:
    """3D twin of ``unet2d`` (same blocks with 3D convolutions), for small 3D runs and contract checks."""
    return UNet(
        in_channels,
        num_classes,
        dims=3,
        width=width,
        depth=depth,
        norm=norm,
        dropout=dropout,
        extra_heads=extra_heads,
        main_head=main_head,
        upsampling=upsampling,
    )
