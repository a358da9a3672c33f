"""Interpolation Consistency Training (ICT): the prediction at a mixup of unlabelled images should be the same mixup
of an EMA teacher's predictions at those images.

Paper: V. Verma, A. Lamb, J. Kannala, Y. Bengio and D. Lopez-Paz, "Interpolation Consistency Training for
Semi-Supervised Learning", IJCAI 2019 (arXiv:1903.03825; extended in Neural Networks 145, 2022).
Segmentation reference: HiLab-git/SSL4MIS ``code/train_interpolation_consistency_training_2D.py`` (its ACDC
numbers), with the Mean Teacher parts of :mod:`~ssl_bench.methods.mean_teacher` (this class extends it).

Method (the reference's step; ``B_u`` unlabelled images, ``M = B_u / 2`` pairs with ``pairing="halves"``):

* (1) pairs ``u0 = u[:M]``, ``u1 = u[M:2M]`` and ``lambda_i ~ Beta(alpha, alpha)``, one per pair
  (``np.random.beta(0.2, 0.2, size=(labeled_bs // 2, 1, 1, 1))``);
* (2) mixed images ``u_mix = (1 - lambda) u0 + lambda u1``;
* (3) mixed targets ``q_mix = (1 - lambda) softmax(f_t(u0)) + lambda softmax(f_t(u1))`` from the EMA teacher,
  without gradient, one teacher pass per half (the reference's two calls: BatchNorm statistics per half), with the
  teacher's dropout on and batch statistics (the reference never calls ``ema_model.eval()``);
* (4) ``L_cons = mean over (pairs, classes, pixels) of (softmax(f_s(u_mix)) - q_mix)^2`` (softmax MSE);
* (5) ``L = L_sup + w(t) L_cons`` with ``L_sup`` = 0.5 (CE + Dice) on the labelled batch (``params.loss``) and
  ``w(t) = 0.1 sigmoid_rampup(iter // 150, 200)`` (the ``ssl4mis`` preset: ``rampup=1``, ``ramp_levels=200``);
* teacher ``theta' = beta theta' + (1 - beta) theta`` after every step, ``beta = min(1 - 1/(t + 1), 0.99)``
  (:class:`~ssl_bench.training.ema.EMATeacher`); the student is tested.

In the paper's notation ``Mix_lambda(a, b) = lambda a + (1 - lambda) b`` and
``L_US = l(f_theta(Mix_lambda(u_j, u_k)), Mix_lambda(f_theta'(u_j), f_theta'(u_k)))`` (Algorithm 1); the
reference's ``(1 - lambda) u0 + lambda u1`` is the same in distribution (Beta(alpha, alpha) is symmetric).

Deviations:

* ``pairing="shuffle"`` / ``mix_per="batch"`` give the paper's Algorithm 1 instead (each unlabelled image mixed
  with a random permutation of the batch, so B_u mixed images; one lambda per minibatch); the defaults are the
  reference's halves and per-pair lambdas.
* the reference splits the unlabelled batch at ``labeled_bs // 2`` (= B_u / 2 for its 12 + 12 batches); here at
  ``B_u // 2``, an odd last image left unused; ``B_u = 1`` cannot be paired and raises.
* labelled and mixed images go through the student in one forward (``joint_bn``, the default), as the reference
  concatenates them; the ``cpu`` preset uses separate passes (``joint_bn=false``, the setting of its committed
  records); see :mod:`~ssl_bench.methods.mean_teacher` for the EMA teacher's BatchNorm buffers and the ramp length
  as a fraction of the stage.
* no Gaussian noise on the teacher's input (``noise_std=0``; Mean Teacher's option is kept); the reference has none.
* ``consistency_on="all"`` (Mean Teacher's labelled-pixel consistency) is rejected: ICT mixes unlabelled images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ssl_bench.core.method import Batch, MethodContext, StepInfo
from ssl_bench.core.registry import METHODS
from ssl_bench.methods.mean_teacher import MeanTeacher, MeanTeacherConfig
from ssl_bench.training.consistency import softmax_mse

PAIRINGS = ("halves", "shuffle")
MIX_PER = ("pair", "batch")
#: SSL4MIS train_interpolation_consistency_training_2D.py: ict_alpha 0.2, one lambda per pair of halves, EMA 0.99 with
#: warm-up, no teacher noise, 0.1 x sigmoid_rampup(iter // 150, 200) from iteration 0, the student tested
SSL4MIS = {
    "params.alpha": 0.2,
    "params.mix_per": "pair",
    "params.pairing": "halves",
    "params.ema_decay": 0.99,
    "params.ema_warmup": True,
    "params.noise_std": 0.0,
    "params.mute": 0.0,
    "params.eval_model": "student",
}


@dataclass
class ICTConfig(MeanTeacherConfig):
    """Options of ICT (Mean Teacher's plus the mixup; defaults: SSL4MIS's values)."""

    #: lambda ~ Beta(alpha, alpha) (SSL4MIS --ict_alpha 0.2)
    alpha: float = 0.2
    #: "pair": one lambda per mixed pair (SSL4MIS); "batch": one lambda per minibatch (the paper's Algorithm 1)
    mix_per: str = "pair"
    #: "halves": u[:B/2] mixed with u[B/2:] (SSL4MIS, B/2 mixed images); "shuffle": u with u[randperm(B)] (paper)
    pairing: str = "halves"
    #: Gaussian noise on the teacher's input (ICT and SSL4MIS: none)
    noise_std: float = 0.0


def mix_pairs(
    x: torch.Tensor, alpha: float, pairing: str = "halves", mix_per: str = "pair"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices ``i0, i1 [M]`` of the mixed pairs of a batch ``x [B, ...]`` and their ``lam [M, 1, ..., 1]``
    (``Beta(alpha, alpha)``, float32 on ``x``'s device); mixing is ``(1 - lam) x[i0] + lam x[i1]``.

    Draws from the global torch RNG (on the CPU, so a seeded run draws the same on any device).
    """
    if pairing not in PAIRINGS:
        raise ValueError(f"params.pairing must be one of {PAIRINGS}, got {pairing!r}")
    if mix_per not in MIX_PER:
        raise ValueError(f"params.mix_per must be one of {MIX_PER}, got {mix_per!r}")
    b = x.shape[0]
    if pairing == "halves":
        if b < 2:
            raise ValueError(f"ICT pairing='halves' needs an unlabelled batch of at least 2 images, got {b}")
        m = b // 2
        i0, i1 = torch.arange(m), torch.arange(m, 2 * m)
    else:
        m = b
        i0, i1 = torch.arange(b), torch.randperm(b)
    beta = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha)))
    lam = beta.sample((m if mix_per == "pair" else 1,)).expand(m)
    return i0, i1, lam.reshape(m, *([1] * (x.ndim - 1))).to(x.device, torch.float32)


