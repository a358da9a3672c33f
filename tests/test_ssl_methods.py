"""Maths of the SSL baselines (Π-model, TE, MT, UA-MT, PL, VAT) and the shared consistency pieces.

The contract check of every method (2D and 3D) runs in tests/test_methods.py; these tests pin the formulas.
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from ssl_bench.core.data import TaskSpec
from ssl_bench.core.method import Batch, EpochData, MethodContext, Stage, StepInfo
from ssl_bench.core.registry import BACKBONES, METHODS
from ssl_bench.methods.temporal_ensembling import dequantize, ensemble_update, quantize, target_bytes
from ssl_bench.methods.vat import perturbation_scale, virtual_adversarial_perturbation
from ssl_bench.training.augment import apply_augment
from ssl_bench.training.consistency import (
    kl_from_logits,
    mean_probs,
    ramped_weight,
    softmax_mse,
    stochastic_mode,
)
from ssl_bench.training.ema import EMATeacher

SSL_METHODS = ("pi-model", "temporal-ensembling", "mean-teacher", "ua-mt", "pseudo-label", "vat")


def make_ctx(dims: int = 2, num_classes: int = 3) -> MethodContext:
    spec = TaskSpec(dims=dims, num_classes=num_classes, label_names=tuple(f"c{i}" for i in range(num_classes)))
    bb = BACKBONES.get("unet2d" if dims == 2 else "unet3d")
    factory = functools.partial(bb, 1, num_classes, width=4, depth=2, norm="batch")
    return MethodContext(spec=spec, backbone_factory=factory, epochs=2)


def build(name: str, dims: int = 2, **options) -> torch.nn.Module:
    cls = METHODS.get(name)
    torch.manual_seed(0)
    return cls(replace(cls.Config(), **options), make_ctx(dims))


def step_at(stage_step: int, stage_steps: int = 100, step: int | None = None) -> StepInfo:
    return StepInfo(
        step=stage_step if step is None else step,
        epoch=0,
        stage="train",
        stage_step=stage_step,
        stage_steps=stage_steps,
        total_steps=stage_steps,
        steps_per_epoch=10,
    )


def batches(n: int = 2, size: int = 16, k: int = 3) -> tuple[Batch, Batch]:
    g = torch.Generator().manual_seed(3)
    x_l, x_u = torch.rand((n, 1, size, size), generator=g), torch.rand((n, 1, size, size), generator=g)
    y = torch.randint(0, k, (n, size, size), generator=g)
    return Batch(x_l, y, torch.arange(n)), Batch(x_u, None, torch.arange(n))


# -- shared pieces -------------------------------------------------------------------------------------------------


def test_softmax_mse_value_gradient_and_mask():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.rand(2, 3, 4, 4).softmax(1)
    value = softmax_mse(logits, target)
    expected = ((logits.softmax(1) - target) ** 2).mean()
    assert torch.allclose(value, expected)
    (grad,) = torch.autograd.grad(value, logits)
    assert grad.abs().sum() > 0
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[0, :2] = True
    per_pixel = ((logits.softmax(1) - target) ** 2).mean(1)
    assert torch.allclose(softmax_mse(logits, target, mask), per_pixel[mask].mean())
    assert float(softmax_mse(logits, target, torch.zeros_like(mask)).detach()) == 0.0


def test_kl_from_logits_is_zero_at_equality_and_positive_otherwise():
    a = torch.randn(2, 4, 5, 5)
    assert float(kl_from_logits(a, a)) == pytest.approx(0.0, abs=1e-6)
    assert float(kl_from_logits(a, a + torch.randn_like(a))) > 0


def test_ramped_weight_endpoints_and_delay():
    assert ramped_weight(0.1, step_at(0), 0.4) == pytest.approx(0.1 * math.exp(-5))
    assert ramped_weight(0.1, step_at(40), 0.4) == pytest.approx(0.1)
    assert ramped_weight(0.1, step_at(99), 0.4) == pytest.approx(0.1)
    assert ramped_weight(2.0, step_at(20), 0.4, "linear") == pytest.approx(1.0)
    assert ramped_weight(2.0, step_at(9), 0.4, "linear", delay=0.1) == 0.0
    assert ramped_weight(2.0, step_at(30), 0.4, "linear", delay=0.1) == pytest.approx(1.0)
    assert ramped_weight(2.0, step_at(0), 0.4, "none") == 2.0


def test_stochastic_mode_keeps_bn_statistics_and_restores_modes():
    net = BACKBONES.get("unet2d")(1, 3, width=4, depth=2, dropout=0.5)
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.rand(2, 1, 16, 16)
    a = mean_probs(net, x, 3, noise_std=0.1, dropout=True, bn="batch")
    b = mean_probs(net, x, 2, dropout=False, bn="running")
    assert a.shape == b.shape == (2, 3, 16, 16)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(m.training for m in net.modules())
    assert all(m.track_running_stats for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    net.eval()
    with stochastic_mode(net, dropout=True, bn="keep"):
        assert net.bottleneck_dropout.training and not net.down[0][1].training
    assert not any(m.training for m in net.modules())


def test_mean_probs_logit_average():
    class Const(nn.Module):
        def forward(self, x):
            return torch.stack([x[:, 0], -x[:, 0]], 1)

    x = torch.rand(2, 1, 4, 4)
    expected = torch.stack([x[:, 0], -x[:, 0]], 1).softmax(1)
    for average in ("probs", "logits"):
        assert torch.allclose(mean_probs(Const(), x, 5, average=average), expected, atol=1e-6)


@pytest.mark.parametrize("joint", [False, True])
def test_forward_split_separate_or_joint(joint):
    method = build("ua-mt", joint_bn=joint)
    calls = []

    def fn(x):
        calls.append(len(x))
        return {"main": 2 * x, "aux": x}

    a, b = method.forward_split(fn, torch.ones(2, 1, 4, 4), torch.zeros(3, 1, 4, 4))
    assert calls == ([5] if joint else [2, 3])
    assert (
        a["main"].shape[0] == 2
        and b["aux"].shape[0] == 3
        and float(a["main"].sum()) == 64
        and float(b["main"].sum()) == 0
    )
    assert method.forward_split(lambda x: x, torch.ones(2, 1), None)[1] is None


# -- EMA teacher (Mean Teacher, UA-MT) -----------------------------------------------------------------------------


def test_ema_update_formula_with_warmup():
    student = nn.Linear(3, 2)
    teacher = EMATeacher(student, decay=0.99, warmup=True)
    assert [teacher.decay_at(s) for s in (0, 1, 2)] == pytest.approx([0.0, 0.5, 2 / 3])
    assert teacher.decay_at(10_000) == 0.99
    assert EMATeacher(student, 0.99, warmup=False).decay_at(0) == 0.99
    old = [p.detach().clone() for p in teacher.module.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    teacher.update(student, step=4)  # beta = min(1 - 1/(4 + 1), 0.99) = 0.8
    for t, o, s in zip(teacher.module.parameters(), old, student.parameters()):
        assert torch.allclose(t, 0.8 * o + 0.2 * s)
        assert not t.requires_grad


def test_mean_teacher_updates_teacher_after_step_and_predicts_with_chosen_model():
    method = build("mean-teacher", eval_model="teacher")
    with torch.no_grad():
        for p in method.student.parameters():
            p.add_(0.5)
    old = [p.clone() for p in method.teacher.module.parameters()]
    method.after_optimizer_step(step_at(1))  # beta = min(1 - 1/2, 0.99) = 0.5: the mean of teacher and student
    for t, o, s in zip(method.teacher.module.parameters(), old, method.student.parameters()):
        assert torch.allclose(t, 0.5 * o + 0.5 * s)
    assert method.inference_module() is method.teacher.module
    student_method = build("mean-teacher")
    assert student_method.inference_module() is student_method.student


# -- UA-MT ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("entropy_max", "h_max"), [("ln-k", math.log(4)), ("ln-2", math.log(2))])
def test_ua_mt_threshold_schedule(entropy_max, h_max):
    from ssl_bench.core.uncertainty import build_estimator

    est = build_estimator("entropy", {"entropy_max": entropy_max}, num_classes=4)
    # sigmoid_rampup(0) = exp(-5), so the start is (0.75 + 0.25 e^-5) H_max ~ 0.7517 H_max, as in the reference
    assert est.threshold(step_at(0)) == pytest.approx((0.75 + 0.25 * math.exp(-5)) * h_max)
    assert est.threshold(step_at(0)) == pytest.approx(0.75 * h_max, rel=3e-3)
    assert est.threshold(step_at(99, 100)) == pytest.approx(h_max, rel=1e-3)
    assert est.threshold(step_at(100, 100)) == pytest.approx(h_max)
    assert est.threshold(None) == pytest.approx(h_max)
    mid = est.threshold(step_at(50))
    assert 0.75 * h_max < mid < h_max


def test_ua_mt_takes_estimator_and_options():
    method = build("ua-mt", estimator="entropy", estimator_options={"entropy_max": "ln-2", "T": 2})
    assert method.estimator.entropy_max == pytest.approx(math.log(2))
    mc = build("ua-mt", estimator="mc-dropout", dropout=None)
    assert mc.student.bottleneck_dropout.p == 0.5  # required_dropout() honoured
    bl, bu = batches()
    out = build("ua-mt", estimator="none").training_step(bl, bu, step_at(99))
    assert float(out["mask/certain_frac"]) == 1.0
    al = build("ua-mt", estimator="aleatoric")
    out = al.training_step(bl, bu, step_at(99))
    assert "sup/aleatoric" in out and torch.isfinite(out["sup/aleatoric"])
    assert al.parameter_counts()["inference"] < al.parameter_counts()["train"]  # the logvar head is dropped


# -- Temporal Ensembling -------------------------------------------------------------------------------------------


def test_te_bias_correction_after_one_and_two_epochs():
    z1, z2 = torch.tensor([0.2, 0.8]), torch.tensor([0.6, 0.4])
    t1 = ensemble_update(torch.zeros(2), z1, 0.6, 1)
    assert torch.allclose(t1, z1)  # Z_1 = 0.4 z1, / (1 - 0.6)
    t2 = ensemble_update(t1, z2, 0.6, 2)
    # Z_2 = 0.6 * 0.4 z1 + 0.4 z2 = 0.24 z1 + 0.4 z2; / (1 - 0.36)
    assert torch.allclose(t2, (0.24 * z1 + 0.4 * z2) / 0.64)
    assert torch.allclose(t2, 0.375 * z1 + 0.625 * z2)
    assert torch.allclose(ensemble_update(ensemble_update(z1, z1, 0.6, 1), z1, 0.6, 2), z1)  # constant -> unbiased


def test_te_storage_quantisation_and_memory():
    p = torch.rand(3, 4, 8, 8).softmax(1)
    assert (dequantize(quantize(p, "uint8")) - p).abs().max() <= 0.5 / 255 + 1e-7
    assert quantize(p, "fp16").dtype == torch.float16
    # ACDC, paper preset: 1056 unlabelled 256x256 slices (20 % budget), 4 classes
    assert target_bytes(1056, 4, (256, 256), "uint8") == 276_824_064
    assert target_bytes(1056, 4, (256, 256), "fp16") == 2 * 276_824_064


def test_te_epoch_update_alignment_and_state(monkeypatch):
    method = build("temporal-ensembling", storage="fp32", target_batch_size=2)
    n = 3
    x_u = torch.rand(n, 1, 16, 16)
    zs = [torch.rand(n, 3, 16, 16).softmax(1) for _ in range(2)]

    def data() -> EpochData:
        def it(bs):
            for s in range(0, n, bs):
                yield Batch(x_u[s : s + bs], None, torch.arange(s, min(n, s + bs)))

        return EpochData(it, n, torch.device("cpu"))

    calls = iter(zs)
    current = {}

    def fake_predictions(x):
        if not current:
            current["z"] = next(calls)
            current["pos"] = 0
        out = current["z"][current["pos"] : current["pos"] + len(x)]
        current["pos"] += len(x)
        if current["pos"] == n:
            current.clear()
        return out

    monkeypatch.setattr(method, "predictions", fake_predictions)
    bl, _ = batches(n)
    bu = Batch(x_u, None, torch.arange(n), torch.tensor([[1, 0], [2, 1], [3, 1]]))
    out = method.training_step(bl, bu, step_at(99))
    assert float(out["weight/unsup"]) == 0.0  # no ensemble yet
    stage = Stage("train", 2)
    method.on_epoch_end(0, stage, data())
    assert torch.allclose(method.targets, zs[0])
    method.on_epoch_end(1, stage, data())
    assert method.updates == 2
    assert torch.allclose(method.targets, 0.375 * zs[0] + 0.625 * zs[1], atol=1e-6)
    aligned = method.batch_targets(bu, torch.zeros(1))
    assert torch.allclose(aligned, apply_augment(method.targets, bu.aug))
    assert float(method.training_step(bl, bu, step_at(99))["weight/unsup"]) == 1.0
    twin = build("temporal-ensembling", storage="fp32")
    twin.load_extra_state(method.extra_state())
    assert twin.updates == 2 and torch.equal(twin.targets, method.targets)


def test_te_refuses_random_3d_crops():
    method = build("temporal-ensembling", dims=3)
    method.targets, method.updates = torch.zeros(2, 3, 16, 16, 16), 1
    bl = Batch(torch.rand(2, 1, 16, 16, 16), torch.zeros(2, 16, 16, 16, dtype=torch.long), torch.arange(2))
    bu = Batch(torch.rand(2, 1, 16, 16, 16), None, torch.arange(2), crop=torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="unlabeled_views=center"):
        method.training_step(bl, bu, step_at(5))


# -- Π-model -------------------------------------------------------------------------------------------------------


def test_pi_model_second_pass_is_inverted_exactly():
    method = build("pi-model", noise_std=0.0)

    class Equivariant(nn.Module):  # pixel-wise: commutes with rot90/flip
        def forward(self, x):
            return torch.cat([x, 2 * x, -x], 1)

    method.student = Equivariant()
    x = torch.rand(4, 1, 8, 8)
    torch.manual_seed(1)
    assert torch.equal(method.second_pass(x), method.student(x))


def test_pi_model_gradient_flows_through_both_passes():
    bl, bu = batches()

    def grads(detach: bool) -> torch.Tensor:
        method = build("pi-model", detach_target=detach)
        torch.manual_seed(5)  # same noise, dropout masks and rotations for both
        term = method.training_step(bl, bu, step_at(99))["unsup/pi"]
        assert float(term.detach()) > 0
        return torch.cat([g.flatten() for g in torch.autograd.grad(term, list(method.student.parameters()))])

    both, one = grads(False), grads(True)
    assert one.abs().sum() > 0 and not torch.allclose(both, one)


# -- Pseudo-Label --------------------------------------------------------------------------------------------------


def test_pseudo_label_threshold_masks_pixels():
    bl, bu = batches()
    out = build("pseudo-label").training_step(bl, bu, step_at(99))
    assert float(out["mask/certain_frac"]) == 1.0
    strict = build("pseudo-label", threshold=1.0).training_step(bl, bu, step_at(99))
    assert float(strict["mask/certain_frac"]) == 0.0 and float(strict["unsup/pseudo_label"].detach()) == 0.0


# -- VAT -----------------------------------------------------------------------------------------------------------


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 3, 3, padding=1))

    def forward(self, x):
        return self.net(x)


def test_vat_perturbation_norm_per_sample():
    torch.manual_seed(0)
    net, x = TinyNet(), torch.rand(3, 1, 8, 8)
    r = virtual_adversarial_perturbation(net, x, net(x).detach(), xi=1e-3, eps=0.7)
    assert torch.allclose(r.flatten(1).norm(dim=1), torch.full((3,), 0.7), atol=1e-5)
    assert perturbation_scale(x, 0.05, "rms") == pytest.approx(0.05 * 8)  # sqrt(1 * 8 * 8)
    assert perturbation_scale(x, 0.05, "l2") == 0.05
    assert all(p.grad is None for p in net.parameters())


def test_vat_perturbation_points_uphill_in_kl():
    torch.manual_seed(0)
    net, x = TinyNet(), torch.rand(2, 1, 8, 8)
    logits = net(x).detach()
    eps = 0.5
    r_adv = virtual_adversarial_perturbation(net, x, logits, xi=1e-3, eps=eps, iterations=2)

    def kl(r):
        with torch.no_grad():
            return float(kl_from_logits(logits, net(x + r)))

    random_kls = []
    for _ in range(20):
        d = torch.randn_like(x)
        random_kls.append(kl(eps * d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)))
    assert kl(r_adv) > max(random_kls)


# -- all six -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SSL_METHODS)
def test_supervised_only_step_without_unlabelled_batch(name):
    method = build(name)
    bl, _ = batches()
    out = method.training_step(bl, None, step_at(5))
    assert torch.isfinite(out["loss"]) and not any(k.startswith("unsup/") for k in out)


@pytest.mark.parametrize("name", SSL_METHODS)
def test_presets_resolve(name):
    from ssl_bench.training.runner import resolve_config

    for preset in ("smoke", "cpu", "paper"):
        cfg = resolve_config(name, "cardiac-phantom", preset=preset)
        assert cfg.params is not None
        if name in ("pi-model", "temporal-ensembling", "mean-teacher", "ua-mt"):  # the references' dropout
            assert cfg.params.dropout == (0.5 if preset == "paper" else None)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("mean-teacher", {"consistency_on": "some"}),
        ("mean-teacher", {"eval_model": "ema"}),
        ("temporal-ensembling", {"storage": "int4"}),
        ("temporal-ensembling", {"alpha": 1.0}),
        ("vat", {"norm": "linf"}),
        ("pseudo-label", {"threshold": 1.5}),
        ("pi-model", {"loss": "dice"}),
        ("ua-mt", {"target": "ensemble"}),
    ],
)
def test_bad_options_are_rejected(name, options):
    with pytest.raises(ValueError):
        build(name, **options)


@pytest.mark.parametrize("name", ["mean-teacher", "ua-mt", "pseudo-label", "vat"])
def test_zero_unsupervised_weight_trains_exactly_the_supervised_unet(name, tmp_path):
    """With params.weight = 0 and separate forwards (joint_bn=false) these baselines must learn the U-Net's
    parameters bit for bit (same seed): the unlabelled passes may only touch BatchNorm running statistics. Catches
    unlabelled data leaking into the supervised path and randomness drawn out of order. (The references' joint
    forward mixes the unlabelled images into the labelled ones' BatchNorm statistics by design; Pi-model and Temporal
    Ensembling differ by design too: Laine & Aila put the labelled images through the noisy pass.)"""
    from ssl_bench.cli.main import main

    def params(method: str, *extra: str) -> dict[str, torch.Tensor]:
        out = tmp_path / method
        args = ["run", "--method", method, "--dataset", "cardiac-phantom", "--preset", "smoke", "--out", str(out)]
        assert main([*args, "--no-progress", *extra]) == 0
        (ckpt,) = out.rglob("last.pt")
        state = torch.load(ckpt, weights_only=False)["model"]
        return {k.removeprefix("student."): v for k, v in state.items() if k.startswith("student.")}

    unet = params("unet")
    ssl = params(name, "--set", "params.weight=0", "--set", "params.joint_bn=false")
    learned = [k for k, v in unet.items() if v.is_floating_point() and "running_" not in k]
    assert learned and all(torch.equal(unet[k], ssl[k]) for k in learned), name
