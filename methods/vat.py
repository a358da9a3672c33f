"""VAT: virtual adversarial training — smoothness of the prediction against the most sensitive input perturbation.

Paper: T. Miyato, S. Maeda, M. Koyama, S. Ishii, "Virtual Adversarial Training: A Regularization Method for
Supervised and Semi-Supervised Learning", IEEE TPAMI 41(8), 2019 (arXiv:1704.03976; github.com/takerum/vat_tf).
The "VAT" row of CoraNet Table IX (Shi et al., IEEE TMI 2021, doi:10.1109/TMI.2021.3124413; the number is copied
from the literature).

Method (Miyato et al., Algorithm 1, per image with pixel-wise predictions):

* d ~ N(0, I) per image, scaled to norm xi; one power iteration: g = grad_d KL(p(x) || p(x + d)) with p(x) fixed;
  r_adv = eps * g / ||g|| (L2 over all channels and pixels of the image);
* LDS = KL(p(x) || p(x + r_adv)) summed over classes, averaged over pixels, with p(x) a constant (stop-gradient);
* loss = CE(labelled) + alpha * LDS on labelled and unlabelled images (``consistency_on``; Miyato: alpha = 1 and
  every training input).

Deviations:

* ``norm="rms"`` (default) measures xi and eps as the root-mean-square per pixel (||r||_2 = eps sqrt(C |S|)), so
  one value works at every image size; ``norm="l2"`` is the paper's per-image L2 norm (CIFAR-10: eps = 6 after ZCA).
  The default eps = 0.05 is ours (images are min-max normalised to [0, 1]; no segmentation value is published).
* xi = 1e-3 (rms) instead of the paper's 1e-6 (L2): the power-iteration pass runs in float32 (autocast off) and a
  perturbation that small is lost in float32 rounding of the softmax difference for large images.
* the adversarial passes use batch statistics without updating BatchNorm's running statistics (the usual fix for
  the extra forward passes; the paper's code freezes the statistics the same way).
* labelled and unlabelled images go through the network (and the power iteration) as separate batches, as the
  reference code (takerum/vat_tf ``train_semisup.py``, which also keeps the unlabelled pass out of BatchNorm's
  running statistics; here both passes update them); ``joint_bn=true``: together.
* ``weight`` ramps up (sigmoid over 40 % of the stage) by default for stability; the ``paper`` preset uses the
  paper's constant alpha = 1 (``ramp="none"``). No entropy minimisation term (VAT+EntMin) is added.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ssl_bench.core.method import Batch, MethodContext, StepInfo
from ssl_bench.core.registry import METHODS
from ssl_bench.training.consistency import (
    ConsistencyConfig,
    ConsistencyMethod,
    kl_from_logits,
    l2_normalize,
    stochastic_mode,
)

NORMS = ("rms", "l2")
CONSISTENCY_ON = ("all", "unlabeled")


def perturbation_scale(x: torch.Tensor, value: float, norm: str) -> float:
    """Per-image L2 norm that ``value`` stands for: itself (``l2``) or ``value * sqrt(C |S|)`` (``rms``)."""
    if norm == "l2":
        return value
    return value * float(x[0].numel()) ** 0.5


def virtual_adversarial_perturbation(
    net: nn.Module, x: torch.Tensor, logits: torch.Tensor, xi: float, eps: float, iterations: int = 1
) -> torch.Tensor:
    """r_adv ``[B, C, *S]`` with per-image L2 norm ``eps``, by ``iterations`` power iterations with step ``xi``
    (L2). ``logits`` are the (detached) predictions at ``x``. BatchNorm statistics are not updated; parameter
    gradients are not touched."""
    target = logits.detach().float()
    d = l2_normalize(torch.randn_like(x))
    with stochastic_mode(net, dropout=None, bn="keep"), torch.autocast(x.device.type, enabled=False):
        for _ in range(iterations):
            d = (xi * d).requires_grad_(True)
            dist = kl_from_logits(target, net(x.float() + d).float())
            (grad,) = torch.autograd.grad(dist, d)
            d = l2_normalize(grad.detach())
    return eps * d


@dataclass
class VATConfig(ConsistencyConfig):
    """Options of VAT (Miyato et al. 2019)."""

    #: alpha, the weight of the LDS term (the paper: 1)
    weight: float = 1.0
    #: perturbation size and finite-difference step, in units of `norm`
    eps: float = 0.05
    xi: float = 1e-3
    #: "rms": per-pixel root-mean-square (size-independent); "l2": the paper's per-image L2 norm
    norm: str = "rms"
    #: power iterations (the paper: 1)
    power_iterations: int = 1
    #: images of the LDS term: "all" (labelled and unlabelled, the paper) or "unlabeled"
    consistency_on: str = "all"
    #: separate labelled and unlabelled forwards, as the reference (takerum/vat_tf: ``forward(x)`` for the CE term,
    #: ``forward(ul_x)`` for the LDS term); true: one forward over both
    joint_bn: bool = False


@METHODS.register("vat")
class VAT(ConsistencyMethod):
    """VAT (Miyato et al., TPAMI 2019): KL between predictions at x and x + r_adv (one power iteration)."""

    Config = VATConfig
    presets = {
        "smoke": {},
        "cpu": {},
        # Miyato et al.: constant alpha = 1
        "paper": {"params.weight": 1.0, "params.ramp": "none"},
    }

    def __init__(self, cfg: Any, ctx: MethodContext) -> None:
        super().__init__(cfg, ctx)
        c = self.cfg
        if c.norm not in NORMS:
            raise ValueError(f"params.norm must be one of {NORMS}, got {c.norm!r}")
        if c.consistency_on not in CONSISTENCY_ON:
            raise ValueError(f"params.consistency_on must be one of {CONSISTENCY_ON}, got {c.consistency_on!r}")
        if c.eps <= 0 or c.xi <= 0 or c.power_iterations < 1:
            raise ValueError("need params.eps > 0, params.xi > 0 and params.power_iterations >= 1")

    def perturbation(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        xi, eps = perturbation_scale(x, c.xi, c.norm), perturbation_scale(x, c.eps, c.norm)
        return virtual_adversarial_perturbation(self.student, x, logits, xi, eps, c.power_iterations)

    def lds(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """KL(p(x) || p(x + r_adv)), p(x) from ``logits`` held constant."""
        r_adv = self.perturbation(x, logits)
        with stochastic_mode(self.student, dropout=None, bn="keep"):
            adv_logits = self.student(x + r_adv.to(x.dtype))
        return kl_from_logits(logits.detach(), adv_logits)

    def training_step(self, batch_l: Batch, batch_u: Batch | None, step: StepInfo) -> dict[str, torch.Tensor]:
        if batch_u is None:
            return self.supervised_only(batch_l)
        logits_l, logits_u = self.student_forward(batch_l, batch_u)
        assert logits_u is not None
        sup = self.supervised(logits_l, batch_l.label)
        if self.cfg.consistency_on == "unlabeled":
            term = self.lds(batch_u.image, logits_u)
        elif self.cfg.joint_bn:
            term = self.lds(torch.cat([batch_l.image, batch_u.image]), torch.cat([logits_l, logits_u]))
        else:  # per batch, averaged over all images
            n_l, n_u = batch_l.image.shape[0], batch_u.image.shape[0]
            lds_l, lds_u = self.lds(batch_l.image, logits_l), self.lds(batch_u.image, logits_u)
            term = (n_l * lds_l + n_u * lds_u) / (n_l + n_u)
        return self.combine(sup, {"unsup/vat": term}, self.unsup_weight(step))
