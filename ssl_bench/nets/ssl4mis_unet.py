"""The 2D U-Net of the SSL4MIS benchmark (``ssl4mis-unet``), written here from its description.

Reference: HiLab-git/SSL4MIS, ``code/networks/unet.py`` (class ``UNet``: ``Encoder``, ``Decoder``, ``ConvBlock``,
``DownBlock``, ``UpBlock``), the network of its ``train_*_2D.py`` scripts and of the ACDC numbers most 2021-2026
papers report (BCP, ABD, UniMatch's medical branch use the same layout).

Layout (widths ``w, 2w, 4w, 8w, 16w`` with ``w = 16``: 16-32-64-128-256):

* conv block: 3x3 conv (bias) -> BatchNorm -> LeakyReLU(0.01) -> Dropout(p) -> 3x3 conv (bias) -> BatchNorm ->
  LeakyReLU(0.01); element-wise ``nn.Dropout``, not channel dropout;
* encoder: an input block, then 4 x (2x2 max-pool -> block); dropout p = 0.05, 0.1, 0.2, 0.3, 0.5 per level;
* decoder: 4 x (1x1 conv to the skip's width -> x2 bilinear up-sampling (align_corners=True) -> concatenate
  [skip, up] -> block with p = 0), the reference's ``bilinear`` default;
* output: a 3x3 conv (bias) on the 16-channel last feature.

1.81 M parameters for 1 input channel and 4 classes (``tests/test_backbones.py`` pins the count).

Deviations: none in the network. ``dropout`` (the trainer's ``model.dropout``) scales nothing here: the encoder
dropout is the reference's fixed schedule (``encoder_dropout``); ``model.dropout > 0`` adds the suite's final
dropout before the output conv (for MC-dropout estimators), which the reference does not have. Extra heads
(CoraNet's branches) are copies of the last decoder block, as on ``unet2d``. ``upsampling`` (default
``"bilinear"``, the reference's) can be ``"transposed"`` (2x2 transposed conv, the reference's unused
``bilinear=False`` branch and MC-Net's mode 0) or ``"nearest"`` (MC-Net's mode 2).

Multi-scale interface (:class:`~ssl_bench.core.backbone.SegNet`): ``encode`` gives the 5 encoder features
``[B, w 2^i, H / 2^i, W / 2^i]`` (i = 0..4), ``decoder_features`` the 4 decoder levels deepest first,
``[B, w 2^(3-j), H / 2^(3-j), W / 2^(3-j)]`` (j = 0..3: 128, 64, 32, 16 channels at strides 8, 4, 2, 1; the
last is ``features``), the features URPC's auxiliary heads read (``Decoder_URPC``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from ssl_bench.core.backbone import HeadSpec, TrunkDecoderNet, upsampling_layers
from ssl_bench.core.registry import BACKBONES

#: The reference's encoder dropout per level (``code/networks/unet.py``, ``params['dropout']``).
ENCODER_DROPOUT = (0.05, 0.1, 0.2, 0.3, 0.5)


class SSL4MISBlock(nn.Sequential):
    """conv3x3 -> BN -> LeakyReLU -> Dropout(p) -> conv3x3 -> BN -> LeakyReLU; ``[B, cin, H, W] -> [B, cout, H, W]``."""

    def __init__(self, cin: int, cout: int, dropout: float) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.LeakyReLU(),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.Conv2d(cout, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.LeakyReLU(),
        )


class SSL4MISUp(nn.Module):
    """1x1 conv (``cin -> cskip``), x2 bilinear up-sampling (or another ``upsampling`` mode), concatenation with
    the skip; output ``2 cskip`` channels."""

    def __init__(self, cin: int, cskip: int, upsampling: str = "bilinear") -> None:
        super().__init__()
        self.reduce, self.up = upsampling_layers(2, cin, cskip, upsampling)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return torch.cat([skip, self.up(self.reduce(x))], dim=1)


class SSL4MISUNet(TrunkDecoderNet):
    """SSL4MIS's U-Net; input ``[B, C, H, W]`` with ``H, W`` divisible by 16; logits ``[B, K, H, W]``."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        width: int = 16,
        encoder_dropout: Sequence[float] = ENCODER_DROPOUT,
        dropout: float = 0.0,
        extra_heads: Iterable[HeadSpec] = (),
        main_head: str = "linear",
        upsampling: str = "bilinear",
    ) -> None:
        if len(encoder_dropout) != 5:
            raise ValueError(f"encoder_dropout needs 5 values (one per level), got {len(encoder_dropout)}")
        chans = [width * 2**i for i in range(5)]
        super().__init__(
            2,
            chans[0],
            num_classes,
            extra_heads,
            "batch",
            final_dropout=dropout,
            main_head=main_head,
            block_in_channels=2 * chans[0],
        )
        if main_head == "linear":  # the reference's output layer is a 3x3 conv
            self.head = nn.Conv2d(chans[0], num_classes, 3, padding=1)
        self.encoder = nn.ModuleList([SSL4MISBlock(in_channels, chans[0], encoder_dropout[0])])
        self.encoder.extend(SSL4MISBlock(chans[i - 1], chans[i], encoder_dropout[i]) for i in range(1, 5))
        self.pool = nn.MaxPool2d(2)
        self.ups = nn.ModuleList(SSL4MISUp(chans[i], chans[i - 1], upsampling) for i in range(4, 0, -1))
        self.decoder = nn.ModuleList(SSL4MISBlock(2 * chans[i - 1], chans[i - 1], 0.0) for i in range(4, 0, -1))
        self.input_multiple = 16
        self.upsampling = upsampling
        self.decoder_channels = tuple(chans[i - 1] for i in range(4, 0, -1))
        self.encoder_modules = ("encoder",)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features at strides 1, 2, 4, 8, 16 (``[B, w 2^i, H / 2^i, W / 2^i]``)."""
        if any(s % self.input_multiple for s in x.shape[2:]):
            raise ValueError(f"ssl4mis-unet input size {tuple(x.shape[2:])} must be divisible by {self.input_multiple}")
        feats = [self.encoder[0](x)]
        for block in self.encoder[1:]:
            feats.append(block(self.pool(feats[-1])))
        return feats

    def _decode_to_trunk(self, feats: list[torch.Tensor], levels: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Every decoder level but the last block (outputs appended to ``levels``), then the last block's input."""
        skips = list(feats)
        y = skips.pop()
        for up, block in zip(self.ups[:-1], self.decoder[:-1]):
            y = block(up(y, skips.pop()))
            if levels is not None:
                levels.append(y)
        return self.ups[-1](y, skips.pop())

    @property
    def last_block(self) -> nn.Module:
        return self.decoder[-1]


@BACKBONES.register("ssl4mis-unet", dims=(2,))
def ssl4mis_unet(
    in_channels: int,
    num_classes: int,
    *,
    width: int = 16,
    dropout: float = 0.0,
    extra_heads: Iterable[HeadSpec] = (),
    main_head: str = "linear",
    upsampling: str = "bilinear",
    **_: object,
) -> SSL4MISUNet:
    """SSL4MIS's 2D U-Net (16-256 channels, encoder dropout 0.05-0.5, bilinear up-sampling, 3x3 output conv)."""
    return SSL4MISUNet(
        in_channels,
        num_classes,
        width=width,
        dropout=dropout,
        extra_heads=extra_heads,
        main_head=main_head,
        upsampling=upsampling,
    )
