"""Entropy minimisation: the supervised loss plus a ramped penalty on the mean per-pixel entropy of the predictions.

Papers: Y. Grandvalet and Y. Bengio, "Semi-supervised Learning by Entropy Minimization", NeurIPS 2004 (the
criterion); T.-H. Vu, H. Jain, M. Bucher, M. Cord and P. Perez, "ADVENT: Adversarial Entropy Minimization for Domain
Adaptation in Semantic Segmentation", CVPR 2019 (its direct entropy loss: pixel entropies normalised by log C;
ADVENT sums them over the pixels, the reference and this file average them).
Segmentation reference: HiLab-git/SSL4MIS ``code/train_entropy_minimization_2D.py`` with
``code/utils/losses.py`` ``entropy_loss(p, C=4)`` (its ACDC numbers).

Method (the reference's step):

* (1) one student forward over the labelled and unlabelled images (``joint_bn``, the default), ``p`` the softmax
  ``[B, K, *S]``;
* (2) ``L_sup`` = 0.5 (CE + Dice) on the labelled images (``params.loss``);
* (3) ``L_ent = mean over images and pixels of -sum_k p_k ln(p_k + 1e-6) / ln K`` (the reference: ``C=4``, ACDC's
  K; here K = the task's class count, so the term lies in [0, 1] for any K), over *all* images of the batch,
  labelled ones included (``entropy_on="all"``, the reference);
* (4) ``L = L_sup + w(t) L_ent`` with ``w(t) = 0.1 sigmoid_rampup(iter // 150, 200)`` (the ``ssl4mis`` preset:
  ``rampup=1``, ``ramp_levels=200``).

Deviations:

* ``entropy_on="unlabeled"`` restricts (3) to the unlabelled images (Grandvalet & Bengio's criterion); the default
  is the reference's whole batch.
* the normaliser ln K uses the task's K (the reference hard-codes C = 4, which is K on ACDC only);
  ``normalize=false`` gives the entropy in nats.
* the ``cpu`` preset uses separate forward passes (``joint_bn=false``, the setting of its committed records); the
  ramp length is a fraction of the stage (``rampup``; the reference ramps over the whole run: ``rampup=1``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ssl_bench.core.method import Batch, MethodContext, StepInfo
from ssl_bench.core.registry import METHODS
from ssl_bench.training.consistency import ConsistencyConfig, ConsistencyMethod

ENTROPY_ON = ("all", "unlabeled")
#: SSL4MIS train_entropy_minimization_2D.py: 0.1 x sigmoid_rampup(iter // 150, 200) x entropy_loss(p, C=4) over the
#: whole batch of 12 + 12 in one forward
SSL4MIS = {
    "params.mute": 0.0,
    "params.entropy_on": "all",
    "params.normalize": True,
    "params.eps": 1e-6,
}


@dataclass
class EntropyMinConfig(ConsistencyConfig):
    """Options of entropy minimisation (defaults: SSL4MIS's values; ramp length as a fraction of the stage)."""

    #: maximum weight of the entropy term (SSL4MIS --consistency 0.1)
    weight: float = 0.1
    #: images whose pixels enter the entropy: "all" (labelled + unlabelled, SSL4MIS) or "unlabeled"
    entropy_on: str = "all"
    #: divide the entropy by ln K (SSL4MIS, ADVENT): a term in [0, 1]
    normalize: bool = True
    #: p ln(p + eps) (SSL4MIS: 1e-6)
    eps: float = 1e-6


def mean_entropy(prob: torch.Tensor, eps: float = 1e-6, normalize: bool = True) -> torch.Tensor:
    """(3) ``mean over samples and pixels of -sum_k p_k ln(p_k + eps)``, divided by ``ln K`` if ``normalize``;
    ``prob [B, K, *S]`` probabilities."""
    ent = -(prob * torch.log(prob + eps)).sum(1).mean()
    return ent / math.log(prob.shape[1]) if normalize else ent


@METHODS.register("entropy-min")
class EntropyMin(ConsistencyMethod):
    """Entropy minimisation (Grandvalet & Bengio, NeurIPS 2004; ADVENT's pixel-wise form): supervised loss + ramped
    weight x mean normalised pixel entropy."""

    Config = EntropyMinConfig
    presets = {
        "smoke": {},
        "cpu": {},
        "paper": {"params.rampup": 1.0},
        "ssl4mis": SSL4MIS,
    }

    def __init__(self, cfg: Any, ctx: MethodContext, **kwargs: Any) -> None:
        super().__init__(cfg, ctx, **kwargs)
        c = self.cfg
        if c.entropy_on not in ENTROPY_ON:
            raise ValueError(f"params.entropy_on must be one of {ENTROPY_ON}, got {c.entropy_on!r}")
        if not 0 <= c.eps < 1:
            raise ValueError(f"params.eps must be in [0, 1), got {c.eps}")

    def training_step(self, batch_l: Batch, batch_u: Batch | None, step: StepInfo) -> dict[str, torch.Tensor]:
        if batch_u is None:
            return self.supervised_only(batch_l)
        logits_l, logits_u = self.student_forward(batch_l, batch_u)  # (1)
        assert logits_u is not None
        sup = self.supervised(logits_l, batch_l.label)  # (2)
        logits = torch.cat([logits_l, logits_u]) if self.cfg.entropy_on == "all" else logits_u
        unsup = {"unsup/entropy": mean_entropy(logits.float().softmax(1), self.cfg.eps, self.cfg.normalize)}  # (3)
        return self.combine(sup, unsup, self.unsup_weight(step))  # (4)
