"""FixMatch: the weak view's confident prediction is the target of the strong view.

Paper: K. Sohn, D. Berthelot, C.-L. Li, Z. Zhang, N. Carlini, E. D. Cubuk, A. Kurakin, H. Zhang and C. Raffel,
"FixMatch: Simplifying Semi-Supervised Learning with Consistency and Confidence", NeurIPS 2020 (arXiv:2001.07685).
Segmentation reference: HiLab-git/SSL4MIS ``code/train_fixmatch_standard_augs.py`` (its "standard augs" 2D script;
strong view: ``code/dataloaders/dataset.py`` ``WeakStrongAugment``).

Method (per pixel; weak view = the trainer's augmented batch, strong view = :mod:`~ssl_bench.training.strong_augment`
applied to it, so both share the geometry; equation numbers of the arXiv version, quoted from memory and not
re-checked against its text):

* (3) ``l_s = 1/B sum_b H(y_b, p(y | alpha(x_b)))``: the supervised loss (``params.loss``);
* q = p(y | alpha(u)) without gradient, ``q_hat = argmax q``;
* (4) ``l_u = 1/(mu B) sum_b 1(max q_b >= tau) H(q_hat_b, p(y | A(u_b)))``: CE on the confident pixels, summed and
  divided by *all* unlabelled pixels (``params.confidence="max-prob"``, ``params.unsup_loss="ce"``);
* loss = ``l_s + lambda_u l_u`` with tau = 0.95 and lambda_u = 1 (paper §4; ``params.threshold``, ``params.weight``).

The SSL4MIS script differs from the paper in four places; each is an option, and the ``ssl4mis`` preset sets them all:

* ``confidence="ssl4mis"``: the probabilities are min-max normalised over the classes, ``(p_k - min p) / max p``
  (its ``normalize``), each class is kept where that exceeds tau (``--conf_thresh`` default **0.8**), and the
  pseudo-label is the arg-max of the kept probabilities — 0 (background) where no class is kept, so every pixel
  has a target and none is masked out;
* ``unsup_loss="ce+dice"``: ``CE + Dice`` (its squared-denominator ``DiceLoss``) against the pseudo-labels;
* ``complementary=true``: its negative-learning term ``a * CE(1 - p_s, argmin_k p_w)`` with the adaptive weight
  ``a = mean_{b,k} (1 - H(p_s[b, k, :] / sum_pixels) / log(HW))`` (the entropy of each class map over the pixels),
  added as ``a * (a * CE)`` (``unsup_loss + as_weight * comp_loss``, comp_loss already carrying one ``a``), on the
  whole strong batch (labelled and unlabelled, with ``joint_bn``), ``a`` not detached, as there;
* ``sup_weight=2``: its supervised loss is ``CE + Dice`` (not halved), i.e. 2 x ``ce+dice-ssl4mis``; lambda_u =
  0.1 x sigmoid ramp-up over ``iter // 150`` of 200 (the ``ssl4mis`` global preset's weight schedule).

Strong view (``StrongAugmentConfig`` fields; defaults = the SSL4MIS script's ``ColorJitter(0.8, 0.8, 0.8, 0.2)``,
p = 1, of which only brightness and contrast act on a one-channel image): blur, gamma and CutMix are off by
default; ``cutmix_p > 0`` gives UniMatch's "FixMatch" baseline (CutMix partner and its pseudo-label as in
:mod:`~ssl_bench.methods.unimatch`). The paper's RandAugment/CTAugment + Cutout (natural images) and its
unlabelled:labelled ratio mu = 7 are not reproduced: the ratio is ``trainer.unlabeled_batch_size`` /
``trainer.batch_size`` (1:1 in every preset, as SSL4MIS).

Deviations:

* the SSL4MIS script builds an EMA model and updates it but never uses it (the student makes the pseudo-labels and
  is tested): not built here;
* its weak view is ``random_rot_flip`` only (rot90 and always a flip): the ``ssl4mis`` preset uses
  ``dataset.augment=flip-rot`` (rot90 and a flip with p = 0.5), the closest kind;
* the reference's saturation/hue jitter is omitted (a no-op on one channel in torchvision);
* ``joint_bn=true`` (the default) runs the weak pass on labelled + unlabelled and the strong pass on their strong
  views, as the reference; with ``joint_bn=false`` (the ``cpu`` preset) labelled and unlabelled images go through
  the network in separate passes, and the strong pass covers the unlabelled images only;
* 2D only (the references are 2D, and the strong view is defined for 2D slices); ``ssl-bench check`` skips 3D.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from ssl_bench.core.method import Batch, MethodContext, StepInfo
from ssl_bench.core.registry import METHODS
from ssl_bench.training.consistency import ConsistencyConfig, ConsistencyMethod, stochastic_mode
from ssl_bench.training.losses import soft_dice_loss
from ssl_bench.training.strong_augment import (
    StrongAugmentConfig,
    check_strong_config,
    cutmix_boxes,
    mix_with_mask,
    step_generator,
    strong_augment,
)

CONFIDENCE_RULES = ("max-prob", "ssl4mis")
UNSUP_LOSSES = ("ce", "dice", "ce+dice")


class PseudoTarget(NamedTuple):
    """Pseudo-labels of a batch: ``labels`` ``[B, *S]`` int64, ``mask`` ``[B, *S]`` bool (pixels that count),
    ``confidence`` ``[B, *S]`` (max probability, for logging)."""

    labels: torch.Tensor
    mask: torch.Tensor
    confidence: torch.Tensor

    def mixed(self, other: PseudoTarget, box: torch.Tensor) -> PseudoTarget:
        """``other`` inside ``box`` ``[B, *S]``, ``self`` outside (the target of a CutMix-ed image)."""
        return PseudoTarget(*(mix_with_mask(a, b, box) for a, b in zip(self, other)))


def pseudo_labels(probs: torch.Tensor, threshold: float, rule: str = "max-prob") -> PseudoTarget:
    """Pseudo-labels of probabilities ``probs`` ``[B, K, *S]`` (no gradient).

    ``"max-prob"`` (FixMatch Eq. 4): label ``argmax_k p_k``, mask ``max_k p_k >= threshold``. ``"ssl4mis"``
    (SSL4MIS FixMatch): class k is kept where ``(p_k - min p) / max p > threshold``; label = arg-max of the kept
    probabilities, 0 where none is kept; every pixel counts.
    """
    probs = probs.detach()
    conf, arg = probs.max(1)
    if rule == "max-prob":
        return PseudoTarget(arg, conf >= threshold, conf)
    if rule == "ssl4mis":
        keep = (probs - probs.min(1, keepdim=True).values) / probs.max(1, keepdim=True).values > threshold
        labels = torch.where(keep.any(1), (probs * keep).argmax(1), torch.zeros_like(arg))
        return PseudoTarget(labels, torch.ones_like(conf, dtype=torch.bool), conf)
    raise ValueError(f"params.confidence must be one of {CONFIDENCE_RULES}, got {rule!r}")


def pseudo_label_loss(logits: torch.Tensor, target: PseudoTarget, kind: str) -> torch.Tensor:
    """Loss of ``logits`` ``[B, K, *S]`` against a pseudo-target.

    ``"ce"``: ``sum(mask * CE) / N`` over all N pixels (FixMatch Eq. 4); ``"dice"``: the SSL4MIS soft Dice
    (squared denominators, all classes, pooled over the batch) with its sums restricted to the masked pixels
    (UniMatch's ``DiceLoss(..., ignore=conf < tau)``); ``"ce+dice"``: their sum (SSL4MIS FixMatch).
    """
    terms = []
    if kind in ("ce", "ce+dice"):
        ce = F.cross_entropy(logits, target.labels, reduction="none")
        terms.append((ce * target.mask.to(ce.dtype)).sum() / ce.numel())
    if kind in ("dice", "ce+dice"):
        terms.append(soft_dice_loss(logits, target.labels, squared=True, mask=target.mask))
    if not terms:
        raise ValueError(f"params.unsup_loss must be one of {UNSUP_LOSSES}, got {kind!r}")
    return sum(terms[1:], terms[0])


def complementary_loss(logits_s: torch.Tensor, probs_w: torch.Tensor) -> torch.Tensor:
    """SSL4MIS FixMatch's negative-learning term ``a^2 CE(1 - p_s, argmin_k p_w)`` (see the module docstring).

    ``logits_s`` ``[B, K, *S]`` strong-view logits; ``probs_w`` ``[B, K, *S]`` weak-view probabilities (detached).
    ``a = mean_{b,k} (1 - H(p_s[b, k] / sum) / log N)`` with the entropy over the N pixels; not detached.
    """
    p_s = logits_s.float().softmax(1)
    spatial = p_s.flatten(2)  # [B, K, N]
    q = spatial / spatial.sum(-1, keepdim=True)
    entropy = -(q * q.clamp_min(1e-12).log()).sum(-1)
    a = (1.0 - entropy / math.log(spatial.shape[-1])).mean()
    comp_labels = probs_w.detach().argmin(1)
    return a * (a * F.cross_entropy(1.0 - p_s, comp_labels))


@dataclass
class FixMatchConfig(StrongAugmentConfig, ConsistencyConfig):
    """Options of FixMatch (defaults: the paper's rule and weights, SSL4MIS's strong view)."""

    #: lambda_u, the weight of the unsupervised term (paper: 1; SSL4MIS: 0.1 with a sigmoid ramp-up)
    weight: float = 1.0
    #: ramp of lambda_u (paper: "none", constant)
    ramp: str = "none"
    #: confidence threshold tau (paper: 0.95; SSL4MIS script: 0.8 on its normalised probabilities)
    threshold: float = 0.95
    #: pseudo-label rule: "max-prob" (paper: max_k p_k >= tau) or "ssl4mis" (min-max normalised, else background)
    confidence: str = "max-prob"
    #: loss of the strong view: "ce" (paper), "dice" (UniMatch's medical code) or "ce+dice" (SSL4MIS)
    unsup_loss: str = "ce"
    #: SSL4MIS's complementary (negative-learning) term with its adaptive sample weight
    complementary: bool = False
    #: factor of the supervised loss (SSL4MIS FixMatch: 2 x ce+dice-ssl4mis = CE + Dice; UniMatch: 0.5)
    sup_weight: float = 1.0
    #: strong view: SSL4MIS FixMatch's ColorJitter(0.8, 0.8, ...) with p = 1, no blur, no CutMix
    jitter_p: float = 1.0
    brightness: float = 0.8
    contrast: float = 0.8
    blur_p: float = 0.0
    cutmix_p: float = 0.0


#: HiLab-git/SSL4MIS code/train_fixmatch_standard_augs.py: --conf_thresh 0.8 on min-max normalised probabilities,
#: CE + Dice + complementary term, supervised CE + Dice, 0.1 x sigmoid_rampup(iter // 150, 200), WeakStrongAugment
SSL4MIS_FIXMATCH: dict[str, Any] = {
    "dataset.augment": "flip-rot",
    "params.threshold": 0.8,
    "params.confidence": "ssl4mis",
    "params.unsup_loss": "ce+dice",
    "params.complementary": True,
    "params.sup_weight": 2.0,
    "params.ramp": "sigmoid",
    "params.jitter_p": 1.0,
    "params.brightness": 0.8,
    "params.contrast": 0.8,
    "params.blur_p": 0.0,
    "params.cutmix_p": 0.0,
}


@METHODS.register("fixmatch")
class FixMatch(ConsistencyMethod):
    """FixMatch (NeurIPS 2020): CE of the strong view against the weak view's confident arg-max."""

    Config = FixMatchConfig
    dims = (2,)
    presets = {
        "smoke": {},
        "cpu": {},
        # on top of the global ssl4mis recipe (SGD 0.01 poly, 12 + 12 in one forward, 30,000 iterations, 0.1 x sigmoid
        # ramp in 200 steps of 150 iterations)
        "ssl4mis": SSL4MIS_FIXMATCH,
    }

    def __init__(self, cfg: Any, ctx: MethodContext) -> None:
        super().__init__(cfg, ctx)
        c = self.cfg
        if not 0.0 <= c.threshold <= 1.0:
            raise ValueError(f"params.threshold must be in [0, 1], got {c.threshold}")
        if c.confidence not in CONFIDENCE_RULES:
            raise ValueError(f"params.confidence must be one of {CONFIDENCE_RULES}, got {c.confidence!r}")
        if c.unsup_loss not in UNSUP_LOSSES:
            raise ValueError(f"params.unsup_loss must be one of {UNSUP_LOSSES}, got {c.unsup_loss!r}")
        if c.sup_weight < 0:
            raise ValueError(f"params.sup_weight must be >= 0, got {c.sup_weight}")
        check_strong_config(c)

    # -- pieces shared with UniMatch --------------------------------------------------------------------------------

    def weak_target(self, logits_w: torch.Tensor) -> PseudoTarget:
        """Pseudo-target of the weak view's logits (no gradient)."""
        with torch.no_grad():
            return pseudo_labels(logits_w.detach().float().softmax(1), self.cfg.threshold, self.cfg.confidence)

    def partner_target(self, x_w: torch.Tensor) -> PseudoTarget:
        """Pseudo-target of each sample's CutMix partner, the previous sample of the batch (``roll(1)``): the
        student's prediction in eval mode (running BatchNorm statistics, no dropout), no gradient — UniMatch
        predicts its mix images with ``model.eval()``."""
        with torch.no_grad(), stochastic_mode(self.student, dropout=False, bn="running"):
            probs = self.student(x_w).float().softmax(1)
        target = pseudo_labels(probs, self.cfg.threshold, self.cfg.confidence)
        return PseudoTarget(*(t.roll(1, 0) for t in target))

    def strong_view(
        self, x_w: torch.Tensor, target: PseudoTarget, partner: PseudoTarget | None, gen: torch.Generator
    ) -> tuple[torch.Tensor, PseudoTarget, torch.Tensor]:
        """A strong view of ``x_w`` ``[B, 1, H, W]`` and its target: photometric ops, then (``cutmix_p > 0``) each
        sample's CutMix box filled from the previous sample's strong view, its target from ``partner``.

        Returns (image, target, box ``[B, H, W]`` bool).
        """
        c = self.cfg
        x_s = strong_augment(x_w, gen, c)
        if partner is None or c.cutmix_p <= 0:
            return x_s, target, torch.zeros_like(target.mask)
        size = (x_s.shape[-2], x_s.shape[-1])
        box = cutmix_boxes(x_s.shape[0], size, gen, p=c.cutmix_p, area=c.cutmix_area, ratio=c.cutmix_ratio)
        box = box.to(x_s.device)
        return mix_with_mask(x_s, x_s.roll(1, 0), box), target.mixed(partner, box), box

    def compose(
        self,
        sup: dict[str, torch.Tensor],
        unsup: dict[str, torch.Tensor],
        shares: dict[str, float],
        weight: float,
        **logs: Any,
    ) -> dict[str, torch.Tensor]:
        """``loss = sup_weight * sup/total + weight * sum_k shares[k] * unsup[k]``; terms logged un-weighted."""
        loss = self.cfg.sup_weight * sup["sup/total"]
        for key, term in unsup.items():
            loss = loss + weight * shares.get(key, 1.0) * term
        out: dict[str, Any] = {"loss": loss, **sup, **unsup}
        out["weight/unsup"] = torch.tensor(float(weight))
        out["weight/sup"] = torch.tensor(float(self.cfg.sup_weight))
        out.update({k: v if torch.is_tensor(v) else torch.tensor(float(v)) for k, v in logs.items()})
        return out

    def supervised_only(self, batch_l: Batch) -> dict[str, torch.Tensor]:
        sup = self.supervised(self.student(batch_l.image), batch_l.label)
        return {"loss": self.cfg.sup_weight * sup["sup/total"], **sup}

    # -- step -------------------------------------------------------------------------------------------------------

    def training_step(self, batch_l: Batch, batch_u: Batch | None, step: StepInfo) -> dict[str, torch.Tensor]:
        if batch_u is None:
            return self.supervised_only(batch_l)
        c = self.cfg
        gen = step_generator()
        logits_l, logits_w = self.student_forward(batch_l, batch_u)
        assert logits_w is not None
        sup = self.supervised(logits_l, batch_l.label)
        target = self.weak_target(logits_w)
        partner = self.partner_target(batch_u.image) if c.cutmix_p > 0 else None
        x_s, target_s, _ = self.strong_view(batch_u.image, target, partner, gen)
        if c.joint_bn:  # the reference's strong pass: labelled and unlabelled strong views together
            x_sl = strong_augment(batch_l.image, gen, c)
            logits_sl, logits_s = self.student(torch.cat([x_sl, x_s])).split([x_sl.shape[0], x_s.shape[0]])
        else:
            logits_sl, logits_s = None, self.student(x_s)
        unsup = {"unsup/strong": pseudo_label_loss(logits_s, target_s, c.unsup_loss)}
        if c.complementary:
            with torch.no_grad():
                probs_w = logits_w.detach().float().softmax(1)
                if logits_sl is not None:
                    probs_w = torch.cat([logits_l.detach().float().softmax(1), probs_w])
            strong = logits_s if logits_sl is None else torch.cat([logits_sl, logits_s])
            unsup["unsup/complementary"] = complementary_loss(strong, probs_w)
        logs = {"mask/certain_frac": target_s.mask.float().mean()}
        return self.compose(sup, unsup, {}, self.unsup_weight(step), **logs)
