"""Equivalence with the reference codes: CoraNet (both protocols), Mean Teacher and UA-MT against plain-torch
restatements of what the reference scripts compute.

Each ``ref_*`` function below states one reference computation step by step, written here from the papers and from
descriptions of the released code (never copied from it). Sources: HiLab-git/SSL4MIS (``code/utils/losses.py``,
``code/utils/ramps.py``, ``code/train_mean_teacher_2D.py``, ``code/train_uncertainty_aware_mean_teacher_2D.py``),
yulequan/UA-MT (``code/utils/losses.py``, ``code/train_LA_meanteacher_certainty_unlabel.py``) and koncle/CoraNet
(``train_ST_3D_VNet.py``, ``utils1/loss.py``, ``utils1/utils.py``). Our code runs on identical random tensors and
weights; values agree to 1e-6 unless a test states a documented deviation.

Naming: the released CoraNet code calls its cost-[1, 5] head (5x for foreground errors) "con" and its cost-[5, 1]
head "rad"; ours follows the paper's Eq. 1 (w_con = [alpha, 1], w_rad = [1, alpha] for [background, foreground]),
so our ``rad`` head is the released head 1 and our ``con`` head the released head 2. The losses are the same.

Documented deviations pinned here (see each test): UA-MT's entropy adds 1e-6 inside the log in the reference
(|difference| <= K * 1e-6); CoraNet's masks threshold ``p >= 0.5`` in the reference, ours take the arg-max (a tie at
exactly 0.5 goes to background here, foreground there); SSL4MIS's 4-class UA-MT divides its channel *sum* by
2 |mask| (twice our class-mean); the EMA teacher copies the student's BatchNorm buffers (SSL4MIS averages parameters
only).
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ssl_bench.core.data import TaskSpec
from ssl_bench.core.method import Batch, EpochData, MethodContext, StepInfo
from ssl_bench.core.registry import ESTIMATORS
from ssl_bench.methods.coranet import CoraNet, CoraNetConfig
from ssl_bench.methods.mean_teacher import MeanTeacher, MeanTeacherConfig
from ssl_bench.methods.ua_mt import UAMT, UAMTConfig
from ssl_bench.nets.ssl4mis_unet import ssl4mis_unet
from ssl_bench.nets.unet import unet2d
from ssl_bench.training.consistency import ramped_weight, softmax_mse
from ssl_bench.training.ema import EMATeacher
from ssl_bench.training.losses import supervised_loss

TOL = 1e-6

# -- reference computations (plain torch, from the descriptions) --------------------------------------------------


def ref_sigmoid_rampup(current: float, length: float) -> float:
    """SSL4MIS ``code/utils/ramps.py`` (= UA-MT's, = CoraNet's get_current_consistency_weight): 1 if length is 0,
    else exp(-5 (1 - clip(current, 0, length) / length)^2)."""
    if length == 0:
        return 1.0
    phase = 1.0 - min(max(current, 0.0), length) / length
    return float(math.exp(-5.0 * phase * phase))


def ref_ssl4mis_dice_loss(probs: torch.Tensor, target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """SSL4MIS ``DiceLoss(n_classes)(probs, target[:, None])`` on softmaxed input: one-hot over all classes
    (background included); per class, sums over the whole batch: I = sum p g, Y = sum g^2, Z = sum p^2,
    d = (2 I + 1e-5) / (Z + Y + 1e-5); loss = mean over classes of (1 - d)."""
    losses = []
    for i in range(n_classes):
        p, g = probs[:, i], (target == i).float()
        intersect, y_sum, z_sum = (p * g).sum(), (g * g).sum(), (p * p).sum()
        losses.append(1 - (2 * intersect + 1e-5) / (z_sum + y_sum + 1e-5))
    return sum(losses) / n_classes


def ref_ssl4mis_supervised(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSL4MIS 2D scripts: 0.5 (CrossEntropyLoss()(logits, y) + DiceLoss(C)(softmax(logits), y))."""
    return 0.5 * (F.cross_entropy(logits, y) + ref_ssl4mis_dice_loss(logits.softmax(1), y, logits.shape[1]))


