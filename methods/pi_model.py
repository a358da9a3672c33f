"""Π-model: consistency between two stochastic passes (augmentation, noise, dropout) of the same network.

Paper: S. Laine and T. Aila, "Temporal Ensembling for Semi-Supervised Learning", ICLR 2017 (arXiv:1610.02242;
github.com/smlaine2/tempens). The "Π-model" rows of CoraNet Tables II, III and VII (Shi et al., IEEE TMI 2021,
doi:10.1109/TMI.2021.3124413), which "replace the softmax layers with a decoder as in UA-MT". There is no
segmentation reference implementation (not in SSL4MIS, UA-MT or CoraNet): this one is derived from the paper.

Method (Laine & Aila, Algorithm 1, adapted per pixel):

* every training image x_i is evaluated twice, z_i = f(x_i) and z~_i = f(x_i'), with independent Gaussian input
  noise (sigma = 0.15 in the paper), independent dropout masks (the ``paper`` preset: p = 0.5 on the U-Net
  bottleneck and last feature; the paper's network has dropout 0.5) and, for the second pass, a random rot90/flip
  that is inverted on its output, so both predictions live on the same pixel grid (the paper's augmentations are
  random translations and flips of the whole image);
* loss = CE on the labelled pixels of z + w(t) * mean over pixels of (1/K) ||softmax(z) - softmax(z~)||^2, on
  labelled *and* unlabelled images (as the paper: the squared difference is applied to every training input);
* both passes carry gradients (as in the paper); ``detach_target=true`` stops it through z~;
* w(t) = w_max * exp(-5 (1 - t)^2) ramp-up.

Deviations:

* the ramp length is a fraction of the stage (``rampup``; the paper: 80 of 300 epochs = 0.267, the ``paper``
  preset). The paper scales w_max = 100 by the labelled fraction M/N; the method does not see the budget, so
  ``weight`` is w_max * M/N directly: the ``paper`` preset uses 100 * 0.2 = 20 (the 20 % budget of the default
  config); the default 1.0 is a moderate value for short runs.
* labelled and unlabelled images go through the network together (``joint_bn``, the default), as the paper's
  mixed minibatches; the ``cpu`` preset uses separate passes (``joint_bn=false``, the setting of its committed
  records); see :meth:`~ssl_bench.training.consistency.ConsistencyMethod.forward_split`.
* no dropout in the smoke/cpu presets (0.5 in ``paper``): half the channels of a width-8/16 U-Net is too much
  (see :mod:`~ssl_bench.methods.mean_teacher`); noise and the rot90/flip still make the passes differ.
* pixel-wise consistency on softmax maps of the U-Net instead of class vectors; rot90/flip instead of
  translations (translations would need padding and cropping of the label maps); the paper's Adam schedule and
  mean-only BatchNorm are not reproduced (the suite's optimiser config and the U-Net's BatchNorm are used).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ssl_bench.core.method import Batch, MethodContext, StepInfo
from ssl_bench.core.registry import METHODS
from ssl_bench.training.augment import apply_augment
from ssl_bench.training.consistency import ConsistencyConfig, ConsistencyMethod, add_noise, random_dihedral, softmax_mse

CONSISTENCY_ON = ("all", "unlabeled")


@dataclass
class PiModelConfig(ConsistencyConfig):
    """Options of the Π-model (defaults: Laine & Aila where they transfer; see the module docstring)."""

    #: w_max (the paper: 100 scaled by the labelled fraction; `paper` preset 20)
    weight: float = 1.0
    #: dropout of the U-Net bottleneck and last feature (None: model.dropout; the paper's network and the `paper`
    #: preset: 0.5)
    dropout: float | None = None
    #: Gaussian input noise of each pass: std and clamp (the paper: 0.15, no clamp)
    noise_std: float = 0.15
    noise_clip: float | None = None
    #: random rot90/flip (inverted on the output) on the second pass
    augment: bool = True
    #: pixels of the consistency term: "all" (labelled and unlabelled images, the paper) or "unlabeled"
    consistency_on: str = "all"
    #: stop the gradient through the second pass (the paper: no)
    detach_target: bool = False


@METHODS.register("pi-model")
class PiModel(ConsistencyMethod):
    """Π-model (Laine & Aila, ICLR 2017): squared difference of two noisy/dropout/augmented passes, ramped weight."""

    Config = PiModelConfig
    presets = {
        "smoke": {},
        "cpu": {},
        # Laine & Aila: w_max = 100 * M/N (20 % labelled), ramp-up over 80 of 300 epochs
        "paper": {"params.weight": 20.0, "params.rampup": 80 / 300, "params.dropout": 0.5},
    }

    def __init__(self, cfg: Any, ctx: MethodContext) -> None:
        super().__init__(cfg, ctx)
        c = self.cfg
        if c.consistency_on not in CONSISTENCY_ON:
            raise ValueError(f"params.consistency_on must be one of {CONSISTENCY_ON}, got {c.consistency_on!r}")
        if c.noise_std < 0:
            raise ValueError(f"params.noise_std must be >= 0, got {c.noise_std}")

    def second_pass(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a pass on a randomly rotated/flipped (then inverted) noisy copy of ``x``."""
        c = self.cfg
        if not c.augment:
            return self.student(add_noise(x, c.noise_std, c.noise_clip))
        aug = random_dihedral(x)
        out = self.student(add_noise(apply_augment(x, aug), c.noise_std, c.noise_clip))
        return apply_augment(out, aug, inverse=True)

    def training_step(self, batch_l: Batch, batch_u: Batch | None, step: StepInfo) -> dict[str, torch.Tensor]:
        if batch_u is None:
            return self.supervised_only(batch_l)
        c = self.cfg

        def first_pass(x: torch.Tensor) -> torch.Tensor:
            return self.student(add_noise(x, c.noise_std, c.noise_clip))

        z_l, z_u = self.forward_split(first_pass, batch_l.image, batch_u.image)
        sup = self.supervised(z_l, batch_l.label)
        if c.consistency_on == "all":
            zt_l, zt_u = self.forward_split(self.second_pass, batch_l.image, batch_u.image)
            z, target = torch.cat([z_l, z_u]), torch.cat([zt_l, zt_u]).softmax(1)
        else:
            z, target = z_u, self.second_pass(batch_u.image).softmax(1)
        if c.detach_target:
            target = target.detach()
        unsup = {"unsup/pi": softmax_mse(z, target)}
        return self.combine(sup, unsup, self.unsup_weight(step))