def mix(a: torch.Tensor, b: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """``(1 - lam) a + lam b`` (the reference's order)."""
    return (1.0 - lam) * a + lam * b


@METHODS.register("ict")
class ICT(MeanTeacher):
    """ICT (IJCAI 2019): softmax MSE between the student at mixed unlabelled images and the mixed EMA-teacher
    predictions, sigmoid ramp-up."""

    Config = ICTConfig
    presets = {
        "smoke": {},
        "cpu": {},
        "paper": {"params.rampup": 1.0},
        "ssl4mis": SSL4MIS,
    }

    def __init__(self, cfg: Any, ctx: MethodContext, **kwargs: Any) -> None:
        super().__init__(cfg, ctx, **kwargs)
        c = self.cfg
        if not c.alpha > 0:
            raise ValueError(f"params.alpha must be > 0 (Beta(alpha, alpha)), got {c.alpha}")
        if c.pairing not in PAIRINGS:
            raise ValueError(f"params.pairing must be one of {PAIRINGS}, got {c.pairing!r}")
        if c.mix_per not in MIX_PER:
            raise ValueError(f"params.mix_per must be one of {MIX_PER}, got {c.mix_per!r}")
        if c.consistency_on != "unlabeled":
            raise ValueError(
                f"ICT mixes unlabelled images only: params.consistency_on must be 'unlabeled', got {c.consistency_on!r}"
            )

    def mixed_targets(self, x_u: torch.Tensor, i0: torch.Tensor, i1: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """(3) ``(1 - lam) q(u[i0]) + lam q(u[i1])`` from teacher passes: one per half (``pairing="halves"``, the
        reference) or one on the whole batch (``"shuffle"``)."""
        if self.cfg.pairing == "halves":
            q0, q1 = self.teacher_probs(x_u[i0]), self.teacher_probs(x_u[i1])
        else:
            q = self.teacher_probs(x_u)
            q0, q1 = q[i0.to(q.device)], q[i1.to(q.device)]
        return mix(q0, q1, lam)

    def training_step(self, batch_l: Batch, batch_u: Batch | None, step: StepInfo) -> dict[str, torch.Tensor]:
        if batch_u is None:
            return self.supervised_only(batch_l)
        c, x_u = self.cfg, batch_u.image
        i0, i1, lam = mix_pairs(x_u, c.alpha, c.pairing, c.mix_per)  # (1)
        dev = x_u.device
        x_mix = mix(x_u[i0.to(dev)], x_u[i1.to(dev)], lam)  # (2)
        logits_l, logits_mix = self.forward_split(self.student, batch_l.image, x_mix)
        sup = self.supervised(logits_l, batch_l.label)
        target = self.mixed_targets(x_u, i0.to(dev), i1.to(dev), lam)  # (3)
        unsup = {"unsup/consistency": softmax_mse(logits_mix, target)}  # (4)
        return self.combine(sup, unsup, self.unsup_weight(step), **{"mix/lambda_mean": lam.mean()})  # (5)
