"""Backbones: shapes, extra heads, parameter counts, input-size errors (every registered backbone)."""

from __future__ import annotations

import pytest
import torch

from ssl_bench.core.backbone import HeadSpec
from ssl_bench.core.registry import BACKBONES

SHAPES = {2: (2, 1, 32, 32), 3: (1, 1, 16, 32, 32)}


@pytest.mark.parametrize("kind", ["conv", "branch"])
@pytest.mark.parametrize("name", BACKBONES.names())
def test_backbone_shapes_and_heads(name, kind):
    dims = BACKBONES.entry(name).meta["dims"][0]
    heads = [HeadSpec("con", 4, kind), HeadSpec("var", 3, "linear")]
    net = BACKBONES.get(name)(1, 3, width=8, depth=2, extra_heads=heads, main_head=kind)
    x = torch.randn(SHAPES[dims])
    out = net.forward_heads(x)
    assert set(out) == {"main", "con", "var"}
    assert out["main"].shape == (x.shape[0], 3, *x.shape[2:]) and out["con"].shape[1] == 4
    assert out["con"].shape[2:] == x.shape[2:] and out["var"].shape[2:] == x.shape[2:]
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


def test_coranet_branches_on_the_unet_duplicate_its_last_block():
    """Head kind "branch" on the U-Net: E + D is the plain U-Net (same parameters, same outputs for the same
    weights), D_con / D_rad are copies of the last decoder block on its input (paper §III-D2: 29.6 M at test)."""
    torch.manual_seed(0)
    plain = BACKBONES.get("unet2d")(1, 2, width=8, depth=2)
    heads = [HeadSpec("con", 2, "branch"), HeadSpec("rad", 2, "branch")]
    crm = BACKBONES.get("unet2d")(1, 2, width=8, depth=2, extra_heads=heads, main_head="branch")
    assert crm.block_heads == {"con", "rad"}
    assert crm.inference_parameters() == sum(p.numel() for p in plain.parameters())
    block = sum(p.numel() for p in crm.last_block.parameters())
    one_by_one = sum(p.numel() for p in crm.head.parameters())
    assert sum(p.numel() for p in crm.extra_heads.parameters()) == 2 * (block + one_by_one)
    missing, unexpected = crm.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("extra_heads.") for k in missing)
    x = torch.randn(2, 1, 16, 16)
    crm.eval(), plain.eval()
    out = crm.forward_heads(x)
    assert torch.allclose(out["main"], plain(x), atol=1e-6)
    # a branch given the main branch's weights computes the main output: it reads the last block's input
    crm.extra_heads["con"][0].load_state_dict(crm.last_block.state_dict())
    crm.extra_heads["con"][2].load_state_dict(crm.head.state_dict())
    assert torch.allclose(crm.forward_heads(x, ["con"])["con"], out["main"], atol=1e-6)


def test_branch_heads_fall_back_to_conv_heads_and_block_heads_need_a_block():
    net = BACKBONES.get("vnet")(1, 2, width=4, extra_heads=[HeadSpec("con", 2, "branch")], main_head="branch")
    assert not net.block_heads and isinstance(net.head, torch.nn.Sequential)  # two-conv main branch
    with pytest.raises(ValueError, match="no duplicable last block"):
        BACKBONES.get("vnet")(1, 2, width=4, extra_heads=[HeadSpec("con", 2, "block")])


def test_ssl4mis_unet_matches_the_reference_layout():
    """HiLab-git/SSL4MIS code/networks/unet.py UNet(in_chns=1, class_num=4): 1,813,764 parameters; encoder dropout
    0.05-0.5 (element-wise), none in the decoder; 1x1 conv + bilinear x2 up-sampling; a 3x3 output conv."""
    import torch
    from torch import nn

    from ssl_bench.core.registry import BACKBONES

    net = BACKBONES.get("ssl4mis-unet")(1, 4)
    assert sum(p.numel() for p in net.parameters()) == 1_813_764
    drops = [m.p for m in net.encoder.modules() if isinstance(m, nn.Dropout)]
    assert drops == [0.05, 0.1, 0.2, 0.3, 0.5]
    assert not any(isinstance(m, nn.Dropout) for m in net.decoder.modules())
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in net.modules())
    assert isinstance(net.head, nn.Conv2d) and net.head.kernel_size == (3, 3)
    net.eval()
    assert net(torch.zeros(2, 1, 48, 32)).shape == (2, 4, 48, 32)
    with pytest.raises(ValueError, match="divisible by 16"):
        net(torch.zeros(1, 1, 40, 40))
