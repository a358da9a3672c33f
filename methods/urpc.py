"""URPC: Uncertainty Rectified Pyramid Consistency — multi-scale predictions of one network kept consistent.

Papers: X. Luo, W. Liao, J. Chen, T. Song, Y. Chen, S. Zhang, N. Chen, G. Wang, S. Zhang, "Efficient Semi-Supervised
Gross Target Volume of Nasopharyngeal Carcinoma Segmentation via Uncertainty Rectified Pyramid Consistency",
MICCAI 2021 (arXiv:2012.07042), and X. Luo, G. Wang, W. Liao, J. Chen, T. Song, Y. Chen, S. Zhang, D. N. Metaxas,
S. Zhang, "Semi-supervised medical image segmentation via uncertainty rectified pyramid consistency", Medical Image
Analysis 80, 2022. Reference code: HiLab-git/SSL4MIS ``code/train_uncertainty_rectified_pyramid_consistency_2D.py``
with ``code/networks/unet.py`` ``UNet_URPC`` / ``Decoder_URPC`` (ACDC, the "URPC" row of the ACDC tables) and
``..._3D.py`` with ``code/networks/unet_3D_dv_semi.py`` (BraTS).

Method (equation numbers ours: the paper PDFs were not readable here; the maths is the reference code's):

* pyramid predictions (PPNet): the backbone's decoder levels (``SegNet.decoder_features``; the SSL4MIS U-Net: 128,
  64, 32, 16 channels at strides 8, 4, 2, 1) each get a head — the backbone's own output conv on the last level,
  a 3x3 conv on each auxiliary level — whose logits are up-sampled to the input size (nearest, ``F.interpolate``'s
  default in the reference): S = 4 predictions p_s = softmax(logits_s); in training each auxiliary head sees a
  perturbed feature (reference, stride 8: ``F.dropout(p=0.5)``; stride 4: ``FeatureDropout``, zeroing the positions
  whose channel mean is >= U(0.7, 0.9) x its per-sample maximum; stride 2: ``FeatureNoise``, x + x * n with
  n ~ U(-0.3, 0.3) of shape ``x.shape[1:]``, shared over the batch); none at test time;
* (1) supervised: L_sup = (1/S) sum_s l_sup(logits_s, y), l_sup = 0.5 (CE + Dice) in the reference;
* (2) pyramid mean: p_c = (1/S) sum_s p_s;
* (3) uncertainty of each scale: D_s = sum_k p_c^k log(p_c^k / p_s^k) = KL(p_c || p_s) per pixel;
* (4) rectified consistency of scale s: L_s = mean_{pixels, classes}(w_s (p_c - p_s)^2) / (mean_pixels(w_s) + 1e-8)
  + mean_pixels(D_s) with w_s = exp(-D_s);
* (5) L_unsup = (1/S) sum_s L_s over the unlabelled images; L = L_sup + w(t) L_unsup, w(t) = 0.1 * sigmoid ramp
  (SSL4MIS: 0.1 * sigmoid_rampup(iter // 150, 200)).

Gradients flow through p_c and w_s as in the reference (``detach_target=true`` stops them). Test time: the main
(full-resolution) head alone; the auxiliary heads are training-only parameters (not counted at inference).

Deviations:

* the pyramid has one level per decoder level of the backbone (4 with the SSL4MIS U-Net and ``unet2d`` depth 4);
  the perturbations are assigned from the shallow end (``perturbations`` lists the auxiliary levels deepest
  first, at most one per level — a longer list is an error, except SSL4MIS's three (the default), of which a
  shallower backbone keeps the shallowest —, extra deeper levels get ``"none"``);
* the reference's unused ``out_conv_dp4`` head on the bottleneck is not built (9,220 parameters that never train);
* perturbations use torch's RNG (the trainer seeds it per step) instead of numpy's for FeatureDropout's threshold;
* the 3D reference network (``unet_3D_dv_semi``) differs: channel dropout 0.5/0.3/0.2/0.1 *inside* the decoder
  path, 1x1 heads and trilinear up-sampling; here 3D runs use the 2D layout on ``unet3d`` (``head_kernel=1`` and
  ``upsample="trilinear"`` approximate its heads); the loss is the same;
* ramp length as a fraction of the stage (the ``ssl4mis`` preset: the whole run in 200 steps); one labelled +
  unlabelled forward (``joint_bn``) as the reference, except under the ``cpu`` preset (separate forwards, the
  setting of its committed records).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench.core.backbone import conv_nd
from ssl_bench.core.method import Batch, MethodContext, StepInfo
from ssl_bench.core.registry import METHODS
from ssl_bench.training.consistency import ConsistencyConfig, ConsistencyMethod

PERTURBATIONS = ("none", "dropout", "feature-dropout", "feature-noise")
#: SSL4MIS 2D's perturbations of the auxiliary levels at strides 8, 4, 2 (deepest first)
SSL4MIS_PERTURBATIONS = ("dropout", "feature-dropout", "feature-noise")


# -- perturbations of the auxiliary levels (training only) ---------------------------------------------------------


def feature_dropout(x: torch.Tensor, low: float = 0.7, high: float = 0.9) -> torch.Tensor:
    """Zero the positions whose channel mean is >= t * (the sample's maximum channel mean), t ~ U(low, high) drawn
    once for the batch (SSL4MIS ``FeatureDropout``); ``x`` ``[B, C, *S]``."""
    attention = x.mean(1, keepdim=True)  # [B, 1, *S]
    peak = attention.flatten(1).max(1).values.view(-1, *([1] * (x.ndim - 1)))
    t = float(torch.empty(()).uniform_(low, high))
    return x * (attention < peak * t).to(x.dtype)


def feature_noise(x: torch.Tensor, scale: float = 0.3) -> torch.Tensor:
    """``x + x * n``, n ~ U(-scale, scale) of shape ``x.shape[1:]`` shared over the batch (SSL4MIS ``FeatureNoise``)."""
    n = (torch.rand(x.shape[1:], device=x.device, dtype=x.dtype) * 2 - 1) * scale
    return x + x * n.unsqueeze(0)


# -- the loss -----------------------------------------------------------------------------------------------------


def rectified_pyramid_consistency(logits: Sequence[torch.Tensor], detach_target: bool = False) -> torch.Tensor:
    """URPC's uncertainty-rectified consistency, Eq. (2)-(5), of S predictions ``[B, K, *S]`` at one resolution."""
    log_p = [lg.float().log_softmax(1) for lg in logits]
    probs = [lp.exp() for lp in log_p]
    mean = torch.stack(probs).mean(0)  # Eq. (2)
    if detach_target:
        mean = mean.detach()
    total = mean.new_zeros(())
    for lp, p in zip(log_p, probs):
        kl = (torch.xlogy(mean, mean) - mean * lp).sum(1, keepdim=True)  # Eq. (3): KL(p_c || p_s), [B, 1, *S]
        w = torch.exp(-(kl.detach() if detach_target else kl))
        total = total + (w * (mean - p).pow(2)).mean() / (w.mean() + 1e-8) + kl.mean()  # Eq. (4)
    return total / len(logits)  # Eq. (5)


@dataclass
class URPCConfig(ConsistencyConfig):
    """Options of URPC (defaults: SSL4MIS 2D values; the ramp length as a fraction of the stage)."""

    #: maximum weight of the rectified consistency (SSL4MIS: 0.1)
    weight: float = 0.1
    #: perturbation of each auxiliary level's feature in training, deepest level first, aligned at the shallow end
    #: ("none", "dropout", "feature-dropout", "feature-noise"); at most one per auxiliary level, except the default
    #: (SSL4MIS 2D's, at strides 8, 4, 2), whose deepest entries a shallower net drops
    perturbations: tuple[str, ...] = SSL4MIS_PERTURBATIONS
    #: probability of the element-wise "dropout" perturbation (SSL4MIS: 0.5)
    dropout_p: float = 0.5
    #: range of FeatureDropout's threshold factor (SSL4MIS: U(0.7, 0.9))
    feature_dropout_range: tuple[float, float] = (0.7, 0.9)
    #: FeatureNoise amplitude: n ~ U(-a, a) (SSL4MIS: 0.3)
    noise_range: float = 0.3
    #: kernel of the auxiliary heads (SSL4MIS 2D: 3; its 3D network: 1)
    head_kernel: int = 3
    #: up-sampling of the auxiliary logits to the input size (SSL4MIS 2D: "nearest"; 3D: "trilinear")
    upsample: str = "nearest"
    #: stop the gradient through the pyramid mean p_c and the weights exp(-D_s) (the reference does not)
    detach_target: bool = False


@METHODS.register("urpc")
class URPC(ConsistencyMethod):
    """URPC (MICCAI 2021 / MedIA 2022): pyramid predictions of the decoder levels, uncertainty-rectified consistency."""

    Config = URPCConfig
    presets = {
        "smoke": {},
        "cpu": {},
        "paper": {"params.rampup": 1.0},
        # HiLab-git/SSL4MIS train_uncertainty_rectified_pyramid_consistency_2D.py with UNet_URPC: 0.5 (CE + Dice)
        # averaged over the 4 scales, consistency 0.1 x sigmoid_rampup(iter // 150, 200), one forward of 12 + 12
        "ssl4mis": {
            "params.perturbations": SSL4MIS_PERTURBATIONS,
            "params.dropout_p": 0.5,
            "params.feature_dropout_range": (0.7, 0.9),
            "params.noise_range": 0.3,
            "params.head_kernel": 3,
            "params.upsample": "nearest",
        },
    }

    def __init__(self, cfg: Any, ctx: MethodContext) -> None:
        super().__init__(cfg, ctx)
        c = self.cfg
        bad = [p for p in c.perturbations if p not in PERTURBATIONS]
        if bad:
            raise ValueError(f"params.perturbations: unknown {bad}; use {PERTURBATIONS}")
        if not 0 <= c.dropout_p < 1:
            raise ValueError(f"params.dropout_p must be in [0, 1), got {c.dropout_p}")
        if c.noise_range < 0:
            raise ValueError(f"params.noise_range must be >= 0, got {c.noise_range}")
        if not 0 <= c.feature_dropout_range[0] <= c.feature_dropout_range[1]:
            raise ValueError(f"params.feature_dropout_range needs 0 <= low <= high, got {c.feature_dropout_range}")
        if c.head_kernel < 1 or c.head_kernel % 2 == 0:
            raise ValueError(f"params.head_kernel must be odd and >= 1, got {c.head_kernel}")
        allowed = ("nearest", "bilinear") if self.spec.dims == 2 else ("nearest", "trilinear")
        if c.upsample not in allowed:
            raise ValueError(f"params.upsample must be one of {allowed} for {self.spec.dims}D data, got {c.upsample!r}")
        channels = self.student.decoder_channels
        if len(channels) < 2:
            raise ValueError(
                f"urpc needs a backbone with decoder levels (SegNet.decoder_features); {type(self.student).__name__} "
                "has none: use unet2d, unet3d or ssl4mis-unet"
            )
        dims, k = self.spec.dims, c.head_kernel
        #: heads of the auxiliary levels, deepest first (the last level uses the backbone's own head)
        self.aux_heads = nn.ModuleList(
            conv_nd(dims)(ch, self.spec.num_classes, k, padding=k // 2) for ch in channels[:-1]
        )
        n_aux = len(channels) - 1
        if tuple(c.perturbations) == SSL4MIS_PERTURBATIONS:
            listed = list(SSL4MIS_PERTURBATIONS)[-n_aux:] if n_aux else []
        elif len(c.perturbations) > n_aux:
            raise ValueError(
                f"params.perturbations lists {len(c.perturbations)} perturbations but {type(self.student).__name__} "
                f"(depth {len(channels) - 1}) has {n_aux} auxiliary decoder levels: give at most {n_aux}, "
                "deepest level first"
            )
        else:
            listed = list(c.perturbations)
        self.level_perturbations = ["none"] * (n_aux - len(listed)) + listed

    def _perturb(self, x: torch.Tensor, kind: str) -> torch.Tensor:
        c = self.cfg
        if not self.training or kind == "none":
            return x
        if kind == "dropout":
            return F.dropout(x, c.dropout_p)
        if kind == "feature-dropout":
            return feature_dropout(x, *c.feature_dropout_range)
        return feature_noise(x, c.noise_range)

    def pyramid(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Logits ``[B, K, *S]`` of every scale at the input size: key 0 = the main head, 1.. = the auxiliary levels
        from the shallowest (stride 2) to the deepest."""
        levels = self.student.decoder_features(x)
        out = {0: self.student.head_logits(levels[-1])}
        size = x.shape[2:]
        mode = self.cfg.upsample
        for j, i in enumerate(reversed(range(len(levels) - 1)), start=1):  # shallow -> deep
            logits = self.aux_heads[i](self._perturb(levels[i], self.level_perturbations[i]))
            align = None if mode == "nearest" else False
            out[j] = F.interpolate(logits, size=size, mode=mode, align_corners=align)
        return out

    def supervised_pyramid(self, pyr_l: dict[int, torch.Tensor], label: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Eq. (1): ``sup/total`` = mean over scales of l_sup; ``sup/ce`` (``sup/dice``) of the main head, and each
        scale's total as ``sup/scale{s}``."""
        out: dict[str, torch.Tensor] = {}
        total = None
        for s, logits in pyr_l.items():
            terms = self.supervised(logits, label)
            if s == 0:
                out.update({k: v for k, v in terms.items() if k != "sup/total"})
            out[f"sup/scale{s}"] = terms["sup/total"]
            total = terms["sup/total"] if total is None else total + terms["sup/total"]
        assert total is not None
        out["sup/total"] = total / len(pyr_l)
        return out

    def training_step(self, batch_l: Batch, batch_u: Batch | None, step: StepInfo) -> dict[str, torch.Tensor]:
        x_u = None if batch_u is None else batch_u.image
        pyr_l, pyr_u = self.forward_split(self.pyramid, batch_l.image, x_u)
        sup = self.supervised_pyramid(pyr_l, batch_l.label)
        if pyr_u is None:
            return {"loss": sup["sup/total"], **sup}
        unsup = {"unsup/urpc": rectified_pyramid_consistency(list(pyr_u.values()), self.cfg.detach_target)}
        return self.combine(sup, unsup, self.unsup_weight(step))
