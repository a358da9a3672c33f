"""Maths of ICT (methods/ict.py) and entropy minimisation (methods/entropy_min.py), restated step by step, and their
``ssl4mis`` presets (HiLab-git/SSL4MIS train_interpolation_consistency_training_2D.py,
train_entropy_minimization_2D.py)."""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from ssl_bench.core.data import TaskSpec
from ssl_bench.core.method import Batch, MethodContext, StepInfo
from ssl_bench.core.registry import BACKBONES, METHODS
from ssl_bench.methods import ict as ict_module
from ssl_bench.methods.entropy_min import mean_entropy
from ssl_bench.methods.ict import mix, mix_pairs
from ssl_bench.training.runner import resolve_config


def make_method(name: str, dims: int = 2, k: int = 4, **options):
    spec = TaskSpec(dims=dims, num_classes=k, label_names=tuple(f"c{i}" for i in range(k)))
    bb = BACKBONES.get("unet2d" if dims == 2 else "unet3d")
    factory = functools.partial(bb, 1, k, width=4, depth=2, norm="batch")
    cls = METHODS.get(name)
    torch.manual_seed(0)
    return cls(replace(cls.Config(), **options), MethodContext(spec=spec, backbone_factory=factory, epochs=2))


def step_at(stage_step: int, stage_steps: int = 100) -> StepInfo:
    return StepInfo(stage_step, 0, "train", stage_step, stage_steps, stage_steps, 10)


def batches(n_l: int = 2, n_u: int = 4, size: int = 16, k: int = 4) -> tuple[Batch, Batch]:
    g = torch.Generator().manual_seed(5)
    x_l, x_u = torch.rand(n_l, 1, size, size, generator=g), torch.rand(n_u, 1, size, size, generator=g)
    y = torch.randint(0, k, (n_l, size, size), generator=g)
    return Batch(x_l, y, torch.arange(n_l)), Batch(x_u, None, torch.arange(n_u))


def sigmoid_rampup(current: float, length: float) -> float:
    """SSL4MIS utils/ramps.py, restated."""
    current = min(max(current, 0.0), length)
    return math.exp(-5.0 * (1.0 - current / length) ** 2)


# -- ICT ------------------------------------------------------------------------------------------------------------


def test_mix_pairs_halves_one_lambda_per_pair_from_beta():
    x = torch.zeros(12, 1, 8, 8)
    torch.manual_seed(0)
    i0, i1, lam = mix_pairs(x, 0.2)
    assert i0.tolist() == list(range(6)) and i1.tolist() == list(range(6, 12))  # u[0:6] with u[6:12]
    assert lam.shape == (6, 1, 1, 1) and lam.unique().numel() == 6  # one lambda per pair
    _, _, one = mix_pairs(x, 0.2, mix_per="batch")
    assert one.unique().numel() == 1
    _, perm, lam_s = mix_pairs(x, 0.2, pairing="shuffle")
    assert sorted(perm.tolist()) == list(range(12)) and lam_s.shape == (12, 1, 1, 1)
    with pytest.raises(ValueError, match="at least 2"):
        mix_pairs(x[:1], 0.2)
    # Beta(0.2, 0.2): mean 1/2, variance 1 / (4 (2 alpha + 1)) = 0.179 (uniform: 0.083; Beta(1, 1) would be uniform)
    torch.manual_seed(1)
    lams = torch.cat([mix_pairs(torch.zeros(2000, 1), 0.2)[2].flatten() for _ in range(10)])
    assert abs(lams.mean() - 0.5) < 0.02 and abs(lams.var() - 1 / (4 * 1.4)) < 0.01
    assert ((lams < 0.1) | (lams > 0.9)).float().mean() > 0.5  # U-shaped: mostly near one of the two images


