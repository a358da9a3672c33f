"""Mean Teacher: consistency between the student and an exponential-moving-average teacher.

Paper: A. Tarvainen and H. Valpola, "Mean teachers are better role models: Weight-averaged consistency targets
improve semi-supervised deep learning results", NeurIPS 2017 (arXiv:1703.01780; github.com/CuriousAI/mean-teacher).
The "MT" rows of CoraNet Tables II, III, VII and IX (Shi et al., IEEE TMI 2021, doi:10.1109/TMI.2021.3124413),
which adapts it to segmentation with the U-Net as UA-MT does. Segmentation reference: UA-MT
(github.com/yulequan/UA-MT) and SSL4MIS ``train_mean_teacher_2D.py`` (github.com/HiLab-git/SSL4MIS).

Method (as the segmentation references implement it):

* teacher theta' = beta theta' + (1 - beta) theta after every optimiser step, beta = min(1 - 1/(t + 1), 0.99)
  (:class:`~ssl_bench.training.ema.EMATeacher`, warm-up on by default; CoraNet §IV-A: beta = 0.99);
* student input: the (augmented) batch; teacher input: the same batch + clamp(N(0, 0.1^2), -0.2, 0.2) noise; both
  networks run with their dropout (the ``paper`` preset: p = 0.5 on the U-Net bottleneck and last feature, the
  positions of the reference V-Net's dropout); the teacher pass uses batch statistics (the reference keeps the
  teacher in ``train()``);
* loss = CE (or 0.5 (CE + Dice)) on labelled pixels + w(t) * softmax-MSE(student, teacher) on unlabelled pixels
  (``consistency_on="all"``: on every pixel of the batch, as the original Mean Teacher);
* w(t) = 0.1 * sigmoid ramp-up (UA-MT and SSL4MIS: 0.1 * sigmoid_rampup(iter // 150, 40 or 200)).

Deviations:

* dropout: 0.5 in the ``paper`` preset (the reference V-Net); none by default (``smoke``/``cpu``): Dropout2d(0.5)
  drops half the channels of the narrow cpu-preset U-Nets (width 8-16), which cost 0.14 mean Dice after 150 steps
  on the phantom (supervised U-Net, width 16: 0.52 -> 0.38). SSL4MIS's 2D U-Net has no dropout on the last feature.
* the ramp length is a fraction of the stage (``rampup``, default 0.4); the references ramp over the whole run
  (UA-MT: 40 x 150 = 6000 = all iterations; SSL4MIS: 200 x 150 = 30000 = all): the ``paper`` preset sets
  ``rampup=1.0``. SSL4MIS also switches the consistency off for the first 1000 iterations (``delay`` can do this).
* the teacher's BatchNorm running statistics are copied from the student (EMATeacher), and its training-time
  passes never update them (the reference's teacher passes update them; nothing reads them there).
* labelled and unlabelled images go through the student in one forward (``joint_bn``, the default), as the
  references concatenate them; the ``cpu`` preset uses separate passes (``joint_bn=false``, BatchNorm statistics
  per batch, the setting of its committed records). Measured at ``--preset cpu-bench`` over 3 seeds
  (``benchmarks/acdc_bn_check.yaml``), the two score the same within seed noise (see
  :meth:`~ssl_bench.training.consistency.ConsistencyMethod.forward_split`).
* the teacher sees noise only; the original Mean Teacher also perturbs the student (its augmentation) — here the
  student sees the trainer's augmentation, the teacher the same augmented image plus noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ssl_bench.core.method import Batch, MethodContext, StepInfo
from ssl_bench.core.registry import METHODS
from ssl_bench.training.consistency import ConsistencyConfig, ConsistencyMethod, mean_probs, softmax_mse
from ssl_bench.training.ema import EMATeacher

CONSISTENCY_ON = ("unlabeled", "all")
EVAL_MODELS = ("student", "teacher")


@dataclass
class MeanTeacherConfig(ConsistencyConfig):
    """Options of Mean Teacher (defaults: UA-MT/SSL4MIS values; ramp length as a fraction of the stage)."""

    #: maximum consistency weight (UA-MT, SSL4MIS: 0.1)
    weight: float = 0.1
    #: dropout of the U-Net bottleneck and last feature (None: model.dropout; the reference V-Net and the `paper`
    #: preset: 0.5)
    dropout: float | None = None
    #: EMA decay beta (CoraNet §IV-A, UA-MT: 0.99)
    ema_decay: float = 0.99
    #: beta_t = min(1 - 1/(t + 1), beta) (UA-MT, Mean Teacher code)
    ema_warmup: bool = True
    #: Gaussian noise on the teacher's input: std and clamp (UA-MT: 0.1, 0.2)
    noise_std: float = 0.1
    noise_clip: float | None = 0.2
    #: pixels of the consistency term: "unlabeled" (UA-MT, SSL4MIS) or "all" (labelled too; original MT)
    consistency_on: str = "unlabeled"
    #: model used by predict(): "student" (UA-MT, SSL4MIS test the student) or "teacher"
    eval_model: str = "student"


@METHODS.register("mean-teacher")
class MeanTeacher(ConsistencyMethod):
    """Mean Teacher (NeurIPS 2017): softmax-MSE to an EMA teacher with noisy input, sigmoid ramp-up."""

    Config = MeanTeacherConfig
    presets = {
        "smoke": {},
        "cpu": {},
        # UA-MT/SSL4MIS ramp the weight over the whole run; the reference V-Net's dropout
        "paper": {"params.rampup": 1.0, "params.dropout": 0.5},
        # SSL4MIS train_mean_teacher_2D.py: consistency off for iterations < 1000 of 30000 (the ramp not shifted)
        "ssl4mis": {"params.mute": 1000 / 30000},
    }

    def __init__(self, cfg: Any, ctx: MethodContext, **kwargs: Any) -> None:
        super().__init__(cfg, ctx, **kwargs)
        c = self.cfg
        if c.consistency_on not in CONSISTENCY_ON:
            raise ValueError(f"params.consistency_on must be one of {CONSISTENCY_ON}, got {c.consistency_on!r}")
        if c.eval_model not in EVAL_MODELS:
            raise ValueError(f"params.eval_model must be one of {EVAL_MODELS}, got {c.eval_model!r}")
        if c.noise_std < 0:
            raise ValueError(f"params.noise_std must be >= 0, got {c.noise_std}")
        self.teacher = EMATeacher(self.student, c.ema_decay, warmup=c.ema_warmup)

    def teacher_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax of one teacher pass on ``x`` + noise, with dropout (no gradient)."""
        c = self.cfg
        return mean_probs(self.teacher.module, x, 1, noise_std=c.noise_std, noise_clip=c.noise_clip, dropout=True)

    def consistency_inputs(
        self, batch_l: Batch, batch_u: Batch, logits_l: torch.Tensor, logits_u: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(student logits, teacher input) of the pixels the consistency term covers."""
        if self.cfg.consistency_on == "all":
            return torch.cat([logits_l, logits_u]), torch.cat([batch_l.image, batch_u.image])
        return logits_u, batch_u.image

    def training_step(self, batch_l: Batch, batch_u: Batch | None, step: StepInfo) -> dict[str, torch.Tensor]:
        if batch_u is None:
            return self.supervised_only(batch_l)
        logits_l, logits_u = self.student_forward(batch_l, batch_u)
        assert logits_u is not None
        sup = self.supervised(logits_l, batch_l.label)
        student, x_t = self.consistency_inputs(batch_l, batch_u, logits_l, logits_u)
        unsup = {"unsup/consistency": softmax_mse(student, self.teacher_probs(x_t))}
        return self.combine(sup, unsup, self.unsup_weight(step))

    def after_optimizer_step(self, step: StepInfo) -> None:
        self.teacher.update(self.student, step.step)

    def inference_module(self) -> nn.Module:
        return self.teacher.module if self.cfg.eval_model == "teacher" else self.student

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.inference_module()(x)
