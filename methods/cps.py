"""CPS: Cross Pseudo Supervision — two networks, each trained on the other's hard pseudo-labels.

Paper: X. Chen, Y. Yuan, G. Zeng, J. Wang, "Semi-Supervised Semantic Segmentation with Cross Pseudo Supervision",
CVPR 2021 (arXiv:2106.01226; github.com/charlesCXK/TorchSemiSeg). Medical reference, the one the ACDC tables use:
HiLab-git/SSL4MIS ``code/train_cross_pseudo_supervision_2D.py`` (ACDC, 2D U-Net) and
``code/train_cross_pseudo_supervision_3D.py`` (BraTS, 3D U-Net); the "CPS" row of UniMatch's medical README.

Method (equation numbers ours: the paper PDF was not readable here; the maths is the reference code's):

* two networks f_1, f_2 of the same architecture, initialised independently (SSL4MIS: two ``net_factory`` calls,
  PyTorch default init), trained jointly (its two SGD optimisers with one schedule = one optimiser here);
* (1) supervised: L_s = sum_i l_sup(f_i(x_l), y) with l_sup = 0.5 (CE + Dice) in the reference (``params.loss``);
* (2) pseudo-labels: Y_i = argmax_k f_i(x_u) (no gradient through the label);
* (3) cross pseudo supervision: L_cps = CE(f_1(x_u), Y_2) + CE(f_2(x_u), Y_1), mean CE over the unlabelled pixels
  (SSL4MIS; the paper applies it to labelled images too: ``cps_on="all"``);
* (4) L = L_s + w(t) L_cps with w(t) = 0.1 * sigmoid ramp (SSL4MIS: 0.1 * sigmoid_rampup(iter // 150, 200), i.e.
  over the whole 30,000 iterations in 200 steps: the ``ssl4mis`` preset's ``rampup=1, ramp_levels=200``);
* test: network 1 (SSL4MIS validates both and tests its ``model1``): ``predict_with="first"``; ``"mean"`` averages
  the two softmaxes.

Logged: ``unsup/cps`` (L_cps, both directions: one term so that its gradient reaches network 0), ``cps/net0``,
``cps/net1`` (each direction), ``cps/agreement`` (fraction of unlabelled pixels where Y_1 = Y_2).

Deviations:

* the ramp length is a fraction of the stage (``rampup``, default 0.4 for the smoke/cpu presets); the ``ssl4mis``
  preset has the reference's schedule (whole run, 200 steps);
* labelled and unlabelled images go through each network in one forward by default (``joint_bn``), as the
  reference concatenates them; the ``cpu`` preset uses separate forward passes (``joint_bn=false``, the setting
  of its committed records);
* the paper's λ (1.5 on PASCAL VOC/Cityscapes, with ImageNet-pretrained ResNets and a CE-only supervised loss) and
  its CutMix variant are not the medical reference's and are not used (``weight`` sets λ).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ssl_bench.core.method import Batch, MethodContext, StepInfo
from ssl_bench.core.registry import METHODS
from ssl_bench.training.cotraining import CoTrainingConfig, CoTrainingMethod

CPS_ON = ("unlabeled", "all")


def cross_pseudo_loss(logits_a: torch.Tensor, logits_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(CE(logits_a, argmax logits_b), CE(logits_b, argmax logits_a)), each a mean over pixels; Eq. (2)-(3).

    ``logits_*``: ``[B, K, *S]``; the pseudo-labels carry no gradient.
    """
    with torch.no_grad():
        label_a = logits_a.argmax(1)
        label_b = logits_b.argmax(1)
    return F.cross_entropy(logits_a, label_b), F.cross_entropy(logits_b, label_a)


@dataclass
class CPSConfig(CoTrainingConfig):
    """Options of CPS (defaults: SSL4MIS values; the ramp length as a fraction of the stage)."""

    #: maximum weight λ of the cross pseudo supervision (SSL4MIS: 0.1)
    weight: float = 0.1
    #: images of the cross pseudo supervision: "unlabeled" (SSL4MIS) or "all" (labelled too, the CPS paper)
    cps_on: str = "unlabeled"


@METHODS.register("cps")
class CPS(CoTrainingMethod):
    """CPS (CVPR 2021): two networks, each trained with CE on the other's arg-max pseudo-labels (SSL4MIS recipe)."""

    Config = CPSConfig
    presets = {
        "smoke": {},
        "cpu": {},
        # the reference ramps the weight over the whole run
        "paper": {"params.rampup": 1.0},
        # HiLab-git/SSL4MIS train_cross_pseudo_supervision_2D.py: 0.5 (CE + Dice) per network, consistency 0.1,
        # sigmoid_rampup(iter // 150, 200) over 30,000 iterations, one forward of 12 + 12 images per network, test
        # model1
        "ssl4mis": {
            "params.cps_on": "unlabeled",
            "params.predict_with": "first",
        },
    }

    def __init__(self, cfg: Any, ctx: MethodContext) -> None:
        super().__init__(cfg, ctx, overrides=({}, {}))
        if self.cfg.cps_on not in CPS_ON:
            raise ValueError(f"params.cps_on must be one of {CPS_ON}, got {self.cfg.cps_on!r}")

    def training_step(self, batch_l: Batch, batch_u: Batch | None, step: StepInfo) -> dict[str, torch.Tensor]:
        if batch_u is None:
            return self.supervised_only(batch_l)
        logits_l, logits_u = self.nets_forward(batch_l, batch_u)
        assert logits_u is not None
        sup = self.supervised_sum(logits_l, batch_l.label)  # Eq. (1)
        a, b = logits_u
        if self.cfg.cps_on == "all":
            a, b = torch.cat([logits_l[0], a]), torch.cat([logits_l[1], b])
        cps_a, cps_b = cross_pseudo_loss(a, b)  # Eq. (2)-(3)
        with torch.no_grad():
            agreement = (a.argmax(1) == b.argmax(1)).float().mean()
        unsup = {"unsup/cps": cps_a + cps_b}
        logs = {"cps/net0": cps_a.detach(), "cps/net1": cps_b.detach(), "cps/agreement": agreement}
        return self.combine(sup, unsup, self.unsup_weight(step), **logs)  # Eq. (4)
