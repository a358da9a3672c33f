"""Backbones: shapes, extra heads, parameter counts, input-size errors (every registered backbone)."""

from __future__ import annotations

import pytest
import torch

from ssl_bench.nets.base import HeadSpec
from ssl_bench.registry import BACKBONES

SHAPES = {2: (2, 1, 32, 32), 3: (1, 1, 16, 32, 32)}


@pytest.mark.parametrize("name", BACKBONES.names())
def test_backbone_shapes_and_heads(name):
    dims = BACKBONES.entry(name).meta["dims"][0]
    net = BACKBONES.get(name)(1, 3, width=8, depth=2, extra_heads=[HeadSpec("con", 4), HeadSpec("var", 3, "linear")])
    x = torch.randn(SHAPES[dims])
    out = net.forward_heads(x)
    assert set(out) == {"main", "con", "var"}
    assert out["main"].shape == (x.shape[0], 3, *x.shape[2:]) and out["con"].shape[1] == 4
    assert torch.allclose(net.eval()(x), net.forward_heads(x)["main"])
    extra = sum(p.numel() for p in net.extra_heads.parameters())
    assert net.inference_parameters() == sum(p.numel() for p in net.parameters()) - extra


def test_paper_unet_and_vnet_sizes():
    unet = BACKBONES.get("unet2d")(1, 2)
    assert 30e6 < sum(p.numel() for p in unet.parameters()) < 32e6  # classic U-Net, 31.0 M (paper: 29.6 M)
    vnet = BACKBONES.get("vnet")(1, 2)
    assert 9.4e6 < sum(p.numel() for p in vnet.parameters()) < 9.5e6  # the UA-MT / CoraNet V-Net, 9.44 M


def test_resnet18_3d_uses_anisotropic_kernels():
    net = BACKBONES.get("resnet18-3d")(1, 2)
    assert net.stem[0].kernel_size == (3, 7, 7)
    convs = [m for m in net.layers.modules() if isinstance(m, torch.nn.Conv3d) and m.kernel_size != (1, 1, 1)]
    assert convs and all(m.kernel_size == (1, 3, 3) for m in convs)


@pytest.mark.parametrize(
    ("name", "shape"), [("unet2d", (1, 1, 30, 32)), ("vnet", (1, 1, 24, 32, 32)), ("resnet18-3d", (1, 1, 12, 32, 32))]
)
def test_bad_input_size_is_explained(name, shape):
    with pytest.raises(ValueError, match="must be divisible|needs Z % 8"):
        BACKBONES.get(name)(1, 2, width=4)(torch.randn(shape))
