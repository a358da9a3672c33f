"""Supervised baselines: ``unet`` (labelled data only) and ``fully-supervised`` (every training label).

Paper: Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image Segmentation", MICCAI 2015
(arXiv:1505.04597) — the "U-Net" rows of CoraNet Tables II, III, VII and the "Fully supervised" upper bound of
Table IX (Shi et al., "Inconsistency-aware Uncertainty Estimation for Semi-supervised Medical Image
Segmentation", IEEE TMI 2021, doi:10.1109/TMI.2021.3124413).

Loss: pixel-wise cross-entropy (the CoraNet paper's L_ce), or 0.5·(CE + Dice) as SSL4MIS trains its baselines
(``--set params.loss=ce+dice-ssl4mis``, SSL4MIS's squared-denominator Dice; the ``ssl4mis`` preset sets it).

Deviations: none in the maths. The network is the configured backbone (default the paper's ``unet2d``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ssl_bench.core.method import Batch, Method, MethodContext, StepInfo
from ssl_bench.core.registry import METHODS
from ssl_bench.training.losses import check_supervised_loss, supervised_loss


@dataclass
class SupervisedConfig:
    """Options of the supervised baselines."""

    #: training.losses.SUPERVISED_LOSSES: "ce" (paper), "ce+dice-ssl4mis" (SSL4MIS), "ce+dice-uamt", "ce+dice"
    loss: str = "ce"


class Supervised(Method):
    """Shared implementation: a backbone trained with the supervised loss on labelled batches."""

    Config = SupervisedConfig
    uses_unlabeled = False

    def __init__(self, cfg: Any, ctx: MethodContext) -> None:
        super().__init__(cfg, ctx)
        check_supervised_loss(self.cfg.loss)
        self.student = ctx.build_backbone()

    def training_step(self, batch_l: Batch, batch_u: Batch | None, step: StepInfo) -> dict[str, torch.Tensor]:
        assert batch_l.label is not None
        terms = supervised_loss(self.student(batch_l.image), batch_l.label, self.cfg.loss)
        return {"loss": terms.pop("sup/total"), **terms}


@METHODS.register("unet")
class UNetBaseline(Supervised):
    """U-Net trained on the labelled images only (the paper's "U-Net" baseline row)."""


@METHODS.register("fully-supervised")
class FullySupervised(Supervised):
    """U-Net trained on every training label, ignoring the budget (upper bound, Table IX)."""

    uses_all_labels = True
