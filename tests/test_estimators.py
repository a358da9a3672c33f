"""Uncertainty estimators (methods/estimators.py): outputs, masks, exact TTA inverses, untouched BatchNorm."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ssl_bench.core.backbone import SegNet
from ssl_bench.core.registry import BACKBONES, ESTIMATORS
from ssl_bench.core.uncertainty import build_estimator

OURS = ("entropy", "softmax-threshold", "none", "mc-dropout", "tta", "aleatoric")
FAST = {"entropy": {"T": 3}, "mc-dropout": {"T": 4}, "tta": {"T": 4}, "aleatoric": {"T": 3}}


def net_for(name: str, dims: int = 2, num_classes: int = 3) -> SegNet:
    est = build_estimator(name, FAST.get(name), num_classes)
    torch.manual_seed(0)
    bb = BACKBONES.get("unet2d" if dims == 2 else "unet3d")
    return bb(1, num_classes, width=4, depth=2, dropout=0.5, extra_heads=est.required_heads())


def test_all_registered():
    assert set(OURS) <= set(ESTIMATORS.names())


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", OURS)
def test_outputs_shapes_dtypes_and_state(name, dims):
    est = build_estimator(name, FAST.get(name), 3)
    net = net_for(name, dims)
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.rand((2, 1, *([16 if dims == 2 else 8] * dims)))  # small 3D volumes keep the test fast
    umap = est.estimate(net, x)
    assert umap.prob.shape == (2, 3, *x.shape[2:]) and umap.prob.dtype == torch.float32
    assert torch.allclose(umap.prob.sum(1), torch.ones(()), atol=1e-5)
    assert umap.certain.shape == (2, *x.shape[2:]) and umap.certain.dtype == torch.bool
    assert umap.score is None or umap.score.shape == umap.certain.shape
    assert umap.pseudo_label.shape == umap.certain.shape
    for k, v in net.state_dict().items():  # BatchNorm running statistics (and everything else) untouched
        assert torch.equal(v, before[k]), k
    assert all(m.training for m in net.modules())  # modes restored
    net.eval()
    est.estimate(net, x)
    assert not any(m.training for m in net.modules())


def test_none_is_all_certain():
    umap = build_estimator("none", None, 3).estimate(net_for("none"), torch.rand(2, 1, 16, 16))
    assert bool(umap.certain.all())


def test_softmax_threshold_is_monotone():
    net = net_for("softmax-threshold")
    x = torch.rand(2, 1, 16, 16)
    masks = [
        build_estimator("softmax-threshold", {"threshold": t}, 3).estimate(net, x).certain for t in (0.4, 0.5, 0.7)
    ]
    for looser, stricter in zip(masks, masks[1:]):
        assert bool((stricter <= looser).all())
    assert bool(build_estimator("softmax-threshold", {"threshold": 0.0}, 3).estimate(net, x).certain.all())


def test_entropy_mask_is_entropy_below_threshold():
    est = build_estimator("entropy", {"T": 2, "entropy_max": "ln-k"}, 3)
    umap = est.estimate(net_for("entropy"), torch.rand(2, 1, 16, 16))
    assert torch.equal(umap.certain, umap.score < est.threshold(None))


class Identity(SegNet):
    """Logits = K affine intensity ramps of the input (pixel-wise), to test TTA inverses."""

    def __init__(self) -> None:
        super().__init__(2, 1, 3)
        self.input_multiple = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, 2 * x, -x], 1)


def test_tta_transforms_are_exactly_inverted():
    est = build_estimator("tta", {"T": 8}, 3)
    h, w = 24, 20
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    ramp = (0.3 + 0.01 * yy - 0.02 * xx)[None, None].repeat(2, 1, 1, 1)  # affine: exact under bilinear resizing
    for scale in (0.8, 0.9, 1.1):
        for flips in ((), (3,)):
            size = (round(h * scale / 4) * 4, round(w * scale / 4) * 4)
            back = est.inverse_transform(est.forward_transform(ramp, flips, size), flips, (h, w))
            assert torch.allclose(back, ramp, atol=1e-10), (scale, flips)


def test_tta_on_identity_network_equals_single_pass():
    h = w = 24
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    x = (0.5 + 0.05 * yy - 0.03 * xx)[None, None]
    net = Identity()
    expected = net(x).softmax(1)
    umap = build_estimator("tta", {"T": 10, "average": "logits"}, 3).estimate(net, x)
    assert torch.allclose(umap.prob, expected, atol=1e-5)


class Pointwise3d(SegNet):
    """3D logits from each voxel alone (``context=False``) or relative to the input's mean (``context=True``)."""

    input_multiple = 8

    def __init__(self, context: bool) -> None:
        super().__init__(3, 1, 3)
        self.context = context

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.context:
            x = x - x.mean(dim=(2, 3, 4), keepdim=True)
        return torch.cat([x, 2 * x, -x], 1)


