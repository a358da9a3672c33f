"""U-Nets with ``segmentation-models-pytorch`` encoders (``smp-resnet34``, ``smp-resnet18``, ``smp-efficientnet-b0``).

Iakubovskii, segmentation_models.pytorch. Weights are never downloaded: ``encoder_weights=None`` (random init).
The decoder's last feature (16 channels by default) feeds our heads, so extra heads work as on ``unet2d``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ssl_bench.core.backbone import HeadSpec, SegNet
from ssl_bench.core.registry import BACKBONES


class SmpUNet(SegNet):
    """smp ``Unet`` without its segmentation head; input ``[B, C, H, W]`` with H, W divisible by 32."""

    def __init__(
        self,
        encoder: str,
        in_channels: int,
        num_classes: int,
        *,
        dropout: float = 0.0,
        extra_heads: Iterable[HeadSpec] = (),
        decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
        main_head: str = "linear",
    ):
        import segmentation_models_pytorch as smp

        super().__init__(
            2, decoder_channels[-1], num_classes, extra_heads, "batch", final_dropout=dropout, main_head=main_head
        )
        net = smp.Unet(
            encoder,
            encoder_weights=None,
            in_channels=in_channels,
            classes=num_classes,
            decoder_channels=decoder_channels,
        )
        self.encoder = net.encoder
        self.decoder = net.decoder

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if any(s % 32 for s in x.shape[2:]):
            raise ValueError(f"smp U-Net input spatial size {tuple(x.shape[2:])} must be divisible by 32")
        feats = self.encoder(x)
        try:
            return self.decoder(feats)
        except TypeError:  # smp < 0.4 takes the features unpacked
            return self.decoder(*feats)


def _register(name: str, encoder: str) -> None:
    def build(
        in_channels: int,
        num_classes: int,
        *,
        dropout: float = 0.0,
        extra_heads: Iterable[HeadSpec] = (),
        main_head: str = "linear",
        **_: object,
    ) -> SmpUNet:
        return SmpUNet(encoder, in_channels, num_classes, dropout=dropout, extra_heads=extra_heads, main_head=main_head)

    build.__doc__ = f"U-Net with a randomly initialised smp {encoder} encoder (2D)."
    build.__module__ = __name__
    BACKBONES.add(name, build, dims=(2,))


for _name, _encoder in (
    ("smp-resnet18", "resnet18"),
    ("smp-resnet34", "resnet34"),
    ("smp-efficientnet-b0", "efficientnet-b0"),
):
    _register(_name, _encoder)
