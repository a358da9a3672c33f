"""UA-MT: Mean Teacher whose consistency is restricted to the pixels an uncertainty estimator calls certain.

Paper: L. Yu, S. Wang, X. Li, C.-W. Fu, P.-A. Heng, "Uncertainty-aware Self-ensembling Model for Semi-supervised 3D
Left Atrium Segmentation", MICCAI 2019 (arXiv:1907.07034). Reference code: github.com/yulequan/UA-MT
(``train_LA_meanteacher_certainty_unlabel.py``) and SSL4MIS ``train_uncertainty_aware_mean_teacher_2D.py``.
The "UA-MT" rows of CoraNet Tables II, III, V and VII (Shi et al., IEEE TMI 2021, doi:10.1109/TMI.2021.3124413).

Method: :mod:`Mean Teacher <ssl_bench.methods.mean_teacher>` (EMA 0.99 with warm-up, noisy teacher input,
softmax-MSE, w(t) = 0.1 * sigmoid ramp-up) where the consistency is averaged over the certain pixels only
(``sum(mask * dist) / |mask|``). The mask comes from ``--estimator`` (default ``entropy``, the paper's: T = 8 noisy
dropout passes of the teacher, predictive entropy below (0.75 -> 1) * H_max, see
:mod:`ssl_bench.methods.estimators`); ``--estimator none`` is the no-mask control (UA-MT issue #3), and any
registered estimator (softmax-threshold, mc-dropout, tta, aleatoric, cr-disagreement, plugins) can be swapped in
with its options in ``params.estimator_options``. The estimator inspects the teacher.

Stochasticity of the teacher passes: input noise *and* dropout. The LA reference builds its V-Net with
``has_dropout=True`` (Dropout3d(0.5) on the bottleneck and after the last decoder block) and keeps the teacher in
``train()``, so its 8 passes sample dropout as well as noise; SSL4MIS's U-Net has encoder dropout and does the same.
Our U-Net has dropout at the same two places: the ``paper`` preset sets ``dropout=0.5`` as the reference; the
smoke/cpu presets build no dropout (see :mod:`~ssl_bench.methods.mean_teacher`), so their passes are noise-only, and
``estimator_options={"dropout": false}`` gives noise-only passes with any backbone. An estimator that needs dropout
(``mc-dropout``) gets it through ``required_dropout()``.

Deviations:

* H_max defaults to ln K (``entropy_max="ln-k"``, the maximum entropy of K classes); the reference uses ln 2 for any
  K (``entropy_max="ln-2"``), which on 4-class ACDC puts the threshold at 0.375..0.5 of the maximum.
* the consistency target is one separate noisy teacher pass (``target="teacher-pass"``, the reference);
  ``target="estimate"`` uses the estimator's mean probabilities instead (saves a pass).
* consistency normalised by the mask's pixel count, averaged over classes (``consistency_norm="mean"``); SSL4MIS's
  4-class version divides its channel *sum* by 2 |mask| (twice our value for K = 4; equal for K = 2):
  ``consistency_norm="ssl4mis"``, which the ``ssl4mis`` and ``cpu-bench`` presets set.
* ramp lengths are fractions of the stage (``rampup``; the ``paper`` preset ramps over the whole run as the
  reference, whose entropy threshold also ramps over all iterations: the estimator's ``rampup=1.0``).
* one student forward over labelled and unlabelled images (``joint_bn``, the default), as the reference
  concatenates them; the ``cpu`` preset uses separate forwards (see :mod:`~ssl_bench.methods.mean_teacher`).
* with ``--estimator aleatoric`` the student gets a ``logvar`` head trained with the estimator's
  sampled-softmax likelihood on labelled pixels (``sup/aleatoric``); UA-MT uses it only as a mask source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ssl_bench.core.method import Batch, MethodContext, StepInfo
from ssl_bench.core.registry import METHODS
from ssl_bench.core.uncertainty import UncertaintyEstimator, build_estimator
from ssl_bench.methods.mean_teacher import MeanTeacher, MeanTeacherConfig
from ssl_bench.training.consistency import softmax_mse

TARGETS = ("teacher-pass", "estimate")
CONSISTENCY_NORMS = ("mean", "ssl4mis")


@dataclass
class UAMTConfig(MeanTeacherConfig):
    """Options of UA-MT (Mean Teacher's plus the estimator)."""

    #: uncertainty estimator giving the certain mask (`ssl-bench list estimators`)
    estimator: str = "entropy"
    #: options of the estimator (its Config fields), e.g. {"T": 8, "entropy_max": "ln-2"}
    estimator_options: dict[str, Any] = field(default_factory=dict)
    #: consistency target: "teacher-pass" (one noisy teacher pass, the reference) or "estimate" (the estimator's
    #: mean probabilities)
    target: str = "teacher-pass"
    #: normalisation of the masked consistency: "mean" (mean over classes and certain pixels, ours) or "ssl4mis"
    #: (the class-channel sum divided by 2 |mask|, SSL4MIS's 2D script and the binary UA-MT; = "mean" x K / 2)
    consistency_norm: str = "mean"


@METHODS.register("ua-mt")
class UAMT(MeanTeacher):
    """UA-MT (MICCAI 2019): Mean Teacher on certain pixels; entropy of 8 noisy teacher passes (--estimator)."""

    Config = UAMTConfig
    presets = {
        "smoke": {},
        "cpu": {},
        # the reference ramps the consistency weight (and the entropy threshold) over the whole run; V-Net dropout
        "paper": {"params.rampup": 1.0, "params.dropout": 0.5},
        # SSL4MIS train_uncertainty_aware_mean_teacher_2D.py: threshold (0.75 -> 1) x ln 2 ramped over the whole run,
        # T = 8 passes with the U-Net's encoder dropout and noise; no 1000-iteration mute (Mean Teacher's script only)
        # T = 8 as 4 forwards of 2 B images (per_forward 2), the 4-class consistency normalised as its script does
        # (cpu-bench derives the same entry)
        "ssl4mis": {
            "params.estimator_options": {"entropy_max": "ln-2", "rampup": 1.0, "T": 8, "per_forward": 2},
            "params.consistency_norm": "ssl4mis",
        },
    }

    def __init__(self, cfg: Any, ctx: MethodContext) -> None:
        cfg = cfg if cfg is not None else self.Config()
        if cfg.target not in TARGETS:
            raise ValueError(f"params.target must be one of {TARGETS}, got {cfg.target!r}")
        if cfg.consistency_norm not in CONSISTENCY_NORMS:
            raise ValueError(
                f"params.consistency_norm must be one of {CONSISTENCY_NORMS}, got {cfg.consistency_norm!r}"
            )
        estimator = build_estimator(cfg.estimator, cfg.estimator_options, ctx.spec.num_classes)
        required = float(estimator.required_dropout())
        super().__init__(cfg, ctx, extra_heads=estimator.required_heads(), min_dropout=required)
        self.estimator: UncertaintyEstimator = estimator
        self._head_loss = estimator.head_loss if estimator.required_heads() else None

    def _forward(self, batch_l: Batch, batch_u: Batch | None) -> tuple[torch.Tensor, torch.Tensor | None, Any]:
        """Student logits; also the labelled part's extra heads when the estimator trains one."""
        if self._head_loss is None:
            logits_l, logits_u = self.student_forward(batch_l, batch_u)
            return logits_l, logits_u, None
        x_u = None if batch_u is None else batch_u.image
        heads_l, heads_u = self.forward_split(self.student.forward_heads, batch_l.image, x_u)
        return heads_l["main"], None if heads_u is None else heads_u["main"], heads_l

    def training_step(self, batch_l: Batch, batch_u: Batch | None, step: StepInfo) -> dict[str, torch.Tensor]:
        logits_l, logits_u, heads_l = self._forward(batch_l, batch_u)
        sup = self.supervised(logits_l, batch_l.label)
        if heads_l is not None:
            sup["sup/aleatoric"] = self._head_loss(heads_l, batch_l.label)
            sup["sup/total"] = sup["sup/total"] + sup["sup/aleatoric"]
        if batch_u is None:
            return {"loss": sup["sup/total"], **sup}
        assert logits_u is not None
        student, x_t = self.consistency_inputs(batch_l, batch_u, logits_l, logits_u)
        umap = self.estimator.estimate(self.teacher.module, x_t, step)
        target = umap.prob if self.cfg.target == "estimate" else self.teacher_probs(x_t)
        consistency = softmax_mse(student, target.detach(), umap.certain)
        if self.cfg.consistency_norm == "ssl4mis":  # sum over K channels / (2 |mask|) = mean over K x K / 2
            consistency = consistency * (student.shape[1] / 2)
        unsup = {"unsup/consistency": consistency}
        logs: dict[str, Any] = {"mask/certain_frac": umap.certain.float().mean()}
        if umap.score is not None:
            logs["uncertainty/mean"] = umap.score.float().mean()
        threshold = getattr(self.estimator, "threshold", None)
        if callable(threshold):
            logs["uncertainty/threshold"] = threshold(step)
        return self.combine(sup, unsup, self.unsup_weight(step), **logs)
