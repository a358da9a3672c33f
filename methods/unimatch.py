"""UniMatch: FixMatch with a feature-perturbation stream and two strong views.

Paper: L. Yang, L. Qi, L. Feng, W. Zhang and Y. Shi, "Revisiting Weak-to-Strong Consistency in Semi-Supervised
Semantic Segmentation", CVPR 2023 (arXiv:2208.09910). Reference: LiheYoung/UniMatch
``more-scenarios/medical/unimatch.py`` (with ``model/unet.py``, ``dataset/acdc.py``, ``dataset/transform.py``,
``util/utils.py`` ``DiceLoss``, ``configs/acdc.yaml``), its ACDC branch.

Method (paper §3; equation labels are ours, the paper's numbers were not re-checked against its text):

* (U1) ``L = (L_s + L_u) / 2`` (§3.1); ``L_s`` = ``(CE + Dice) / 2`` on the labelled batch (``ce+dice-ssl4mis``);
* weak view x_w (the trainer's augmented batch), its prediction p_w without gradient, ``conf = max_k p_w``,
  ``y_hat = argmax_k p_w``; a pixel counts where ``conf >= tau`` (tau = 0.95);
* (U2) feature perturbation (§3.2, "UniPerb"): ``p_fp = D(Dropout2d_{0.5}(E(x_w)))``, channel dropout on *every*
  encoder feature fed to the decoder (skips and bottleneck); the decoder runs once on ``[E(x); Dropout2d(E(x))]``
  (the clean half is p_w), as the reference's ``model(x, need_fp=True)``;
* (U3) two strong views (§3.3, dual-stream): ``x_s1, x_s2`` each jitter (p 0.8) -> blur (p 0.5) -> CutMix (p 0.5)
  independently; inside a view's box the image is the partner's strong view and the target (``y_hat``, ``conf``)
  is the partner's weak prediction in eval mode;
* (U4) ``L_u = 0.25 l(p_s1, y_hat_1) + 0.25 l(p_s2, y_hat_2) + 0.5 l(p_fp, y_hat)`` (the paper's
  ``lambda = mu = 0.5`` split between the feature stream and the two image streams); in the medical code ``l`` is
  the soft Dice with the unconfident pixels ignored (``params.unsup_loss="dice"``; the paper's natural-image code
  uses the masked CE, ``"ce"``).

Here: ``loss = sup_weight * L_s + weight * (shares * terms)`` with ``sup_weight = weight = 0.5`` (U1) and the
shares ``(1 - fp_share) / 2, (1 - fp_share) / 2, fp_share`` with ``fp_share = 0.5`` (U4): the reference's
``(loss_x + 0.25 loss_u_s1 + 0.25 loss_u_s2 + 0.5 loss_u_w_fp) / 2``.

The ``ssl4mis`` preset is ``configs/acdc.yaml``: crop 256, batch 12 labelled + 12 unlabelled, SGD lr 0.01
(momentum 0.9, weight decay 1e-4, poly 0.9 per iteration), 300 epochs of one pass over the unlabelled slices
(``trainer.iters_per_epoch=None``: 1176 / 12 = 98 iterations at 7 labelled ACDC cases, 29,400 in all), tau 0.95;
weak augmentation ``ssl4mis`` (p 1/2 rot90 + flip, p 1/4 rotation by -20..19 degrees, as its ``ACDCDataset``).

Deviations:

* the CutMix partner of sample i is sample i - 1 of the same unlabelled batch; the reference draws a second,
  independent unlabelled batch (``trainloader_u_mix``) for the boxes. Its pseudo-labels are predicted the same way
  (eval mode, no gradient), at the cost of one extra no-gradient forward;
* weak and strong views are float (the reference round-trips the unlabelled slice through an 8-bit PIL image, so
  its weak and strong views are quantised to 1/255) and the blur uses an exact Gaussian kernel (see
  :mod:`~ssl_bench.training.strong_augment`);
* ``joint_bn=true`` (the default) runs the encoder on labelled + unlabelled weak images and the decoder on both
  halves, as the reference (which also perturbs the labelled features, unused); with ``joint_bn=false`` (the
  ``cpu`` preset) labelled images are a separate forward and the perturbed decoder pass covers the unlabelled images
  only;
* needs a backbone with an encoder/decoder split (``encode``/``decode``: unet2d, unet3d, ssl4mis-unet; the others
  raise at construction); 2D only, as the reference (``ssl-bench check`` skips 3D);
* the reference keeps the best epoch on val + test; the suite selects on val (``trainer.select``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ssl_bench.core.method import Batch, MethodContext, StepInfo
from ssl_bench.core.registry import METHODS
from ssl_bench.methods.fixmatch import FixMatch, FixMatchConfig, pseudo_label_loss
from ssl_bench.training.strong_augment import step_generator


def feature_dropout(feat: torch.Tensor, p: float) -> torch.Tensor:
    """Channel dropout of an encoder feature ``[B, C, *S]`` (``nn.Dropout2d(p)``, always on; 3D: ``Dropout3d``)."""
    if p <= 0:
        return feat
    return (F.dropout2d if feat.ndim == 4 else F.dropout3d)(feat, p, training=True)


@dataclass
class UniMatchConfig(FixMatchConfig):
    """Options of UniMatch (defaults: the reference's medical code, configs/acdc.yaml)."""

    #: supervised loss: (CE + Dice) / 2 with SSL4MIS's Dice (the reference's loss_x)
    loss: str = "ce+dice-ssl4mis"
    #: factor of L_s (U1: 1/2)
    sup_weight: float = 0.5
    #: factor of L_u (U1: 1/2)
    weight: float = 0.5
    #: loss of each stream against the pseudo-labels: "dice" (medical code), "ce" (paper / natural images), "ce+dice"
    unsup_loss: str = "dice"
    #: Dropout2d probability of the feature-perturbation stream (U2: 0.5)
    fp_dropout: float = 0.5
    #: share of the feature stream in L_u; each strong view gets (1 - fp_share) / 2 (U4: 0.5 -> 0.25 / 0.25 / 0.5)
    fp_share: float = 0.5
    #: strong views: UniMatch's ColorJitter(0.5, 0.5, 0.5, 0.25) with p 0.8, blur p 0.5, CutMix p 0.5
    jitter_p: float = 0.8
    brightness: float = 0.5
    contrast: float = 0.5
    blur_p: float = 0.5
    cutmix_p: float = 0.5


#: LiheYoung/UniMatch more-scenarios/medical/configs/acdc.yaml and unimatch.py, on the global ssl4mis recipe (which
#: already has crop 256, batch 12 + 12, SGD lr 0.01 momentum 0.9 weight decay 1e-4 poly, its U-Net and weak
#: augmentation); the ssl4mis preset adds its 300 epochs of one pass over the unlabelled slices
UNIMATCH_PARAMS: dict[str, Any] = {
    "params.loss": "ce+dice-ssl4mis",
    "params.sup_weight": 0.5,
    "params.weight": 0.5,
    "params.ramp": "none",
    "params.threshold": 0.95,
    "params.confidence": "max-prob",
    "params.unsup_loss": "dice",
    "params.fp_dropout": 0.5,
    "params.fp_share": 0.5,
    "params.jitter_p": 0.8,
    "params.brightness": 0.5,
    "params.contrast": 0.5,
    "params.blur_p": 0.5,
    "params.cutmix_p": 0.5,
}


@METHODS.register("unimatch")
class UniMatch(FixMatch):
    """UniMatch (CVPR 2023): FixMatch + Dropout2d feature stream + two CutMix strong views, 0.25/0.25/0.5."""

    Config = UniMatchConfig
    dims = (2,)
    presets = {
        "smoke": {},
        "cpu": {},
        "ssl4mis": {**UNIMATCH_PARAMS, "trainer.epochs": 300, "trainer.iters_per_epoch": None},
    }

    def __init__(self, cfg: Any, ctx: MethodContext) -> None:
        super().__init__(cfg, ctx)
        c = self.cfg
        if not 0.0 <= c.fp_dropout < 1.0:
            raise ValueError(f"params.fp_dropout must be in [0, 1), got {c.fp_dropout}")
        if not 0.0 <= c.fp_share <= 1.0:
            raise ValueError(f"params.fp_share must be in [0, 1], got {c.fp_share}")
        if c.complementary:
            raise ValueError("params.complementary is SSL4MIS FixMatch's term; UniMatch has none (set it to false)")
        if not getattr(self.student, "decoder_channels", ()):
            raise ValueError(
                f"unimatch perturbs the features between encoder and decoder, but backbone "
                f"{type(self.student).__name__} has no encode/decode split: use unet2d, unet3d or ssl4mis-unet"
            )

    def perturbed_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(clean, feature-perturbed) logits ``[B, K, *S]`` of ``x``: one encoder pass, one decoder pass on
        ``[features; Dropout2d(features)]`` (U2)."""
        feats = self.student.encode(x)
        out = self.student.decode([torch.cat([f, feature_dropout(f, self.cfg.fp_dropout)]) for f in feats])
        clean, perturbed = out.chunk(2)
        return clean, perturbed

    def shares(self) -> dict[str, float]:
        """Weights of the three streams inside L_u (U4)."""
        s = self.cfg.fp_share
        return {"unsup/s1": (1.0 - s) / 2, "unsup/s2": (1.0 - s) / 2, "unsup/fp": s}

    def training_step(self, batch_l: Batch, batch_u: Batch | None, step: StepInfo) -> dict[str, torch.Tensor]:
        if batch_u is None:
            return self.supervised_only(batch_l)
        c = self.cfg
        gen = step_generator()
        x_l, x_w = batch_l.image, batch_u.image
        if c.joint_bn:  # the reference: model(cat(img_x, img_u_w), need_fp=True)
            clean, perturbed = self.perturbed_forward(torch.cat([x_l, x_w]))
            n = x_l.shape[0]
            logits_l, logits_w, logits_fp = clean[:n], clean[n:], perturbed[n:]
        else:
            logits_l = self.student(x_l)
            logits_w, logits_fp = self.perturbed_forward(x_w)
        sup = self.supervised(logits_l, batch_l.label)
        target = self.weak_target(logits_w)
        partner = self.partner_target(x_w) if c.cutmix_p > 0 else None
        x_s1, target_1, _ = self.strong_view(x_w, target, partner, gen)
        x_s2, target_2, _ = self.strong_view(x_w, target, partner, gen)
        logits_s1, logits_s2 = self.student(torch.cat([x_s1, x_s2])).chunk(2)
        unsup = {
            "unsup/s1": pseudo_label_loss(logits_s1, target_1, c.unsup_loss),
            "unsup/s2": pseudo_label_loss(logits_s2, target_2, c.unsup_loss),
            "unsup/fp": pseudo_label_loss(logits_fp, target, c.unsup_loss),
        }
        logs = {"mask/certain_frac": target.mask.float().mean()}
        return self.compose(sup, unsup, self.shares(), self.unsup_weight(step), **logs)