@pytest.mark.parametrize("pairing", ["halves", "shuffle"])
def test_ict_consistency_is_mixed_student_vs_mixed_teacher(monkeypatch, pairing):
    method = make_method("ict", pairing=pairing, weight=0.3, rampup=0.0, joint_bn=False)
    method.train()
    bl, bu = batches()
    i0 = torch.tensor([0, 1]) if pairing == "halves" else torch.arange(4)
    i1 = torch.tensor([2, 3]) if pairing == "halves" else torch.tensor([2, 0, 3, 1])
    lam = torch.tensor([0.25, 0.9] if pairing == "halves" else [0.25, 0.9, 0.5, 0.0]).view(-1, 1, 1, 1)
    monkeypatch.setattr(ict_module, "mix_pairs", lambda x, alpha, p, per: (i0, i1, lam))
    student, teacher = copy.deepcopy(method.student), copy.deepcopy(method.teacher.module)
    out = method.training_step(bl, bu, step_at(50))

    u = bu.image
    x_mix = (1 - lam) * u[i0] + lam * u[i1]  # the mixed unlabelled images
    with torch.no_grad():  # the EMA teacher, train mode (batch statistics), no input noise
        if pairing == "halves":  # one teacher pass per half, as SSL4MIS
            q0, q1 = teacher(u[i0]).softmax(1), teacher(u[i1]).softmax(1)
        else:
            q = teacher(u).softmax(1)
            q0, q1 = q[i0], q[i1]
    target = (1 - lam) * q0 + lam * q1  # the same mix of the teacher's predictions
    p_mix = student(x_mix).softmax(1)  # separate student pass (joint_bn=False)
    expected = ((p_mix - target) ** 2).mean()  # SSL4MIS: torch.mean((outputs_soft[lb:] - batch_pred_mixed) ** 2)
    assert torch.allclose(out["unsup/consistency"], expected, atol=1e-6)
    assert out["weight/unsup"] == pytest.approx(0.3)
    sup = student(bl.image)
    assert torch.allclose(out["sup/ce"], torch.nn.functional.cross_entropy(sup, bl.label), atol=1e-6)
    assert torch.allclose(out["loss"], out["sup/total"] + 0.3 * expected, atol=1e-6)
    assert torch.allclose(mix(u[i0], u[i1], lam), x_mix)


def test_ict_joint_forward_and_teacher_update():
    method = make_method("ict", joint_bn=True)
    method.train()
    bl, bu = batches()
    out = method.training_step(bl, bu, step_at(10))
    out["loss"].backward()
    grads = [p.grad for p in method.student.parameters()]
    assert all(g is not None for g in grads) and all(p.grad is None for p in method.teacher.parameters())
    before = [p.clone() for p in method.teacher.module.parameters()]
    with torch.no_grad():
        for p in method.student.parameters():
            p.add_(1.0)
    method.after_optimizer_step(step_at(10))  # beta_10 = min(1 - 1/11, 0.99)
    beta = 1 - 1 / 11
    for t, b, s in zip(method.teacher.module.parameters(), before, method.student.parameters(), strict=True):
        assert torch.allclose(t, beta * b + (1 - beta) * s)


