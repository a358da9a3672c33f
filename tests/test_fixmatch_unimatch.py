"""Maths of the strong augmentation (training.strong_augment), FixMatch and UniMatch.

The contract check of both methods runs in tests/test_methods.py; these tests pin the formulas: the batched ops
against torchvision on single images, CutMix boxes, the one mixing rule, threshold masking, the feature-perturbation
path, and each method's loss against a step-by-step restatement of its reference.
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2 import functional as TF

from ssl_bench.core.backbone import SegNet
from ssl_bench.core.data import TaskSpec
from ssl_bench.core.method import Batch, MethodContext, StepInfo
from ssl_bench.core.registry import BACKBONES, METHODS
from ssl_bench.methods.fixmatch import PseudoTarget, complementary_loss, pseudo_label_loss, pseudo_labels
from ssl_bench.training.consistency import stochastic_mode
from ssl_bench.training.losses import supervised_loss
from ssl_bench.training.runner import resolve_config
from ssl_bench.training.strong_augment import (
    StrongAugmentConfig,
    cutmix_boxes,
    gaussian_blur,
    intensity_jitter,
    mix_with_mask,
    random_gamma,
    step_generator,
    strong_augment,
)

K = 3


def make_ctx(factory=None) -> MethodContext:
    spec = TaskSpec(dims=2, num_classes=K, label_names=tuple(f"c{i}" for i in range(K)))
    factory = factory or functools.partial(BACKBONES.get("unet2d"), 1, K, width=4, depth=2, norm="batch")
    return MethodContext(spec=spec, backbone_factory=factory, epochs=2)


def build(name: str, **options):
    cls = METHODS.get(name)
    torch.manual_seed(0)
    return cls(replace(cls.Config(), **options), make_ctx())


def batches(n: int = 4, size: int = 16) -> tuple[Batch, Batch]:
    g = torch.Generator().manual_seed(3)
    x_l, x_u = torch.rand((n, 1, size, size), generator=g), torch.rand((n, 1, size, size), generator=g)
    y = torch.randint(0, K, (n, size, size), generator=g)
    return Batch(x_l, y, torch.arange(n)), Batch(x_u, None, torch.arange(n))


STEP = StepInfo(step=5, epoch=0, stage="train", stage_step=5, stage_steps=10, total_steps=10, steps_per_epoch=5)


# -- strong augmentation ------------------------------------------------------------------------------------------


def test_brightness_and_contrast_are_torchvisions_ops_per_sample():
    x = 0.25 + 0.2 * torch.rand(6, 1, 12, 12, generator=torch.Generator().manual_seed(0))  # never clamped
    g = torch.Generator().manual_seed(1)
    bright = intensity_jitter(x, g, p=1.0, brightness=0.8, contrast=0.0)
    contr = intensity_jitter(x, g, p=1.0, brightness=0.0, contrast=0.8)
    factors_b, factors_c = [], []
    for i in range(6):
        f = float(bright[i].max() / x[i].max())
        assert torch.allclose(bright[i], TF.adjust_brightness(x[i], f), atol=1e-6)
        c = float(contr[i].std() / x[i].std())
        assert torch.allclose(contr[i], TF.adjust_contrast(x[i], c), atol=1e-5)
        factors_b.append(f)
        factors_c.append(c)
    assert all(0.2 <= f <= 1.8 for f in factors_b + factors_c)
    assert len({round(f, 4) for f in factors_b}) == 6  # one factor per sample


def test_jitter_probability_and_order():
    x = torch.rand(2000, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    out = intensity_jitter(x, torch.Generator().manual_seed(2), p=0.8, brightness=0.5, contrast=0.5)
    changed = (out != x).flatten(1).any(1).float().mean()
    assert abs(float(changed) - 0.8) < 4 * math.sqrt(0.8 * 0.2 / 2000)
    assert torch.equal(intensity_jitter(x, torch.Generator(), p=0.0, brightness=0.5, contrast=0.5), x)


def test_gamma_is_torchvisions_adjust_gamma():
    x = 0.05 + 0.9 * torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out = random_gamma(x, torch.Generator().manual_seed(1), p=1.0, gamma_range=(0.5, 2.0))
    for i in range(4):
        gamma = float(torch.log(out[i, 0, 0, 0]) / torch.log(x[i, 0, 0, 0]))
        assert 0.5 <= gamma <= 2.0
        assert torch.allclose(out[i], TF.adjust_gamma(x[i], gamma), atol=1e-5)


def test_gaussian_blur_equals_torchvision_per_sample():
    x = torch.rand(4, 1, 20, 20, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.1, 0.6, 1.3, 2.0])
    out = gaussian_blur(x, sigma)
    for i, s in enumerate(sigma.tolist()):
        r = math.ceil(3 * s)
        expected = TF.gaussian_blur(x[i], [2 * r + 1, 2 * r + 1], [s, s])
        assert torch.allclose(out[i], expected, atol=1e-5), (s, (out[i] - expected).abs().max())
    assert torch.allclose(out.mean((1, 2, 3)), x.mean((1, 2, 3)), atol=0.05)  # kernels sum to 1


def test_strong_augment_is_seeded_by_the_generator():
    x = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    cfg = StrongAugmentConfig(gamma_p=0.5)
    a = strong_augment(x, torch.Generator().manual_seed(3), cfg)
    b = strong_augment(x, torch.Generator().manual_seed(3), cfg)
    c = strong_augment(x, torch.Generator().manual_seed(4), cfg)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    torch.manual_seed(11)
    g1 = step_generator()
    torch.manual_seed(11)  # the trainer re-seeds the global RNG per step: a resumed run draws the same
    g2 = step_generator()
    assert torch.equal(torch.rand(5, generator=g1), torch.rand(5, generator=g2))


def test_cutmix_boxes_are_unimatch_boxes():
    n, h, w = 3000, 32, 40
    boxes = cutmix_boxes(n, (h, w), torch.Generator().manual_seed(0), p=0.5, area=(0.02, 0.4), ratio=(0.3, 1 / 0.3))
    assert boxes.shape == (n, h, w) and boxes.dtype == torch.bool
    has = boxes.flatten(1).any(1)
    assert abs(float(has.float().mean()) - 0.5) < 4 * math.sqrt(0.25 / n)
    for m in boxes[has][:300]:
        rows, cols = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
        bh, bw = len(rows), len(cols)
        assert rows.max() - rows.min() + 1 == bh and cols.max() - cols.min() + 1 == bw  # contiguous
        assert int(m.sum()) == bh * bw  # a filled rectangle
        # floor(sqrt(s / r)) x floor(sqrt(s r)) with s in [0.02, 0.4] HW and r = h / w in [0.3, 1 / 0.3]
        assert bh * bw <= 0.4 * h * w and (bh + 1) * (bw + 1) >= 0.02 * h * w
        assert 0.3 * (bw / (bw + 1)) ** 2 <= (bh + 1) / bw and bh / (bw + 1) <= 1 / 0.3 + 1e-9
    assert not cutmix_boxes(10, (8, 8), torch.Generator(), p=0.0).any()
    tiny = cutmix_boxes(50, (3, 3), torch.Generator().manual_seed(1), p=1.0, area=(0.9, 1.0), max_tries=1)
    assert tiny.shape == (50, 3, 3)  # a box that never fits is clamped into the image, no endless redraw


def test_mix_with_mask_keeps_image_and_label_aligned():
    g = torch.Generator().manual_seed(0)
    labels_a, labels_b = torch.randint(0, K, (4, 8, 8), generator=g), torch.randint(0, K, (4, 8, 8), generator=g)
    image_a, image_b = labels_a[:, None].float() / 10, labels_b[:, None].float() / 10
    box = cutmix_boxes(4, (8, 8), g, p=1.0)
    image, labels = mix_with_mask(image_a, image_b, box), mix_with_mask(labels_a, labels_b, box)
    assert torch.equal(image, labels[:, None].float() / 10)
    assert torch.equal(labels[box], labels_b[box]) and torch.equal(labels[~box], labels_a[~box])
    probs_a = torch.rand(4, K, 8, 8, requires_grad=True)
    probs_b = torch.rand(4, K, 8, 8, requires_grad=True)
    mixed = mix_with_mask(probs_a, probs_b, box.float())  # 0/1 float masks work too
    mixed.sum().backward()
    assert torch.equal(probs_b.grad[:, 0], box.float()) and torch.equal(probs_a.grad[:, 0], 1 - box.float())
    with pytest.raises(ValueError, match="differ in shape"):
        mix_with_mask(image_a, labels_b, box)
    with pytest.raises(ValueError, match="does not fit"):
        mix_with_mask(image_a, image_b, box[:, :4])


# -- FixMatch --------------------------------------------------------------------------------------------------------


def test_threshold_masking_max_prob():
    probs = torch.tensor([[0.95, 0.03, 0.02], [0.2, 0.7, 0.1], [0.0, 0.04, 0.96]]).T.reshape(1, K, 3, 1)
    target = pseudo_labels(probs, 0.95, "max-prob")
    assert target.labels.flatten().tolist() == [0, 1, 2]
    assert target.mask.flatten().tolist() == [True, False, True]  # >= tau (FixMatch Eq. 4)
    logits = torch.randn(1, K, 3, 1, requires_grad=True)
    ce = F.cross_entropy(logits, target.labels, reduction="none").flatten()
    assert torch.allclose(pseudo_label_loss(logits, target, "ce"), (ce[0] + ce[2]) / 3)  # / all pixels
    none = PseudoTarget(target.labels, torch.zeros_like(target.mask), target.confidence)
    assert float(pseudo_label_loss(logits, none, "ce").detach()) == 0.0
    assert float(pseudo_label_loss(logits, none, "dice").detach()) == 0.0  # all ignored: (0 + eps) / (0 + eps)


def test_ssl4mis_confidence_rule():
    """(p_k - min p) / max p > tau keeps class k; nothing kept -> background, every pixel counts."""
    probs = torch.tensor([[0.1, 0.4, 0.3, 0.2], [0.05, 0.6, 0.3, 0.05], [0.02, 0.02, 0.9, 0.06]]).T.reshape(1, 4, 3, 1)
    target = pseudo_labels(probs, 0.8, "ssl4mis")
    # pixel 0: (0, 0.75, 0.5, 0.25) -> none > 0.8 -> 0 although argmax is 1; pixel 1: 0.55 / 0.6 = 0.917 -> 1
    assert target.labels.flatten().tolist() == [0, 1, 2]
    assert target.mask.all()


def test_dice_of_pseudo_labels_is_unimatchs_ignore_dice():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, K, 6, 6, generator=g)
    labels = torch.randint(0, K, (2, 6, 6), generator=g)
    mask = torch.rand(2, 6, 6, generator=g) > 0.4
    value = pseudo_label_loss(logits, PseudoTarget(labels, mask, torch.ones(2, 6, 6)), "dice")
    p = logits.softmax(1)
    dice = 0.0
    for k in range(K):  # LiheYoung/UniMatch util/utils.py DiceLoss._dice_loss with ignore = ~mask
        score, tgt = p[:, k][mask], (labels == k).float()[mask]
        dice += 1 - (2 * (score * tgt).sum() + 1e-5) / ((score * score).sum() + (tgt * tgt).sum() + 1e-5)
    assert torch.allclose(value, dice / K)


def test_complementary_loss_against_its_restatement():
    g = torch.Generator().manual_seed(0)
    logits_s = torch.randn(3, 4, 5, 5, generator=g, requires_grad=True)
    probs_w = torch.randn(3, 4, 5, 5, generator=g).softmax(1)
    value = complementary_loss(logits_s, probs_w)
    soft = logits_s.softmax(1)
    entropy = torch.distributions.Categorical(probs=soft.reshape(3, 4, 25)).entropy()
    as_weight = (1 - entropy / math.log(25)).mean()
    expected = as_weight * (as_weight * F.cross_entropy(1 - soft, probs_w.argmin(1)))
    assert torch.allclose(value, expected)
    (grad,) = torch.autograd.grad(value, logits_s)
    assert grad.abs().sum() > 0


def test_fixmatch_loss_is_the_papers_equation_step_by_step():
    method = build("fixmatch", threshold=0.4, weight=0.7, loss="ce", joint_bn=False)  # the paper's separate passes
    batch_l, batch_u = batches()
    torch.manual_seed(5)
    out = method.training_step(batch_l, batch_u, STEP)
    torch.manual_seed(5)
    gen = step_generator()
    net = method.student
    logits_l, logits_w = net(batch_l.image), net(batch_u.image)
    with torch.no_grad():
        conf, q_hat = logits_w.softmax(1).max(1)
    x_s = strong_augment(batch_u.image, gen, method.cfg)
    ce = F.cross_entropy(net(x_s), q_hat, reduction="none")
    l_u = (ce * (conf >= 0.4)).sum() / ce.numel()  # Eq. 4
    l_s = F.cross_entropy(logits_l, batch_l.label)  # Eq. 3
    assert 0 < float((conf >= 0.4).float().mean()) < 1  # the mask is not trivial
    assert torch.allclose(out["unsup/strong"], l_u) and torch.allclose(out["loss"], l_s + 0.7 * l_u)


def test_fixmatch_ssl4mis_recipe_step_by_step():
    """SSL4MIS FixMatch: 2 x 0.5 (CE + Dice) + w (CE + Dice + a^2 comp) on joint weak / strong passes."""
    method = build(
        "fixmatch",
        loss="ce+dice-ssl4mis",
        sup_weight=2.0,
        threshold=0.8,
        confidence="ssl4mis",
        unsup_loss="ce+dice",
        complementary=True,
        joint_bn=True,
        weight=0.1,
        ramp="none",
    )
    batch_l, batch_u = batches()
    torch.manual_seed(5)
    out = method.training_step(batch_l, batch_u, STEP)
    torch.manual_seed(5)
    gen = step_generator()
    net, n = method.student, batch_l.image.shape[0]
    weak = net(torch.cat([batch_l.image, batch_u.image]))
    target = pseudo_labels(weak[n:].softmax(1), 0.8, "ssl4mis")
    x_su = strong_augment(batch_u.image, gen, method.cfg)
    x_sl = strong_augment(batch_l.image, gen, method.cfg)
    strong = net(torch.cat([x_sl, x_su]))
    sup = supervised_loss(weak[:n], batch_l.label, "ce+dice-ssl4mis")["sup/total"]
    unsup = pseudo_label_loss(strong[n:], target, "ce+dice") + complementary_loss(strong, weak.softmax(1))
    assert torch.allclose(out["loss"], 2.0 * sup + 0.1 * unsup)


def test_cutmix_target_follows_the_pasted_image():
    method = build("fixmatch", jitter_p=0.0, cutmix_p=1.0)
    n = 4
    x_w = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 16, 16) / 10
    ids = torch.arange(n).view(n, 1, 1).expand(n, 16, 16)
    target = PseudoTarget(ids, ids % 2 == 0, ids.float())
    partner = PseudoTarget(*(t.roll(1, 0) for t in target))
    x_s, mixed, box = method.strong_view(x_w, target, partner, torch.Generator().manual_seed(0))
    assert box.flatten(1).any(1).all()
    assert torch.allclose(x_s[:, 0], mixed.labels.float() / 10)  # image and label come from the same sample
    assert torch.equal(mixed.labels[box], ids.roll(1, 0)[box]) and torch.equal(mixed.labels[~box], ids[~box])
    assert torch.equal(mixed.mask, mixed.labels % 2 == 0)  # the mask travels with its label


def test_fixmatch_is_2d_only():
    assert METHODS.get("fixmatch").dims == (2,) and METHODS.get("unimatch").dims == (2,)


def test_bad_options_raise():
    for options, match in (
        ({"threshold": 1.5}, "params.threshold"),
        ({"confidence": "entropy"}, "params.confidence"),
        ({"unsup_loss": "mse"}, "params.unsup_loss"),
        ({"blur_p": 2.0}, "params.blur_p"),
        ({"cutmix_area": (0.5, 0.1)}, "params.cutmix_area"),
    ):
        with pytest.raises(ValueError, match=match):
            build("fixmatch", **options)
    with pytest.raises(ValueError, match="params.complementary"):
        build("unimatch", complementary=True)
    with pytest.raises(ValueError, match="params.fp_share"):
        build("unimatch", fp_share=1.5)


# -- UniMatch -------------------------------------------------------------------------------------------------------


def test_feature_perturbation_is_channel_dropout_on_every_encoder_feature():
    method = build("unimatch", fp_dropout=0.5)
    net = method.student
    seen = []
    decode = net.decode

    def spy(feats):
        seen.extend(feats)
        return decode(feats)

    net.decode = spy
    x = torch.rand(4, 1, 16, 16)
    method.eval()  # running BatchNorm statistics: the clean half must equal the plain forward
    with torch.no_grad():
        clean, perturbed = method.perturbed_forward(x)
        feats = net.encode(x)
    net.decode = decode
    assert len(seen) == len(feats) == 3  # depth 2: two skips and the bottleneck, all perturbed
    dropped = []
    for f, both in zip(feats, seen):
        assert torch.equal(both[:4], f)
        for b in range(4):
            for ch in range(f.shape[1]):
                pos = f[b, ch] > 0
                if pos.any():  # a channel is dropped whole or kept and scaled by 1 / (1 - p)
                    ratio = both[4 + b, ch][pos] / f[b, ch][pos]
                    assert torch.allclose(ratio, 0 * ratio) or torch.allclose(ratio, 0 * ratio + 2)
                    dropped.append(bool(ratio[0] == 0))
    assert 0.3 < sum(dropped) / len(dropped) < 0.7
    with torch.no_grad():
        assert torch.allclose(clean, net(x), atol=1e-6) and not torch.allclose(perturbed, clean)
    method.cfg.fp_dropout = 0.0
    with torch.no_grad():
        clean, perturbed = method.perturbed_forward(x)
    assert torch.equal(clean, perturbed)


def test_unimatch_needs_an_encoder_decoder_split():
    class Plain(SegNet):
        def __init__(self, **_: object) -> None:
            super().__init__(2, 4, K)
            self.conv = nn.Conv2d(1, 4, 3, padding=1)

        def features(self, x):
            return self.conv(x)

    cls = METHODS.get("unimatch")
    with pytest.raises(ValueError, match="no encode/decode split"):
        cls(cls.Config(), make_ctx(lambda **kw: Plain(**kw)))


@pytest.mark.parametrize("joint_bn", [False, True])
def test_unimatch_loss_is_the_reference_composition_step_by_step(joint_bn):
    """(loss_x + 0.25 l_s1 + 0.25 l_s2 + 0.5 l_fp) / 2 with the masked Dice, CutMix from the previous sample."""
    method = build("unimatch", threshold=0.5, joint_bn=joint_bn, cutmix_p=1.0)
    batch_l, batch_u = batches()
    torch.manual_seed(5)
    out = method.training_step(batch_l, batch_u, STEP)
    torch.manual_seed(5)
    gen = step_generator()
    net, n, c = method.student, batch_l.image.shape[0], method.cfg
    x_l, x_w = batch_l.image, batch_u.image
    x = torch.cat([x_l, x_w]) if joint_bn else x_w
    logits_l = None if joint_bn else net(x_l)
    feats = net.encode(x)
    both = net.decode([torch.cat([f, F.dropout2d(f, 0.5, training=True)]) for f in feats])
    clean, fp = both[: x.shape[0]], both[x.shape[0] :]
    if joint_bn:
        logits_l, clean, fp = clean[:n], clean[n:], fp[n:]
    conf, y_hat = clean.detach().softmax(1).max(1)
    with torch.no_grad(), stochastic_mode(net, dropout=False, bn="running"):  # model.eval() on the mix images
        conf_mix, y_mix = net(x_w).softmax(1).max(1)
    conf_mix, y_mix = conf_mix.roll(1, 0), y_mix.roll(1, 0)

    def view():
        s = strong_augment(x_w, gen, c)
        box = cutmix_boxes(n, (16, 16), gen, p=1.0, area=c.cutmix_area, ratio=c.cutmix_ratio)
        s = torch.where(box[:, None], s.roll(1, 0), s)
        return s, torch.where(box, y_mix, y_hat), torch.where(box, conf_mix, conf)

    (s1, y1, c1), (s2, y2, c2) = view(), view()
    p1, p2 = net(torch.cat([s1, s2])).chunk(2)

    def dice(logits, y, ignore):  # UniMatch util/utils.py DiceLoss(softmax input, ignore)
        p, keep, total = logits.softmax(1), ~ignore, 0.0
        for k in range(K):
            score, tgt = p[:, k][keep], (y == k).float()[keep]
            total += 1 - (2 * (score * tgt).sum() + 1e-5) / ((score**2).sum() + (tgt**2).sum() + 1e-5)
        return total / K

    l_s1, l_s2, l_fp = dice(p1, y1, c1 < 0.5), dice(p2, y2, c2 < 0.5), dice(fp, y_hat, conf < 0.5)
    no_ignore = torch.zeros_like(batch_l.label, dtype=torch.bool)
    loss_x = (F.cross_entropy(logits_l, batch_l.label) + dice(logits_l, batch_l.label, no_ignore)) / 2
    assert torch.allclose(out["unsup/s1"], l_s1) and torch.allclose(out["unsup/fp"], l_fp)
    assert torch.allclose(out["loss"], (loss_x + 0.25 * l_s1 + 0.25 * l_s2 + 0.5 * l_fp) / 2)
    assert 0 < float(out["mask/certain_frac"]) < 1


# -- presets -------------------------------------------------------------------------------------------------------


def test_fixmatch_defaults_and_ssl4mis_preset_are_the_references():
    paper = METHODS.get("fixmatch").Config()
    assert (paper.threshold, paper.weight, paper.ramp, paper.confidence, paper.unsup_loss) == (
        0.95,
        1.0,
        "none",
        "max-prob",
        "ce",
    )  # FixMatch §4: tau = 0.95, lambda_u = 1
    cfg = resolve_config("fixmatch", "acdc", preset="ssl4mis")
    p = cfg.params
    # HiLab-git/SSL4MIS code/train_fixmatch_standard_augs.py
    assert (p.threshold, p.confidence, p.unsup_loss, p.complementary) == (0.8, "ssl4mis", "ce+dice", True)
    assert (p.loss, p.sup_weight) == ("ce+dice-ssl4mis", 2.0)  # CE + Dice
    assert (p.weight, p.ramp, p.rampup, p.ramp_levels) == (0.1, "sigmoid", 1.0, 200)  # 0.1 sigmoid(iter // 150, 200)
    assert (p.jitter_p, p.brightness, p.contrast, p.blur_p, p.cutmix_p) == (1.0, 0.8, 0.8, 0.0, 0.0)
    assert p.joint_bn and cfg.dataset.augment == "flip-rot" and cfg.dataset.labeled == 7
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == ("sgd", 0.01, 0.9, 1e-4)
    assert cfg.trainer.epochs * cfg.trainer.iters_per_epoch == 30_000
    assert (cfg.trainer.batch_size, cfg.trainer.unlabeled_batch_size, cfg.dataset.image_size) == (12, 12, (256, 256))


def test_unimatch_ssl4mis_preset_is_its_acdc_config():
    cfg = resolve_config("unimatch", "acdc", preset="ssl4mis")
    p = cfg.params
    # configs/acdc.yaml: crop 256, batch 12, lr 0.01, epochs 300, conf_thresh 0.95
    assert cfg.dataset.image_size == (256, 256) and cfg.optim.lr == 0.01 and p.threshold == 0.95
    assert (cfg.trainer.batch_size, cfg.trainer.unlabeled_batch_size) == (12, 12)
    assert cfg.trainer.epochs == 300 and cfg.trainer.iters_per_epoch is None  # one pass over the unlabelled slices
    optim = cfg.optim
    assert (optim.name, optim.momentum, optim.weight_decay, optim.schedule) == ("sgd", 0.9, 1e-4, "poly")
    # unimatch.py: loss = (loss_x + 0.25 s1 + 0.25 s2 + 0.5 fp) / 2, loss_x = (CE + Dice) / 2, Dice on the streams
    assert (p.loss, p.sup_weight, p.weight, p.ramp, p.unsup_loss) == ("ce+dice-ssl4mis", 0.5, 0.5, "none", "dice")
    method = METHODS.get("unimatch")(p, make_ctx())
    assert method.shares() == {"unsup/s1": 0.25, "unsup/s2": 0.25, "unsup/fp": 0.5}
    assert method.unsup_weight(STEP) == 0.5
    # model/unet.py need_fp: nn.Dropout2d(0.5); dataset/acdc.py: ColorJitter(0.5, ...) p 0.8, blur p 0.5, CutMix p 0.5
    assert (p.fp_dropout, p.jitter_p, p.brightness, p.contrast) == (0.5, 0.8, 0.5, 0.5)
    assert (p.blur_p, p.blur_sigma, p.cutmix_p, p.cutmix_area) == (0.5, (0.1, 2.0), 0.5, (0.02, 0.4))
    assert p.cutmix_ratio == pytest.approx((0.3, 1 / 0.3))
    assert cfg.model.backbone == "ssl4mis-unet" and p.joint_bn and cfg.dataset.augment == "ssl4mis"


@pytest.mark.parametrize("name", ["fixmatch", "unimatch"])
def test_every_preset_resolves_and_a_labelled_only_step_has_no_unsup_terms(name):
    from ssl_bench.core.config import PRESETS

    for preset in PRESETS:
        assert resolve_config(name, "cardiac-phantom", preset=preset).params is not None
    method = build(name)
    batch_l, _ = batches()
    out = method.training_step(batch_l, None, STEP)
    assert not any(k.startswith("unsup/") for k in out)
    assert torch.allclose(out["loss"], method.cfg.sup_weight * out["sup/total"])