def test_tta_3d_uses_random_crops_that_vary_and_are_put_back_exactly():
    est = build_estimator("tta", {"T": 6, "crop_fraction": 0.75}, 3)
    spatial = (24, 32, 40)
    torch.manual_seed(0)
    boxes = [est.sample_crop(spatial, 8) for _ in range(20)]
    assert len({tuple((b.start, b.stop) for b in box) for box in boxes}) > 1, "crops do not vary"
    for box in boxes:
        edges = [b.stop - b.start for b in box]
        assert edges == [16, 24, 24] and all(0 <= b.start and b.stop <= s for b, s in zip(box, spatial))
    x = torch.rand(2, 1, *spatial)
    # voxel-wise net: every crop's logits equal the full pass's there, so the per-voxel mean is the single pass
    net = Pointwise3d(context=False)
    assert torch.allclose(est.estimate(net, x).prob, net(x).softmax(1), atol=1e-6)
    # a net that sees context: smaller crops change the prediction (the released TTA's whole-input crops did not)
    ctx = Pointwise3d(context=True)
    assert not torch.allclose(est.estimate(ctx, x).prob, ctx(x).softmax(1), atol=1e-4)


def test_tta_3d_runs_on_the_3d_backbones():
    est = build_estimator("tta", {"T": 2}, 2)
    for name in ("vnet", "resnet18-3d"):
        net = BACKBONES.get(name)(1, 2, width=4)
        umap = est.estimate(net, torch.rand(1, 1, 32, 48, 48))
        assert umap.prob.shape == (1, 2, 32, 48, 48) and umap.certain.shape == (1, 32, 48, 48)


def test_mc_dropout_needs_dropout_layers():
    est = build_estimator("mc-dropout", {"T": 2}, 3)
    assert est.required_dropout() == 0.5
    plain = BACKBONES.get("unet2d")(1, 3, width=4, depth=2)
    with pytest.raises(ValueError, match="dropout > 0"):
        est.estimate(plain, torch.rand(1, 1, 16, 16))


def test_aleatoric_head_and_loss():
    est = build_estimator("aleatoric", {"T": 4}, 3)
    (head,) = est.required_heads()
    assert (head.name, head.out_channels, head.kind) == ("logvar", 3, "linear")
    net = net_for("aleatoric")
    x, y = torch.rand(2, 1, 16, 16), torch.randint(0, 3, (2, 16, 16))
    loss = est.head_loss(net.forward_heads(x), y)
    (g,) = torch.autograd.grad(loss, [net.extra_heads["logvar"].weight])
    assert torch.isfinite(loss) and g.abs().sum() > 0
    with pytest.raises(ValueError, match="logvar"):
        est.estimate(BACKBONES.get("unet2d")(1, 3, width=4, depth=2), x)
    std_rule = build_estimator("aleatoric", {"T": 4, "std_threshold": 1e-3}, 3).estimate(net, x)
    assert std_rule.certain.dtype == torch.bool and std_rule.score is not None


def test_zero_variance_aleatoric_equals_softmax():
    est = build_estimator("aleatoric", {"T": 3}, 3)
    logits = torch.randn(1, 3, 4, 4)
    samples = est.sample_probs(logits, torch.full_like(logits, -30.0), 3)  # clamped to exp(-5) std: tiny
    assert torch.allclose(samples.mean(0), logits.softmax(1), atol=1e-2)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("entropy", {"entropy_max": "ln-3"}),
        ("entropy", {"T": 0}),
        ("softmax-threshold", {"threshold": 1.5}),
        ("mc-dropout", {"p": 0.0}),
        ("tta", {"scale_min": 1.2, "scale_max": 1.1}),
        ("tta", {"average": "median"}),
        ("none", {"bn": "frozen"}),
    ],
)
def test_bad_options_rejected(name, options):
    with pytest.raises(ValueError):
        build_estimator(name, options, 3)


def test_unknown_option_is_a_config_error():
    from ssl_bench.core.errors import ConfigError

    with pytest.raises(ConfigError):
        build_estimator("entropy", {"passes": 3}, 3)


def test_bn_modes():
    net = BACKBONES.get("unet2d")(1, 3, width=4, depth=2)
    x = torch.rand(2, 1, 16, 16)
    net.train()
    batch = build_estimator("none", {"bn": "keep"}, 3).estimate(net, x).prob
    running = build_estimator("none", {"bn": "running"}, 3).estimate(net, x).prob
    with torch.no_grad():
        net.eval()
        assert torch.allclose(running, net(x).softmax(1), atol=1e-6)
    assert not torch.allclose(batch, running)
    assert isinstance(net.down[0][1], nn.BatchNorm2d)