def test_ict_rejects_bad_options():
    for options, pattern in [
        ({"alpha": 0.0}, "alpha must be > 0"),
        ({"pairing": "random"}, "pairing must be one of"),
        ({"mix_per": "pixel"}, "mix_per must be one of"),
        ({"consistency_on": "all"}, "mixes unlabelled images only"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            make_method("ict", **options)


def test_ssl4mis_weight_ramp_is_the_reference_staircase():
    """w = 0.1 * sigmoid_rampup(iter // 150, 200) over 30000 iterations (both scripts)."""
    for name in ("ict", "entropy-min"):
        method = make_method(name, **vars(resolve_config(name, "cardiac-phantom", preset="ssl4mis").params))
        for it in (0, 149, 150, 1000, 7777, 15000, 29999):
            w = method.unsup_weight(step_at(it, 30000))
            assert w == pytest.approx(0.1 * sigmoid_rampup(it // 150, 200), rel=1e-9, abs=1e-12), (name, it)


def test_ict_ssl4mis_preset_is_the_reference():
    cfg = resolve_config("ict", "cardiac-phantom", preset="ssl4mis")
    p = cfg.params
    assert (p.alpha, p.mix_per, p.pairing) == (0.2, "pair", "halves")  # --ict_alpha 0.2, per pair, u[:6] vs u[6:]
    assert (p.ema_decay, p.ema_warmup, p.noise_std, p.eval_model) == (0.99, True, 0.0, "student")
    assert (p.weight, p.rampup, p.ramp_levels, p.mute, p.ramp) == (0.1, 1.0, 200, 0.0, "sigmoid")
    assert p.joint_bn and p.loss == "ce+dice-ssl4mis" and p.consistency_on == "unlabeled"
    assert (cfg.trainer.batch_size, cfg.trainer.unlabeled_batch_size) == (12, 12)  # batch 24, labeled_bs 12
    assert cfg.trainer.epochs * cfg.trainer.iters_per_epoch == 30000
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.schedule) == ("sgd", 0.01, "poly")
    assert (cfg.dataset.augment, cfg.dataset.image_resize) == ("ssl4mis", "nearest")


# -- entropy minimisation --------------------------------------------------------------------------------------------


def test_mean_entropy_matches_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    prob = torch.randn(2, 4, 3, 5, generator=g).mul(3).softmax(1)
    total, n = 0.0, 0
    for b in range(2):
        for i in range(3):
            for j in range(5):
                total += -sum(float(prob[b, c, i, j]) * math.log(float(prob[b, c, i, j]) + 1e-6) for c in range(4))
                n += 1
    assert float(mean_entropy(prob)) == pytest.approx(total / n / math.log(4), rel=1e-5)  # / np.log(C), C = 4
    assert float(mean_entropy(prob, normalize=False)) == pytest.approx(total / n, rel=1e-5)
    assert float(mean_entropy(torch.full((1, 4, 2, 2), 0.25))) == pytest.approx(1.0, abs=1e-5)  # maximum: 1
    assert float(mean_entropy(torch.eye(4)[:, :, None, None])) == pytest.approx(0.0, abs=1e-5)  # one-hot: 0


@pytest.mark.parametrize("entropy_on", ["all", "unlabeled"])
def test_entropy_min_step_covers_the_reference_pixels(entropy_on):
    method = make_method("entropy-min", entropy_on=entropy_on, weight=0.5, rampup=0.0)
    method.train()
    bl, bu = batches()
    student = copy.deepcopy(method.student)
    out = method.training_step(bl, bu, step_at(3))
    with torch.no_grad():  # one student forward of labelled + unlabelled images (joint_bn, SSL4MIS's)
        p_all = student(torch.cat([bl.image, bu.image])).softmax(1)
    p = p_all if entropy_on == "all" else p_all[bl.image.shape[0] :]  # SSL4MIS: all 24 images, labelled included
    h = -(p * torch.log(p + 1e-6)).sum(1) / np.log(4)
    assert torch.allclose(out["unsup/entropy"], h.mean(), atol=1e-6)
    assert torch.allclose(out["loss"], out["sup/total"] + 0.5 * h.mean(), atol=1e-6)


def test_entropy_min_rejects_bad_options():
    with pytest.raises(ValueError, match="entropy_on must be one of"):
        make_method("entropy-min", entropy_on="labeled")
    with pytest.raises(ValueError, match="eps must be in"):
        make_method("entropy-min", eps=-1.0)


def test_entropy_min_ssl4mis_preset_is_the_reference():
    cfg = resolve_config("entropy-min", "cardiac-phantom", preset="ssl4mis")
    p = cfg.params
    assert (p.weight, p.rampup, p.ramp_levels, p.ramp) == (0.1, 1.0, 200, "sigmoid")  # 0.1, sigmoid_rampup(., 200)
    assert (p.entropy_on, p.normalize, p.eps) == ("all", True, 1e-6)  # entropy_loss(outputs_soft, C=4)
    assert p.joint_bn and p.loss == "ce+dice-ssl4mis"  # one forward of the 24 images; 0.5 (CE + Dice)
    assert (cfg.trainer.batch_size, cfg.trainer.unlabeled_batch_size) == (12, 12)
