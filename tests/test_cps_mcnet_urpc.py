"""Maths of CPS, MC-Net and URPC, the co-training base and the backbones' multi-scale interface.

The contract check of every method (2D and 3D) runs in tests/test_methods.py; these tests pin the formulas against
step-by-step restatements of the reference code (HiLab-git/SSL4MIS, ycwu1997/MC-Net) and the presets' values.
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench.core.data import TaskSpec
from ssl_bench.core.method import Batch, MethodContext, StepInfo
from ssl_bench.core.registry import BACKBONES, METHODS
from ssl_bench.methods.cps import cross_pseudo_loss
from ssl_bench.methods.mc_net import mutual_consistency, sharpen
from ssl_bench.methods.urpc import feature_dropout, feature_noise, rectified_pyramid_consistency
from ssl_bench.training.losses import soft_dice_loss
from ssl_bench.training.ramps import sigmoid_rampup
from ssl_bench.training.runner import resolve_config


def make_ctx(backbone: str = "unet2d", num_classes: int = 3, dims: int = 2, **kw) -> MethodContext:
    spec = TaskSpec(dims=dims, num_classes=num_classes, label_names=tuple(f"c{i}" for i in range(num_classes)))
    kw = kw or ({"width": 4, "depth": 2} if backbone.startswith("unet") else {})
    factory = functools.partial(BACKBONES.get(backbone), 1, num_classes, norm="batch", **kw)
    return MethodContext(spec=spec, backbone_factory=factory, epochs=2)


def build(name: str, backbone: str = "unet2d", dims: int = 2, **options) -> nn.Module:
    cls = METHODS.get(name)
    torch.manual_seed(0)
    return cls(replace(cls.Config(), **options), make_ctx(backbone, dims=dims))


def step_at(stage_step: int, stage_steps: int = 100) -> StepInfo:
    return StepInfo(stage_step, 0, "train", stage_step, stage_steps, stage_steps, 10)


def batches(n: int = 2, size: int = 16, k: int = 3) -> tuple[Batch, Batch]:
    g = torch.Generator().manual_seed(3)
    x_l, x_u = torch.rand((n, 1, size, size), generator=g), torch.rand((n, 1, size, size), generator=g)
    y = torch.randint(0, k, (n, size, size), generator=g)
    return Batch(x_l, y, torch.arange(n)), Batch(x_u, None, torch.arange(n))


# -- backbones: decoder_features, encode/decode, upsampling ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kw", "size", "channels"),
    [
        ("unet2d", {"width": 8, "depth": 4}, (32, 48), (64, 32, 16, 8)),
        ("unet3d", {"width": 4, "depth": 2}, (8, 16, 16), (8, 4)),
        ("ssl4mis-unet", {}, (32, 48), (128, 64, 32, 16)),
    ],
)
def test_decoder_features_shapes(name, kw, size, channels):
    torch.manual_seed(0)
    net = BACKBONES.get(name)(1, 4, **kw).eval()
    x = torch.randn(2, 1, *size)
    with torch.no_grad():
        levels = net.decoder_features(x)
        assert net.decoder_channels == channels
        n = len(channels)
        for i, level in enumerate(levels):  # deepest first: level i at stride 2^(n-1-i)
            stride = 2 ** (n - 1 - i)
            assert tuple(level.shape) == (2, channels[i], *(s // stride for s in size))
        assert torch.equal(levels[-1], net.features(x))
        assert torch.equal(net.decode(net.encode(x)), net(x))
        assert torch.equal(net.head_logits(levels[-1]), net(x))


def test_backbone_without_levels_names_itself():
    net = BACKBONES.get("vnet")(1, 2)
    with pytest.raises(NotImplementedError, match="VNet"):
        net.decoder_features(torch.randn(1, 1, 16, 16, 16))
    with pytest.raises(ValueError, match="VNet"):
        build("urpc", "vnet", dims=3)
    with pytest.raises(ValueError, match="VNet.*upsampling"):
        build("mc-net", "vnet", dims=3)


def test_upsampling_modes_and_parameter_counts():
    # SSL4MIS's U-Net, 1 input channel, 4 classes: bilinear 1,813,764; its unused transposed branch 1,944,324
    counts = {}
    for mode in ("bilinear", "transposed", "nearest"):
        net = BACKBONES.get("ssl4mis-unet")(1, 4, upsampling=mode)
        assert net.upsampling == mode
        counts[mode] = sum(p.numel() for p in net.parameters())
    assert counts == {"bilinear": 1_813_764, "transposed": 1_944_324, "nearest": 1_813_764}
    assert BACKBONES.get("unet2d")(1, 2).upsampling == "transposed"
    with pytest.raises(ValueError, match="upsampling"):
        BACKBONES.get("unet2d")(1, 2, upsampling="bicubic")
    # the nearest decoder really interpolates by nearest neighbour: its up-sampled map is piecewise constant
    up = BACKBONES.get("unet2d")(1, 2, width=4, depth=2, upsampling="nearest").up[0]
    y = up(torch.randn(1, 16, 4, 4))
    assert torch.equal(y[..., ::2, ::2], y[..., 1::2, 1::2])


def test_mcnet_parameter_counts_match_reference():
    # ycwu1997/MC-Net MCNet2d_v1 / v2 (1 input channel, 4 classes): 2,577,624 / 3,210,924 parameters
    for modes, expected in (
        (("bilinear", "transposed"), 2_577_624),
        (("bilinear", "transposed", "nearest"), 3_210_924),
    ):
        cls = METHODS.get("mc-net")
        ctx = make_ctx("ssl4mis-unet", num_classes=4, width=16)
        method = cls(replace(cls.Config(), upsampling=modes), ctx)
        assert method.parameter_counts()["train"] == expected
        assert method.parameter_counts()["inference"] == 1_813_764  # encoder + decoder 1
        assert all(peer.encoder is method.student.encoder for peer in method.peers)
        assert [net.upsampling for net in method.nets] == list(modes)


# -- co-training base ---------------------------------------------------------------------------------------------


def test_cotraining_networks_independent_and_predict_mean():
    method = build("cps", predict_with="mean").eval()
    a, b = method.student, method.peers[0]
    assert not torch.equal(a.head.weight, b.head.weight)  # independent initialisation draws
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        mean = (a(x).softmax(1) + b(x).softmax(1)) / 2
        assert torch.allclose(method.predict(x).softmax(1), mean, atol=1e-6)
    assert method.parameter_counts()["inference"] == method.parameter_counts()["train"]
    first = build("cps").eval()
    with torch.no_grad():
        assert torch.equal(first.predict(x), first.student(x))
    with pytest.raises(ValueError, match="predict_with"):
        build("cps", predict_with="vote")


# -- CPS ------------------------------------------------------------------------------------------------------------


def test_cross_pseudo_loss_and_no_gradient_through_labels():
    g = torch.Generator().manual_seed(0)
    za = torch.randn(2, 3, 4, 4, generator=g, requires_grad=True)
    zb = torch.randn(2, 3, 4, 4, generator=g, requires_grad=True)
    la, lb = cross_pseudo_loss(za, zb)
    # CE of network a on b's arg-max: -mean log softmax(za)[argmax zb]
    ref_a = -za.log_softmax(1).gather(1, zb.argmax(1, keepdim=True)).mean()
    ref_b = -zb.log_softmax(1).gather(1, za.argmax(1, keepdim=True)).mean()
    assert torch.allclose(la, ref_a) and torch.allclose(lb, ref_b)
    (grad_b,) = torch.autograd.grad(la, zb, allow_unused=True)
    assert grad_b is None or grad_b.abs().sum() == 0  # the pseudo-label is a constant


def test_cps_training_step_matches_reference_formula():
    method = build("cps", loss="ce+dice-ssl4mis", joint_bn=True).train()
    bl, bu = batches()
    torch.manual_seed(5)
    out = method.training_step(bl, bu, step_at(50))
    torch.manual_seed(5)  # same dropout draws (none here), same batch statistics: one forward over 2 + 2 images
    x = torch.cat([bl.image, bu.image])
    z1, z2 = method.student(x), method.peers[0](x)
    sup = 0.0
    for z in (z1, z2):
        sup = sup + 0.5 * (F.cross_entropy(z[:2], bl.label) + soft_dice_loss(z[:2], bl.label, squared=True))
    ps1 = F.cross_entropy(z1[2:], z2[2:].argmax(1))
    ps2 = F.cross_entropy(z2[2:], z1[2:].argmax(1))
    w = 0.1 * sigmoid_rampup(50, 40)  # default rampup 0.4 of 100 steps
    assert out["weight/unsup"].item() == pytest.approx(w)
    assert out["unsup/cps"].item() == pytest.approx((ps1 + ps2).item(), rel=1e-5)
    assert out["sup/total"].item() == pytest.approx(sup.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx((sup + w * (ps1 + ps2)).item(), rel=1e-5)


# -- MC-Net ---------------------------------------------------------------------------------------------------------


def test_sharpen_values():
    p = torch.tensor([0.0, 0.2, 0.5, 0.6, 1.0])
    assert torch.allclose(sharpen(p, 1.0), p)
    s = sharpen(p, 0.1)
    assert s[2] == pytest.approx(0.5)
    assert s[3].item() == pytest.approx(0.6**10 / (0.6**10 + 0.4**10))
    assert s[1].item() == pytest.approx(0.2**10 / (0.2**10 + 0.8**10))
    assert s[0] == 0 and s[4] == 1
    # per class, not renormalised over classes (the reference's sharpening on K-class softmax)
    q = torch.tensor([[0.5, 0.3, 0.2]]).view(1, 3, 1, 1)
    assert sharpen(q, 0.1).sum().item() != pytest.approx(1.0)


def test_mutual_consistency_against_pairwise_restatement():
    g = torch.Generator().manual_seed(1)
    probs = [torch.randn(2, 4, 5, 5, generator=g).softmax(1) for _ in range(3)]
    T = 0.1

    def s(p):
        return p ** (1 / T) / (p ** (1 / T) + (1 - p) ** (1 / T))

    two = torch.mean((probs[0] - s(probs[1])) ** 2) + torch.mean((probs[1] - s(probs[0])) ** 2)
    assert torch.allclose(mutual_consistency(probs[:2], T), two)
    three = sum(torch.mean((probs[i] - s(probs[j])) ** 2) for i in range(3) for j in range(3) if i != j)
    assert torch.allclose(mutual_consistency(probs, T), three)
    # gradients flow through the sharpened targets (the reference), unless detached
    leaf = [p.clone().requires_grad_(True) for p in probs[:2]]
    value = mutual_consistency([leaf[0], leaf[1].detach()], T)
    assert torch.autograd.grad(value, leaf[0])[0].abs().sum() > 0
    through = mutual_consistency(leaf, T)
    detached = mutual_consistency(leaf, T, detach_targets=True)
    g_through = torch.autograd.grad(through, leaf[1])[0]
    g_detached = torch.autograd.grad(detached, leaf[1])[0]
    assert not torch.allclose(g_through, g_detached)


def test_mcnet_reference_dice_and_training_step():
    # the 2D reference's DiceLoss: per class 1 - sum(p g) / (sum p^2 + sum g^2) (no factor 2), mean over classes
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 8, 8, generator=g)
    label = torch.randint(0, 3, (2, 8, 8), generator=g)
    p = logits.softmax(1)
    onehot = F.one_hot(label, 3).movedim(-1, 1).float()
    ref = torch.stack(
        [
            1 - (p[:, k] * onehot[:, k]).sum() / ((p[:, k] ** 2).sum() + (onehot[:, k] ** 2).sum() + 1e-10)
            for k in range(3)
        ]
    ).mean()
    ours = 0.5 * soft_dice_loss(logits, label, squared=True)
    assert ours.item() + 0.5 == pytest.approx(ref.item(), abs=1e-5)  # the same up to the constant 0.5

    method = build("mc-net", dice_only=True, joint_bn=True, sup_weight=0.7).train()
    bl, bu = batches()
    out = method.training_step(bl, bu, step_at(100))
    x = torch.cat([bl.image, bu.image])
    feats = method.student.encode(x)
    z = [net.decode(feats) for net in method.nets]
    sup = sum(0.5 * soft_dice_loss(zi[:2], bl.label, squared=True) for zi in z)
    mc = mutual_consistency([zi.softmax(1) for zi in z], 0.1)  # on all 4 images
    assert out["sup/total"].item() == pytest.approx(0.7 * sup.item(), rel=1e-5)
    assert out["unsup/mutual"].item() == pytest.approx(mc.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx((0.7 * sup + 0.1 * mc).item(), rel=1e-5)
    with pytest.raises(ValueError, match="upsampling"):
        build("mc-net", upsampling=("bilinear",))


# -- URPC -----------------------------------------------------------------------------------------------------------


def urpc_reference(logits: list[torch.Tensor]) -> torch.Tensor:
    """SSL4MIS train_uncertainty_rectified_pyramid_consistency_2D.py, restated step by step."""
    kl_distance = nn.KLDivLoss(reduction="none")
    soft = [torch.softmax(z, dim=1) for z in logits]
    preds = sum(soft) / len(soft)
    total = 0.0
    for s in soft:
        variance = torch.sum(kl_distance(torch.log(s), preds), dim=1, keepdim=True)
        exp_variance = torch.exp(-variance)
        dist = (preds - s) ** 2
        total = total + torch.mean(dist * exp_variance) / (torch.mean(exp_variance) + 1e-8) + torch.mean(variance)
    return total / len(soft)


def test_rectified_consistency_against_reference_restatement():
    g = torch.Generator().manual_seed(4)
    logits = [torch.randn(3, 4, 6, 6, generator=g, requires_grad=True) for _ in range(4)]
    ours = rectified_pyramid_consistency(logits)
    ref = urpc_reference(logits)
    assert torch.allclose(ours, ref, atol=1e-6)
    for a, b in zip(torch.autograd.grad(ours, logits), torch.autograd.grad(ref, logits)):
        assert torch.allclose(a, b, atol=1e-6)  # gradients through the mean and exp(-D), as the reference
    # identical predictions: no disagreement, zero loss
    same = [logits[0].detach()] * 3
    assert rectified_pyramid_consistency(same).item() == pytest.approx(0.0, abs=1e-7)
    # detached targets: the gradient changes, the value does not
    det = rectified_pyramid_consistency(logits, detach_target=True)
    assert torch.allclose(det, ours)


def test_urpc_perturbations():
    torch.manual_seed(0)
    x = torch.rand(2, 4, 6, 6) + 0.1
    noisy = feature_noise(x, 0.3)
    ratio = noisy / x - 1
    assert torch.allclose(ratio[0], ratio[1]) and ratio.abs().max() <= 0.3  # one noise map for the batch
    dropped = feature_dropout(x, 0.7, 0.9)
    attention = x.mean(1, keepdim=True)
    peak = attention.flatten(1).max(1).values.view(2, 1, 1, 1)
    kept = (dropped != 0).all(1, keepdim=True)
    assert kept[attention < 0.7 * peak].all() and not kept[attention >= 0.9 * peak].any()
    # levels from the shallow end: depth 2 has one auxiliary level (stride 2) -> feature noise
    assert build("urpc").level_perturbations == ["feature-noise"]
    assert build("urpc", "ssl4mis-unet").level_perturbations == ["dropout", "feature-dropout", "feature-noise"]
    deep = METHODS.get("urpc")(None, make_ctx("unet2d", width=2, depth=5))
    assert deep.level_perturbations == ["none", "dropout", "feature-dropout", "feature-noise"]
    # an explicit list: aligned at the shallow end, never silently cut
    short = build("urpc", "ssl4mis-unet", perturbations=("feature-noise",))
    assert short.level_perturbations == ["none", "none", "feature-noise"]
    with pytest.raises(ValueError, match="has 1 auxiliary decoder levels: give at most 1"):
        build("urpc", perturbations=("dropout", "feature-noise"))


def test_urpc_pyramid_and_training_step():
    method = build("urpc", "ssl4mis-unet", loss="ce+dice-ssl4mis", joint_bn=True)
    x = torch.rand(2, 1, 32, 32)
    method.eval()
    with torch.no_grad():
        pyr = method.pyramid(x)
        assert len(pyr) == 4 and all(tuple(z.shape) == (2, 3, 32, 32) for z in pyr.values())
        assert torch.equal(pyr[0], method.predict(x))  # main head = the backbone's own output
        levels = method.student.decoder_features(x)
        deepest = F.interpolate(method.aux_heads[0](levels[0]), size=(32, 32))  # nearest, stride 8, 3x3 head
        assert torch.equal(pyr[3], deepest)
        assert method.aux_heads[0].kernel_size == (3, 3) and method.aux_heads[0].in_channels == 128
    assert (
        method.parameter_counts()["inference"] == 1_813_619
    )  # 3 classes (1,813,764 - 580 + 435): the U-Net alone; heads training-only

    method.train()
    bl, bu = batches(size=32)
    torch.manual_seed(7)
    out = method.training_step(bl, bu, step_at(100))
    torch.manual_seed(7)  # the same perturbation and dropout draws in the same order
    pyr = method.pyramid(torch.cat([bl.image, bu.image]))
    sup = (
        sum(
            0.5 * (F.cross_entropy(z[:2], bl.label) + soft_dice_loss(z[:2], bl.label, squared=True))
            for z in pyr.values()
        )
        / 4
    )
    cons = urpc_reference([z[2:] for z in pyr.values()])
    assert out["sup/total"].item() == pytest.approx(sup.item(), rel=1e-5)
    assert out["unsup/urpc"].item() == pytest.approx(cons.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx((sup + 0.1 * cons).item(), rel=1e-5)


# -- presets: the references' hyper-parameters ---------------------------------------------------------------------


def ssl4mis(method: str):
    return resolve_config(method, "acdc", preset="ssl4mis")


def test_ssl4mis_presets_have_the_reference_hyperparameters():
    for name in ("cps", "mc-net", "mc-net-plus", "urpc"):
        cfg = ssl4mis(name)
        p = cfg.params
        assert cfg.model.backbone == "ssl4mis-unet"
        assert cfg.trainer.epochs * cfg.trainer.iters_per_epoch == 30_000
        assert (cfg.trainer.batch_size, cfg.trainer.unlabeled_batch_size) == (12, 12)
        assert (cfg.optim.momentum, cfg.optim.weight_decay) == (0.9, 1e-4)
        assert (p.weight, p.rampup, p.ramp_levels, p.ramp, p.joint_bn) == (0.1, 1.0, 200, "sigmoid", True)
    cps = ssl4mis("cps").params
    assert (cps.loss, cps.cps_on, cps.predict_with) == ("ce+dice-ssl4mis", "unlabeled", "first")
    for name, modes in (("mc-net", ("bilinear", "transposed")), ("mc-net-plus", ("bilinear", "transposed", "nearest"))):
        cfg = ssl4mis(name)
        mc = cfg.params
        assert (mc.dice_only, mc.sup_weight, mc.temperature, mc.consistency_on) == (True, 1.0, 0.1, "all")
        assert tuple(mc.upsampling) == modes and mc.predict_with == "first"
        assert mc.detach_targets is False
        assert (cfg.optim.name, cfg.optim.lr, cfg.optim.schedule) == ("sgd", 0.01, "constant")  # no poly in MC-Net
    assert ssl4mis("cps").optim.schedule == ssl4mis("urpc").optim.schedule == "poly"
    ur = ssl4mis("urpc").params
    assert ur.loss == "ce+dice-ssl4mis"
    assert tuple(ur.perturbations) == ("dropout", "feature-dropout", "feature-noise")
    assert (ur.dropout_p, tuple(ur.feature_dropout_range), ur.noise_range) == (0.5, (0.7, 0.9), 0.3)
    assert (ur.head_kernel, ur.upsample, ur.detach_target) == (3, "nearest", False)


def test_ssl4mis_ramp_is_the_reference_staircase():
    cfg = ssl4mis("cps")
    method = METHODS.get("cps")(cfg.params, make_ctx())
    for it in (0, 149, 150, 14_999, 15_000, 29_999):
        assert method.unsup_weight(step_at(it, 30_000)) == pytest.approx(0.1 * sigmoid_rampup(it // 150, 200))
    assert math.isclose(method.unsup_weight(step_at(29_999, 30_000)), 0.1 * math.exp(-5 * (1 - 199 / 200) ** 2))


def test_mcnet_3d_paper_preset():
    cfg = resolve_config("mc-net", "pancreas-phantom-3d", preset="paper")
    assert (cfg.params.sup_weight, cfg.params.weight, cfg.params.rampup) == (0.5, 1.0, 0.4)