def ref_uamt_supervised(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """UA-MT ``losses.dice_loss(softmax(out)[:, 1], y == 1)``: pooled over the batch, squared denominators, smooth
    1e-5, foreground only; the script's loss is 0.5 (CE + dice)."""
    score, g = logits.softmax(1)[:, 1], (y == 1).float()
    intersect, y_sum, z_sum = (score * g).sum(), (g * g).sum(), (score * score).sum()
    dice = 1 - (2 * intersect + 1e-5) / (z_sum + y_sum + 1e-5)
    return 0.5 * (F.cross_entropy(logits, y) + dice)


def ref_coranet_dice(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """CoraNet ``utils1/loss.py`` DiceLoss(2)(logits, y, mask): softmax, one-hot with background; per sample n and
    class c, I = sum p g m, U = sum (p + g) m; d = (2 I + 1e-5) / (U + 1e-5) (no squares); 1 - mean over N x C."""
    p = logits.softmax(1)
    m = torch.ones_like(p[:, 0]) if mask is None else mask.float()
    dices = []
    for n in range(p.shape[0]):
        for c in range(p.shape[1]):
            g = (y[n] == c).float()
            inter = (p[n, c] * g * m[n]).sum()
            union = ((p[n, c] + g) * m[n]).sum()
            dices.append((2 * inter + 1e-5) / (union + 1e-5))
    return 1 - torch.stack(dices).mean()


W_CON_RELEASED = torch.tensor([1.0, 5.0])  # train_ST_3D_VNet.py: head 1 ("con")
W_RAD_RELEASED = torch.tensor([5.0, 1.0])  # head 2 ("rad")


def ref_coranet_sup(o: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """CoraNet ``train_ST_3D_VNet.py``: L_sup = (CE(o0) + Dice(o0) + CE_wcon(o1) + CE_wrad(o2)) / 4, the CE terms
    ``nn.CrossEntropyLoss(weight=w)`` with mean reduction, i.e. sum w_y ce / sum w_y."""
    return (
        F.cross_entropy(o[0], y)
        + ref_coranet_dice(o[0], y)
        + F.cross_entropy(o[1], y, weight=W_CON_RELEASED)
        + F.cross_entropy(o[2], y, weight=W_RAD_RELEASED)
    ) / 4


def ref_coranet_masks(o: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """CoraNet ``utils1/utils.py`` pred_unlabel: get_mask(h) = softmax(h)[:, 1] >= 0.5; pseudo-label = mask(h0),
    certain = mask(h1) == mask(h2)."""
    masks = [h.softmax(1)[:, 1] >= 0.5 for h in o]
    return masks[0].long(), masks[1] == masks[2]


def ref_coranet_step(
    o_l: list[torch.Tensor],
    y: torch.Tensor,
    o_u: list[torch.Tensor],
    e_u: list[torch.Tensor],
    pseudo: torch.Tensor,
    certain: torch.Tensor,
    epoch: int,
) -> dict[str, torch.Tensor]:
    """CoraNet ``train_ST_3D_VNet.py`` self_train step (REFERENCE §1.4), heads o = (h0, h1 "con", h2 "rad"):

    * S(f) = sum(f m) / (sum m + 1e-16) over the certain voxels m;
    * L_cert = (S(CE(o0)) + Dice(o0, mask m) + S(w_rad[y] CE(o1)) + S(w_con[y] CE(o2))) / 4 (weights swapped);
    * per head k: c_k = w sum_{voxels, channels}((softmax o_k - softmax e_k)^2 (1 - m)) / (sum (1 - m) + 1e-16),
      w = 0.1 sigmoid_rampup(epoch, 40); L_unc = (c_0 + c_1 + c_2) / 3;
    * L = L_sup + 0.5 (L_cert + L_unc).
    """
    m = certain.float()

    def s(f: torch.Tensor) -> torch.Tensor:
        return (f * m).sum() / (m.sum() + 1e-16)

    ce = [F.cross_entropy(h, pseudo, reduction="none") for h in o_u]
    l_cert = (
        s(ce[0])
        + ref_coranet_dice(o_u[0], pseudo, certain)
        + s(W_RAD_RELEASED[pseudo] * ce[1])
        + s(W_CON_RELEASED[pseudo] * ce[2])
    ) / 4
    unc = (1 - m).unsqueeze(1)
    w = 0.1 * ref_sigmoid_rampup(epoch, 40)
    c = [w * ((h.softmax(1) - t.softmax(1)) ** 2 * unc).sum() / (unc.sum() + 1e-16) for h, t in zip(o_u, e_u)]
    l_unc = sum(c) / 3
    l_sup = ref_coranet_sup(o_l, y)
    return {"sup": l_sup, "cert": l_cert, "unc": l_unc, "loss": l_sup + 0.5 * (l_cert + l_unc)}


def ref_ema(teacher: list[torch.Tensor], student: list[torch.Tensor], alpha: float) -> list[torch.Tensor]:
    """SSL4MIS / UA-MT ``update_ema_variables`` (and CoraNet's, with a constant alpha): per parameter,
    ema <- alpha ema + (1 - alpha) param."""
    return [alpha * t + (1 - alpha) * s for t, s in zip(teacher, student)]


def ref_uamt_uncertainty(
    net: torch.nn.Module, x_u: torch.Tensor, t: int, max_iter: int, noises: list[torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """UA-MT / SSL4MIS uncertainty (T = 8): x_r = x_u repeated twice; for i in 0..3, fresh noise on x_r (drawn
    just before the pass, or ``noises[i]``), a teacher pass in train mode (dropout on, BatchNorm batch statistics);
    softmax; reshape to (8, B, C, ...) and mean over the 8 -> p; U = -sum_c p log(p + 1e-6) (nats);
    threshold = (0.75 + 0.25 sigmoid_rampup(t, max_iter)) ln 2; certain = U < threshold."""
    b = x_u.shape[0]
    x_r = x_u.repeat(2, *([1] * (x_u.ndim - 1)))
    preds = []
    with torch.no_grad():
        for i in range(4):
            noise = draw_noise(x_r.shape) if noises is None else noises[i]
            preds.append(net(x_r + noise))
    probs = torch.cat(preds).softmax(1)
    p = probs.reshape(8, b, *probs.shape[1:]).mean(0)
    u = -(p * torch.log(p + 1e-6)).sum(1)
    thr = (0.75 + 0.25 * ref_sigmoid_rampup(t, max_iter)) * math.log(2)
    return p, u, u < thr, thr


def draw_noise(shape: torch.Size) -> torch.Tensor:
    """The reference's input noise: clamp(0.1 N(0, 1), -0.2, 0.2), from torch's global RNG."""
    return torch.clamp(torch.randn(shape) * 0.1, -0.2, 0.2)


# -- builders -----------------------------------------------------------------------------------------------------


def context(num_classes: int, factory, epochs: int = 40) -> MethodContext:
    spec = TaskSpec(dims=2, num_classes=num_classes, label_names=tuple(f"c{i}" for i in range(num_classes)))
    return MethodContext(spec=spec, backbone_factory=factory, epochs=epochs)


def tiny_unet(num_classes: int, dropout: float = 0.0):
    return functools.partial(unet2d, 1, num_classes, width=4, depth=2, dropout=dropout)


def coranet(**cfg) -> CoraNet:
    torch.manual_seed(0)
    return CoraNet(CoraNetConfig(**cfg), context(2, tiny_unet(2)))


def info(stage_step: int, stage_steps: int = 100, stage: str = "train", steps_per_epoch: int = 10) -> StepInfo:
    return StepInfo(
        step=stage_step,
        epoch=stage_step // steps_per_epoch,
        stage=stage,
        stage_step=stage_step,
        stage_steps=stage_steps,
        total_steps=stage_steps,
        steps_per_epoch=steps_per_epoch,
    )


def perturb(module: torch.nn.Module, scale: float = 0.05, seed: int = 7) -> None:
    """Move every parameter by a random amount (a teacher that differs from the student)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def assert_same(a: list[torch.Tensor], b: list[torch.Tensor], atol: float = 0.0) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=atol, rtol=0)


def labels(n: int, k: int, size: int, g: torch.Generator, empty: tuple[int, ...] = ()) -> torch.Tensor:
    y = torch.randint(0, k, (n, size, size), generator=g)
    for i in empty:  # a crop without foreground
        y[i] = 0
    return y


# -- supervised losses --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("empty", [(), (1,)])
def test_ssl4mis_supervised_loss(empty):
    """SSL4MIS ``code/utils/losses.py`` DiceLoss + ``code/train_mean_teacher_2D.py`` loss_ce/loss_dice: 0.5 (CE +
    Dice over all 4 classes, pooled, squared denominators) = our ``"ce+dice-ssl4mis"``."""
    g = torch.Generator().manual_seed(1)
    logits = 3 * torch.randn(3, 4, 16, 16, generator=g)
    y = labels(3, 4, 16, g, empty)
    if empty:
        y[y == 2] = 3  # a class absent from the whole batch
    ours = supervised_loss(logits, y, "ce+dice-ssl4mis")["sup/total"]
    assert abs(ours.item() - ref_ssl4mis_supervised(logits, y).item()) <= TOL


def test_uamt_supervised_loss():
    """yulequan/UA-MT ``code/utils/losses.py`` dice_loss on the foreground softmax + CE, halved
    (``train_LA_meanteacher_certainty_unlabel.py``) = our ``"ce+dice-uamt"`` for 2 classes."""
    g = torch.Generator().manual_seed(2)
    logits = 2 * torch.randn(2, 2, 8, 12, 12, generator=g)  # 3D, as LA
    y = torch.randint(0, 2, (2, 8, 12, 12), generator=g)
    ours = supervised_loss(logits, y, "ce+dice-uamt")["sup/total"]
    assert abs(ours.item() - ref_uamt_supervised(logits, y).item()) <= TOL
    # and the losses can tell the two Dice forms apart (the test is not vacuous)
    assert abs(supervised_loss(logits, y, "ce+dice-ssl4mis")["sup/total"].item() - ours.item()) > 1e-3


@pytest.mark.parametrize("empty", [(), (0,), (0, 1)], ids=["fg", "one-empty", "all-empty"])
def test_coranet_released_supervised_loss(empty):
    """koncle/CoraNet ``train_ST_3D_VNet.py`` pretrain/self_train L_sup with ``utils1/loss.py`` DiceLoss (per
    sample, linear denominators) and weighted-mean CE = CoraNet(protocol=released-code)._labelled_losses, also when
    a sample's crop (or the whole batch) has no foreground."""
    method = coranet(protocol="released-code")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 1, 16, 16, generator=g)
    y = labels(2, 2, 16, g, empty)
    heads = method.student.forward_heads(x)
    ours = method._labelled_losses(heads, y)
    ref = ref_coranet_sup([heads["main"], heads["rad"], heads["con"]], y)  # released head 1 = our rad (see top)
    assert abs(ours["sup/total"].item() - ref.item()) <= TOL
    assert abs(ours["sup/dice"].item() - ref_coranet_dice(heads["main"], y).item()) <= TOL


# -- pseudo-labels and masks ----------------------------------------------------------------------------------------


def test_coranet_pseudo_labels_and_certain_mask():
    """koncle/CoraNet ``utils1/utils.py`` pred_unlabel: pseudo-label = head-0 foreground softmax >= 0.5, certain =
    the con and rad masks agree; ours: the ``crm`` estimator and the stored maps of ``refresh`` (student in eval
    mode, as ours computes masks)."""
    method = coranet(protocol="released-code")
    perturb(method.student, 0.3, seed=11)  # spread the heads so that both masks vary
    g = torch.Generator().manual_seed(4)
    images = torch.randn(5, 1, 16, 16, generator=g)
    method.student.eval()
    with torch.no_grad():
        heads = method.student.forward_heads(images)
    ref_pl, ref_cert = ref_coranet_masks([heads["main"], heads["con"], heads["rad"]])
    umap = method.estimator.estimate(method.student, images)
    assert torch.equal(umap.pseudo_label, ref_pl) and torch.equal(umap.certain, ref_cert)
    assert 0 < ref_cert.float().mean() < 1 and 0 < ref_pl.float().mean() < 1  # not vacuous

    def iterate(bs):
        for i in range(0, len(images), bs):
            yield Batch(images[i : i + bs], None, torch.arange(i, min(i + bs, len(images))))

    method.student.train()
    method.refresh(EpochData(iterate, len(images), torch.device("cpu")))
    assert torch.equal(method._pl.long(), ref_pl) and torch.equal(method._certain, ref_cert)
    assert method.student.training  # refresh restored the mode


def test_coranet_mask_tie_at_one_half_is_a_documented_deviation():
    """Reference get_mask uses ``p >= 0.5`` (a tie is foreground); ours takes the arg-max / the vote against 0.5,
    where a tie is background. Only exact ties differ (measure zero for real-valued logits)."""
    tie = torch.zeros(1, 2, 2, 2)  # p = 0.5 everywhere
    ref_pl, _ = ref_coranet_masks([tie, tie, tie])
    umap = ESTIMATORS.get("crm")(None, 2)
    net = unet2d(1, 2, width=4, depth=2, extra_heads=umap.required_heads())
    with torch.no_grad():  # zero logits from every head
        for h in [net.head, *(m[-1] for m in net.extra_heads.values())]:
            h.weight.zero_()
            h.bias.zero_()
    net.eval()
    out = umap.estimate(net, torch.randn(1, 1, 4, 4))
    assert bool(ref_pl.all()) and not bool(out.pseudo_label.any())


def entropy_estimator(num_classes: int, **options):
    cls = ESTIMATORS.get("entropy")
    return cls(replace(cls.Config(), entropy_max="ln-2", **options), num_classes)


@pytest.mark.parametrize(("num_classes", "max_iter", "t"), [(2, 6000, 0), (2, 6000, 3000), (4, 30000, 15000)])
def test_uamt_entropy_mask(num_classes, max_iter, t):
    """UA-MT ``code/train_LA_meanteacher_certainty_unlabel.py`` (2 classes, 6000 iterations) and SSL4MIS
    ``code/train_uncertainty_aware_mean_teacher_2D.py`` (4 classes, 30000): T = 8 noisy dropout passes of the
    teacher in train mode, run as 4 forwards of the doubled batch, entropy of the mean softmax, threshold
    (0.75 + 0.25 sigmoid_rampup(t, T_max)) ln 2 = our ``entropy`` estimator with ``entropy_max="ln-2"`` and
    ``per_forward=2`` (the reference's grouping, hence the same BatchNorm batch statistics and the same RNG draws:
    each pass's noise, then its dropout masks).

    Deviation: the reference's entropy is -sum p log(p + 1e-6), ours -sum p log p, so ours is larger by at most
    K * 1e-6; masks agree except within that distance of the threshold. The ``ssl4mis`` preset keeps the default
    ``per_forward=4`` (2 forwards of 4 B images: the same distribution, other BatchNorm batches and RNG draws)."""
    torch.manual_seed(0)
    net = ssl4mis_unet(1, num_classes, width=4)  # SSL4MIS's U-Net: encoder dropout 0.05..0.5
    with torch.no_grad():
        net.head.weight.mul_(30)  # confident enough for a mixed mask
    net.train()
    estimator = entropy_estimator(num_classes, per_forward=2)
    x_u = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    step = info(t, max_iter)
    ref_thr = (0.75 + 0.25 * ref_sigmoid_rampup(t, max_iter)) * math.log(2)
    assert estimator.threshold(step) == pytest.approx(ref_thr, abs=1e-12)
    ref_net = copy.deepcopy(net)  # the reference's passes update BatchNorm running statistics, ours never do
    torch.manual_seed(123)
    umap = estimator.estimate(net, x_u, step)
    torch.manual_seed(123)
    p, u, certain, thr = ref_uamt_uncertainty(ref_net, x_u, t, max_iter)
    torch.testing.assert_close(umap.prob, p, atol=TOL, rtol=0)
    diff = umap.score - u
    assert float(diff.min()) >= -5e-7 and float(diff.max()) <= num_classes * 1e-6 + 5e-7  # float32 rounding
    clear = (u - thr).abs() > 2 * num_classes * 1e-6
    assert torch.equal(umap.certain[clear], certain[clear])
    assert 0.05 < certain.float().mean() < 0.95  # a mixed mask: the comparison is not vacuous
    # the passes differ (dropout and noise are sampled per pass)
    torch.manual_seed(124)
    assert not torch.allclose(estimator.estimate(net, x_u, step).prob, umap.prob)


# -- consistency terms ------------------------------------------------------------------------------------------------


def test_mean_teacher_softmax_mse_is_ssl4mis_mean():
    """SSL4MIS ``code/train_mean_teacher_2D.py``: torch.mean((softmax(s) - softmax(t))^2), the mean over all
    B x C x H x W elements (``losses.softmax_mse_loss`` unreduced, then the mean) = our ``softmax_mse``."""
    g = torch.Generator().manual_seed(6)
    s, t = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    ref = torch.mean((s.softmax(1) - t.softmax(1)) ** 2)
    assert abs(softmax_mse(s, t.softmax(1)).item() - ref.item()) <= TOL


@pytest.mark.parametrize("mask_kind", ["random", "empty", "full"])
def test_uamt_masked_consistency_two_classes(mask_kind):
    """UA-MT ``train_LA_meanteacher_certainty_unlabel.py``: sum(mask * softmax_mse) / (2 sum(mask) + 1e-16), the
    mask counting voxels and the sum running over both channels = our ``softmax_mse(.., mask)`` for K = 2."""
    g = torch.Generator().manual_seed(7)
    s, t = torch.randn(2, 2, 4, 8, 8, generator=g), torch.randn(2, 2, 4, 8, 8, generator=g)
    mask = {
        "random": torch.rand(2, 4, 8, 8, generator=g) < 0.4,
        "empty": torch.zeros(2, 4, 8, 8, dtype=torch.bool),
        "full": torch.ones(2, 4, 8, 8, dtype=torch.bool),
    }[mask_kind]
    m = mask.float().unsqueeze(1)
    ref = (m * (s.softmax(1) - t.softmax(1)) ** 2).sum() / (2 * m.sum() + 1e-16)
    assert abs(softmax_mse(s, t.softmax(1), mask).item() - ref.item()) <= TOL


def test_ssl4mis_uamt_four_class_consistency_is_twice_ours():
    """Documented deviation (methods/ua_mt.py): SSL4MIS ``train_uncertainty_aware_mean_teacher_2D.py`` divides the
    4-channel sum by 2 sum(mask), ours averages over the classes: the reference term is 4 / 2 = 2 x ours."""
    g = torch.Generator().manual_seed(8)
    s, t = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    mask = torch.rand(2, 8, 8, generator=g) < 0.5
    m = mask.float().unsqueeze(1)
    ref = (m * (s.softmax(1) - t.softmax(1)) ** 2).sum() / (2 * m.sum() + 1e-16)
    assert abs(2 * softmax_mse(s, t.softmax(1), mask).item() - ref.item()) <= TOL


def test_uamt_ssl4mis_consistency_norm_is_the_reference_normalisation():
    """``params.consistency_norm="ssl4mis"`` (the ssl4mis/cpu-bench presets): the 4-class UA-MT term equals SSL4MIS's
    channel sum / (2 sum(mask)), i.e. K / 2 = 2 x the "mean" normalisation, on the same step and random draws."""
    outs = {}
    for norm in ("mean", "ssl4mis"):
        cfg = UAMTConfig(joint_bn=True, consistency_norm=norm, estimator_options={"entropy_max": "ln-k"})
        torch.manual_seed(0)
        method = UAMT(cfg, context(4, tiny_unet(4)))
        perturb(method.teacher.module, 0.2)
        with torch.no_grad():
            method.teacher.module.head.weight.mul_(5)  # a confident teacher: a non-empty certain mask
        method.train()
        batch_l, batch_u = two_streams(4)
        torch.manual_seed(12)
        outs[norm] = method.training_step(batch_l, batch_u, info(50, 100))["unsup/consistency"]
    assert outs["mean"].item() > 1e-6
    assert abs(outs["ssl4mis"].item() - 2 * outs["mean"].item()) <= TOL
    with pytest.raises(ValueError, match="consistency_norm"):
        UAMT(UAMTConfig(consistency_norm="sum"), context(4, tiny_unet(4)))


def two_streams(k: int, n: int = 2, size: int = 16, seed: int = 9) -> tuple[Batch, Batch]:
    g = torch.Generator().manual_seed(seed)
    x_l, x_u = torch.randn(n, 1, size, size, generator=g), torch.randn(n, 1, size, size, generator=g)
    return Batch(x_l, labels(n, k, size, g), torch.arange(n)), Batch(x_u, None, torch.arange(n))


@pytest.mark.parametrize("t", [0, 999, 1000, 1001, 15000, 29999])
def test_mean_teacher_step_matches_ssl4mis(t):
    """SSL4MIS ``code/train_mean_teacher_2D.py``, one iteration (4 classes): one student forward on the labelled
    and unlabelled images together; L_sup = 0.5 (CE + DiceLoss) on the labelled part; teacher (train mode) on
    x_u + clamp(0.1 N, +-0.2); w = 0.1 sigmoid_rampup(iter // 150, 200); L_cons = 0 if iter < 1000 else
    mean((softmax(s_u) - softmax(e))^2); L = L_sup + w L_cons = our mean-teacher with the ``ssl4mis`` options
    (``ce+dice-ssl4mis``, ``joint_bn``, ``rampup=1``, ``ramp_levels=200``, ``mute=1000/30000``)."""
    cfg = MeanTeacherConfig(
        loss="ce+dice-ssl4mis", joint_bn=True, weight=0.1, rampup=1.0, ramp_levels=200, mute=1000 / 30000
    )
    torch.manual_seed(0)
    method = MeanTeacher(cfg, context(4, tiny_unet(4)))
    perturb(method.teacher.module)  # the teacher lags the student
    method.train()
    batch_l, batch_u = two_streams(4)
    torch.manual_seed(11)
    out = method.training_step(batch_l, batch_u, info(t, 30000))
    # reference (no dropout in this backbone: the noise is the only random draw)
    torch.manual_seed(11)
    noise = draw_noise(batch_u.image.shape)
    n = len(batch_l.image)
    with torch.no_grad():
        outputs = method.student(torch.cat([batch_l.image, batch_u.image]))
        ema_soft = method.teacher.module(batch_u.image + noise).softmax(1)
    sup = ref_ssl4mis_supervised(outputs[:n], batch_l.label)
    w = 0.1 * ref_sigmoid_rampup(t // 150, 200)
    cons_term = torch.mean((outputs[n:].softmax(1) - ema_soft) ** 2)
    cons = 0.0 if t < 1000 else cons_term
    loss = sup + w * cons
    assert out["weight/unsup"].item() == pytest.approx(0.0 if t < 1000 else w, rel=1e-7)  # logged as float32
    assert abs(out["sup/total"].item() - sup.item()) <= TOL
    assert abs(out["unsup/consistency"].item() - cons_term.item()) <= TOL
    assert abs(out["loss"].item() - float(loss)) <= TOL
    assert cons_term.item() > 1e-4  # teacher and student differ: the term is not vacuous


@pytest.mark.parametrize("t", [0, 150, 3000, 5999])
def test_uamt_step_matches_reference(t):
    """yulequan/UA-MT ``code/train_LA_meanteacher_certainty_unlabel.py``, one iteration (2 classes, 6000
    iterations): student on [x_l; x_u] together; e = teacher(x_u + noise); 8 noisy teacher passes (4 forwards of
    the doubled batch) give the entropy mask M; L_cons = sum(M (softmax(s_u) - softmax(e))^2) / (2 sum M + 1e-16);
    w = 0.1 sigmoid_rampup(iter // 150, 40); L = 0.5 (CE + fg Dice) + w L_cons = our ua-mt with ``ce+dice-uamt``,
    ``joint_bn``, ``ramp_levels=40``, ``rampup=1``, estimator ``entropy_max="ln-2"``, ``per_forward=2``.

    RNG order (a documented difference, same distribution): the reference draws e's noise first, then the 8
    passes'; ours draws the passes' noise first, then e's. The reference below takes the noise tensors drawn in
    our order (no dropout in this backbone, so the noise is the only random draw)."""
    cfg = UAMTConfig(
        loss="ce+dice-uamt",
        joint_bn=True,
        weight=0.1,
        rampup=1.0,
        ramp_levels=40,
        estimator_options={"entropy_max": "ln-2", "per_forward": 2},
    )
    torch.manual_seed(0)
    method = UAMT(cfg, context(2, tiny_unet(2)))
    perturb(method.teacher.module, 0.2)
    with torch.no_grad():
        method.teacher.module.head.weight.mul_(5)  # a confident teacher: a mixed certainty mask
    method.train()
    batch_l, batch_u = two_streams(2)
    x_u, n = batch_u.image, len(batch_l.image)
    torch.manual_seed(12)
    out = method.training_step(batch_l, batch_u, info(t, 6000))
    torch.manual_seed(12)
    noises = [draw_noise((2 * n, *x_u.shape[1:])) for _ in range(4)]
    noise_e = draw_noise(x_u.shape)
    teacher = method.teacher.module
    with torch.no_grad():
        ema_output = teacher(x_u + noise_e)
        outputs = method.student(torch.cat([batch_l.image, x_u]))
    _, _, certain, _ = ref_uamt_uncertainty(teacher, x_u, t, 6000, noises)
    m = certain.float().unsqueeze(1)
    dist = (outputs[n:].softmax(1) - ema_output.softmax(1)) ** 2
    cons = (m * dist).sum() / (2 * m.sum() + 1e-16)
    w = 0.1 * ref_sigmoid_rampup(t // 150, 40)
    sup = ref_uamt_supervised(outputs[:n], batch_l.label)
    assert out["weight/unsup"].item() == pytest.approx(w, rel=1e-7)  # logged as float32
    assert abs(out["sup/total"].item() - sup.item()) <= TOL
    assert abs(out["mask/certain_frac"].item() - certain.float().mean().item()) <= TOL
    assert abs(out["unsup/consistency"].item() - cons.item()) <= TOL
    assert abs(out["loss"].item() - (sup + w * cons).item()) <= TOL
    assert cons.item() > 1e-4 and 0.05 < certain.float().mean() < (1.01 if t > 5000 else 0.95)  # ln 2 at the end


@pytest.mark.parametrize("epoch", [0, 10, 40, 100])
def test_coranet_released_training_step(epoch):
    """koncle/CoraNet ``train_ST_3D_VNet.py`` self_train, one iteration with stored pseudo-labels and certain masks
    (``utils1/utils.py`` pred_unlabel) and a fixed EMA teacher: L = L_sup + 0.5 (L_cert + L_unc) with swapped
    con/rad costs in L_cert and L_unc weighted by 0.1 sigmoid_rampup(epoch, 40) = CoraNet(protocol=released-code)
    .training_step; the batches include a labelled crop and a pseudo-label without foreground."""
    method = coranet(protocol="released-code", pseudo_labels="offline")
    perturb(method.teacher.module, 0.1)
    g = torch.Generator().manual_seed(13)
    n_u, size = 4, 16
    method._pl = torch.randint(0, 2, (n_u, size, size), generator=g, dtype=torch.uint8)
    method._pl[1] = 0  # no foreground in this volume's pseudo-label
    method._certain = torch.rand(n_u, size, size, generator=g) < 0.7
    x_l = torch.randn(2, 1, size, size, generator=g)
    y_l = labels(2, 2, size, g, empty=(0,))
    idx = torch.tensor([1, 3])
    x_u = torch.randn(2, 1, size, size, generator=g)
    spe = 6  # the released self-training epoch: 6 iterations
    step = StepInfo(
        step=480 + epoch * spe + 1,
        epoch=60 + epoch,
        stage="self-train",
        stage_step=epoch * spe + 1,  # not the stage's first step (which resets the teacher)
        stage_steps=201 * spe,
        total_steps=480 + 201 * spe,
        steps_per_epoch=spe,
    )
    method.train()
    out = method.training_step(Batch(x_l, y_l, torch.arange(2)), Batch(x_u, None, idx), step)
    student, teacher = method.student, method.teacher.module
    with torch.no_grad():
        h_l, h_u, e_u = student.forward_heads(x_l), student.forward_heads(x_u), teacher.forward_heads(x_u)
    order = ("main", "rad", "con")  # released heads 0, 1, 2 (see the module docstring)
    ref = ref_coranet_step(
        [h_l[k] for k in order],
        y_l,
        [h_u[k] for k in order],
        [e_u[k] for k in order],
        method._pl[idx].long(),
        method._certain[idx],
        epoch,
    )
    assert out["weight/unc"].item() == pytest.approx(0.1 * ref_sigmoid_rampup(epoch, 40), rel=1e-7)  # float32
    assert abs(out["sup/total"].item() - ref["sup"].item()) <= TOL
    assert abs(out["unsup/cert"].item() - ref["cert"].item()) <= TOL
    assert abs((out["weight/unc"] * out["unsup/unc"]).item() - ref["unc"].item()) <= TOL
    assert abs(out["loss"].item() - ref["loss"].item()) <= TOL
    assert ref["unc"].item() > 1e-7  # the teacher differs from the student: the term is not vacuous


# -- ramps ----------------------------------------------------------------------------------------------------------


def test_ssl4mis_consistency_weight_over_the_whole_run():
    """SSL4MIS ``code/train_mean_teacher_2D.py`` / ``train_uncertainty_aware_mean_teacher_2D.py``:
    w(iter) = 0.1 sigmoid_rampup(iter // 150, 200) for iter in 0..29999; Mean Teacher's consistency is 0 for
    iter < 1000 = our ramped_weight(0.1, rampup=1, levels=200) and mute=1000/30000, at every iteration; also the
    values the ``ssl4mis`` preset gives both methods."""
    from ssl_bench.training.runner import resolve_config

    presets = {m: resolve_config(m, "acdc", preset="ssl4mis") for m in ("mean-teacher", "ua-mt")}
    for cfg in presets.values():
        assert cfg.trainer.epochs * cfg.trainer.iters_per_epoch == 30000
    mt, ua = presets["mean-teacher"].params, presets["ua-mt"].params
    for t in range(30000):
        step = info(t, 30000)
        ref = 0.1 * ref_sigmoid_rampup(t // 150, 200)
        assert abs(ramped_weight(0.1, step, rampup=1.0, levels=200) - ref) <= 1e-12, t
        muted = ramped_weight(0.1, step, rampup=1.0, levels=200, mute=1000 / 30000)
        assert muted == 0.0 if t < 1000 else abs(muted - ref) <= 1e-12, t
        if t % 97 == 0 or t in (999, 1000):
            got_mt = ramped_weight(mt.weight, step, mt.rampup, mt.ramp, mt.delay, mt.ramp_levels, mt.mute)
            got_ua = ramped_weight(ua.weight, step, ua.rampup, ua.ramp, ua.delay, ua.ramp_levels, ua.mute)
            assert got_mt == pytest.approx(0.0 if t < 1000 else ref, abs=1e-12)
            assert got_ua == pytest.approx(ref, abs=1e-12)


def test_uamt_and_coranet_ramps():
    """UA-MT ``train_LA_meanteacher_certainty_unlabel.py``: 0.1 sigmoid_rampup(iter // 150, 40) over 6000
    iterations = ramped_weight(0.1, rampup=1, levels=40); CoraNet ``train_ST_3D_VNet.py``: 0.1 sigmoid_rampup(epoch,
    40) with the self-training epoch = stage_step // steps_per_epoch (checked through the step in
    test_coranet_released_training_step) = 0.1 sigmoid_rampup on epochs."""
    for t in range(6000):
        ref = 0.1 * ref_sigmoid_rampup(t // 150, 40)
        assert abs(ramped_weight(0.1, info(t, 6000), rampup=1.0, levels=40) - ref) <= 1e-12, t
    # known values of the ramp (SSL4MIS ramps.py): exp(-5) at 0, 1 at the end, exp(-5/4) at half
    from ssl_bench.training.ramps import sigmoid_rampup

    for cur, length, value in [(0, 40, math.exp(-5)), (20, 40, math.exp(-1.25)), (40, 40, 1.0), (99, 40, 1.0)]:
        assert sigmoid_rampup(cur, length) == pytest.approx(value, abs=1e-12) == ref_sigmoid_rampup(cur, length)
    assert sigmoid_rampup(5, 0) == ref_sigmoid_rampup(5, 0) == 1.0


def test_ramped_weight_mute_and_levels_edge_cases():
    """``ramped_weight``: mute zeroes without shifting the ramp; delay shifts it; the staircase equals integer
    division for stage lengths that ``levels`` does not divide; no staircase when the ramp has length 0."""
    w = functools.partial(ramped_weight, 1.0)
    # mute: the first weight after the mute is the ramp's value there, not its start
    assert w(info(999, 30000), 1.0, levels=200, mute=1000 / 30000) == 0.0
    assert w(info(1000, 30000), 1.0, levels=200, mute=1000 / 30000) == pytest.approx(math.exp(-5 * (1 - 6 / 200) ** 2))
    assert w(info(0, 100), 1.0, mute=0.0) == pytest.approx(math.exp(-5))  # mute 0 mutes nothing
    # delay: 0 before, then the ramp starts from its beginning
    assert w(info(9, 100), 0.5, delay=0.1) == 0.0
    assert w(info(10, 100), 0.5, delay=0.1) == pytest.approx(math.exp(-5))
    assert w(info(60, 100), 0.5, delay=0.1) == pytest.approx(1.0)
    # mute and delay together: the later one wins, the ramp counted from the delay
    assert w(info(20, 100), 0.5, delay=0.1, mute=0.3) == 0.0
    assert w(info(30, 100), 0.5, delay=0.1, mute=0.3) == pytest.approx(math.exp(-5 * (1 - 20 / 50) ** 2))
    # staircase = integer division, also when levels does not divide the ramp length (and with a delay)
    for length, levels in [(100, 3), (30, 7), (1000, 7), (999, 37), (7, 3), (50, 200)]:
        for t in range(length + 3):
            expected = math.exp(-5 * (1 - min(t * levels // length, levels) / levels) ** 2)
            assert w(info(t, length), 1.0, levels=levels) == pytest.approx(expected, abs=1e-12), (length, levels, t)
    for t in range(60):  # delay 10 of 60, ramp over 0.5 * 60 = 30 steps in 3 levels of 10
        expected = 0.0 if t < 6 else math.exp(-5 * (1 - min((t - 6) // 10, 3) / 3) ** 2)
        assert w(info(t, 60), 0.5, delay=0.1, levels=3) == pytest.approx(expected, abs=1e-12), t
    # linear staircase; a single level is a step from the ramp's start value to 1
    assert w(info(74, 100), 1.0, "linear", levels=4) == pytest.approx(0.5)
    assert w(info(99, 100), 1.0, levels=1) == pytest.approx(math.exp(-5))
    assert w(info(100, 100), 1.0, levels=1) == 1.0
    # rampup 0: full weight from the first step, levels ignored; beyond the ramp: full weight
    assert w(info(0, 100), 0.0, levels=200) == 1.0
    assert w(info(80, 100), 0.5, levels=10) == 1.0


def test_ramped_weight_mute_counts_whole_steps():
    """mute = 7/25 of a 25-step stage mutes steps 0..6 only, although (7/25) * 25 = 7.000000000000001 in floating
    point (the comparisons carry a 1e-9 tolerance, like the staircase's floor)."""
    assert ramped_weight(1.0, info(7, 25), 1.0, mute=7 / 25) > 0
    assert ramped_weight(1.0, info(7, 25), 0.5, delay=7 / 25) > 0


# -- EMA ------------------------------------------------------------------------------------------------------------


def _optimiser_step(student: torch.nn.Module, seed: int) -> None:
    """Stand-in for an optimiser step: new parameters, and new BatchNorm buffers from a train-mode forward."""
    perturb(student, 0.1, seed)
    student.train()
    with torch.no_grad():
        student(torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(seed)))


def test_ema_with_warmup_matches_ssl4mis():
    """SSL4MIS ``code/train_mean_teacher_2D.py`` / UA-MT: update_ema_variables(model, ema, 0.99, iter_num) after
    each step t = 0, 1, 2, ...: alpha = min(1 - 1/(t + 1), 0.99); the first update copies the student (erasing the
    teacher's own initialisation) = EMATeacher(warmup=True).update(student, step=t).

    BatchNorm buffers (documented deviation): SSL4MIS averages ``parameters()`` only and its teacher's running
    statistics come from its own train-mode passes; ours copies the student's buffers at every update."""
    torch.manual_seed(0)
    student = unet2d(1, 2, width=4, depth=2)
    ema = EMATeacher(student, 0.99, warmup=True)
    perturb(ema.module, 0.5, seed=1)  # the reference's teacher is a separate random initialisation
    ref = params(ema.module)
    for t in range(6):
        _optimiser_step(student, 100 + t)
        ema.update(student, step=t)
        ref = ref_ema(ref, params(student), min(1 - 1 / (t + 1), 0.99))
        assert_same(params(ema.module), ref, atol=TOL)
        if t == 0:
            assert_same(params(ema.module), params(student))  # exact copy
        for b_t, b_s in zip(ema.module.buffers(), student.buffers()):
            assert torch.equal(b_t, b_s)
    assert not torch.allclose(params(ema.module)[0], params(student)[0])  # averaging, not copying, after t = 0
    for t in (0, 1, 2, 98, 99, 100, 10**6):
        assert ema.decay_at(t) == pytest.approx(min(1 - 1 / (t + 1), 0.99), abs=1e-15)


def test_coranet_ema_is_constant_and_self_training_only():
    """koncle/CoraNet ``utils1/utils.py`` update_ema_variables(net, ema, 0.99): constant alpha, no warm-up, after
    each self-training step; ours: CoraNet's EMATeacher(warmup=False) through after_optimizer_step, which leaves
    the teacher alone during pre-training."""
    method = coranet(protocol="released-code")
    teacher = method.teacher
    assert not teacher.warmup and teacher.decay_at(0) == 0.99
    perturb(teacher.module, 0.3, seed=2)
    before = params(teacher.module)
    _optimiser_step(method.student, 50)
    method.after_optimizer_step(info(0, 10, stage="pretrain"))
    assert_same(params(teacher.module), before)
    ref = before
    for t in range(4):
        _optimiser_step(method.student, 60 + t)
        method.after_optimizer_step(info(t, 10, stage="self-train"))
        ref = ref_ema(ref, params(method.student), 0.99)
        assert_same(params(teacher.module), ref, atol=TOL)


# -- the teacher at the stage boundary (real trainer) --------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["paper", "released-code"])
def test_coranet_teacher_is_the_pretrained_student_at_the_stage_boundary(protocol, tmp_path: Path):
    """CoraNet Algorithm 1 line 3 (teacher <- pre-trained student) and koncle/CoraNet ``train_ST_3D_VNet.py``
    (student and EMA model both loaded from the pre-training checkpoint): on the smoke preset (1 pre-training epoch
    of 3 steps, then self-training), the teacher is never touched during pre-training, equals the pre-trained
    student at the first self-training step, and then follows the constant-0.99 EMA."""
    from ssl_bench.training.runner import build_adapter, build_method, resolve_config
    from ssl_bench.training.trainer import Trainer

    overrides = {"params.protocol": protocol, "params.pretrain_epochs": 1, "trainer.val_every": 0}
    cfg = resolve_config("coranet", "cardiac-phantom", preset="smoke", overrides=overrides)
    adapter = build_adapter(cfg)
    method = build_method(cfg, adapter)
    (tmp_path / "checkpoints").mkdir()
    trainer = Trainer(cfg, method, adapter, tmp_path, torch.device("cpu"), progress=False)
    assert [s.name for s in trainer.stages] == ["pretrain", "self-train"]
    initial_teacher = params(method.teacher.module)
    records: list[dict] = []
    training_step, after_optimizer_step = method.training_step, method.after_optimizer_step

    def spy_step(batch_l, batch_u, step):
        student = params(method.student)  # before this step's optimiser update
        out = training_step(batch_l, batch_u, step)
        records.append({"at": "step", "info": step, "student": student, "teacher": params(method.teacher.module),
                        "out": {k: float(v.detach()) for k, v in out.items()}})  # fmt: skip
        return out

    def spy_after(step):
        after_optimizer_step(step)
        records.append({"at": "after", "info": step, "student": params(method.student),
                        "teacher": params(method.teacher.module)})  # fmt: skip

    method.training_step, method.after_optimizer_step = spy_step, spy_after  # instance attributes
    trainer.fit()
    pre = [r for r in records if r["info"].stage == "pretrain"]
    self_train = [r for r in records if r["info"].stage == "self-train"]
    assert len(pre) == 6 and len(self_train) == 6  # 3 steps each, step and after-step records
    for r in pre:  # the teacher is not updated during pre-training
        assert_same(r["teacher"], initial_teacher)
    pretrained = pre[-1]["student"]
    assert max(float((a - b).abs().max()) for a, b in zip(pretrained, initial_teacher)) > 1e-4
    first, first_after = self_train[0], self_train[1]
    assert first["at"] == "step" and first["info"].stage_step == 0 and first_after["at"] == "after"
    assert_same(first["student"], pretrained)
    assert_same(first["teacher"], pretrained)  # teacher <- pre-trained student, exactly
    unc = "unsup/unc" if protocol == "released-code" else "unsup/uc_sn"
    assert abs(first["out"][unc]) < 1e-12  # the same network on the same images: no consistency signal yet
    ref = ref_ema(pretrained, first_after["student"], 0.99)  # then the constant-beta EMA
    assert_same(first_after["teacher"], ref, atol=TOL)
