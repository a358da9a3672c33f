"""BCP: Bidirectional Copy-Paste in a Mean Teacher, after a labelled-only copy-paste pre-training.

Paper: Y. Bai, D. Chen, Q. Li, W. Shen, Y. Wang, "Bidirectional Copy-Paste for Semi-Supervised Medical Image
Segmentation", CVPR 2023 (arXiv:2305.00673). Reference implementation: github.com/DeepMed-Lab-ECNU/BCP,
``code/ACDC_BCP_train.py`` (``pre_train``, ``self_train``, ``generate_mask``, ``mix_loss``, ``get_ACDC_masks``,
``get_ACDC_2DLargestCC``, ``update_model_ema``) and ``code/utils/losses.py`` (``DiceLoss`` with a mask). The
copy-paste pieces live in :mod:`ssl_bench.training.copy_paste` (shared with ABD).

Method (the equation numbers are this docstring's; the paper PDF was not readable here to check its numbering).
Each labelled batch is split into halves (l_a, y_a), (l_b, y_b), each unlabelled batch into u_a, u_b (the reference
splits 12 + 12 into 6 + 6 + 6 + 6); M ``[*S]`` is 1 except a zero-valued box of 2/3 of each side, at a uniform
position, one per step; ``mix(a, b, M) = a M + b (1 - M)`` keeps a's background and pastes b's box.

* Pre-training (stage ``pretrain``, labelled only; ``pre_train``):

  (1) x = mix(l_a, l_b, M),  L_pre = ( D(f(x), y_a; M) + D(f(x), y_b; 1 - M) + CE(...; M) + CE(...; 1 - M) ) / 2

  with D the masked squared-denominator Dice over all classes pooled over the batch (smoothing 1e-10) and CE the
  masked mean cross-entropy (see :mod:`~ssl_bench.training.copy_paste`).
* Self-training (stage ``self-train``; ``self_train``): the teacher theta' and the student both start from the
  pre-trained student (2); pseudo-labels from the teacher on the *un-mixed* unlabelled halves, arg-max then the
  largest connected component per class (3), the two mixed images (4) and the mixed loss (5) with the
  pseudo-labelled pixels weighted by alpha = ``u_weight`` = 0.5:

  (2) theta' <- theta at the first self-training step
  (3) p_a = LCC(argmax f'(u_a)),  p_b = LCC(argmax f'(u_b))
  (4) x_in = mix(u_a, l_a, M)  (labelled foreground, unlabelled background),
      x_out = mix(l_b, u_b, M)  (unlabelled foreground, labelled background)
  (5) L = 1/2 [ alpha D(f(x_in), p_a; M) + D(f(x_in), y_a; 1 - M) + D(f(x_out), y_b; M) + alpha D(f(x_out), p_b; 1 - M)
              + the same four CE terms ]
  (6) theta' <- beta theta' + (1 - beta) theta after every self-training step, beta = 0.99, no warm-up.

  The teacher's two passes (u_a, u_b) and the student's two passes (x_in, x_out) are separate BatchNorm batches,
  as in the reference. Logged split: ``sup/dice``, ``sup/ce`` (the ground-truth terms), ``unsup/dice``,
  ``unsup/ce`` (the pseudo-label terms, weighted by ``weight/unsup`` = alpha / 2 in ``loss``).
* The student is tested (the reference tests the self-trained student).

Presets: ``ssl4mis`` is the reference's ACDC recipe: 10,000 pre-training + 30,000 self-training iterations
(``params.pretrain_epochs`` 50 and ``trainer.epochs`` 200 epochs of 200 iterations), batch 24 = 12 labelled + 12
unlabelled, SGD lr 0.01 momentum 0.9 weight decay 1e-4 at a **constant** learning rate (the reference never decays
it, unlike SSL4MIS's poly), alpha 0.5, beta 0.99, ratio 2/3, its U-Net (``ssl4mis-unet``), validation every 200
iterations. ``smoke``/``cpu`` and ``cpu-bench`` (the ``ssl4mis`` entry without its lengths): a quarter of
``trainer.epochs`` pre-trains (the reference's 10k : 30k), so the whole run has the other methods' length.

Deviations from the reference:

* the teacher and the student start self-training from the *last* pre-trained student; the reference reloads both
  from the pre-training checkpoint with the best validation Dice (``load_net``/``load_net_opt``);
* one optimiser runs through both stages (its momentum carries over); the reference builds a new SGD in
  ``self_train`` and loads the pre-training checkpoint's optimiser state into it, which is the same state when the
  best pre-training checkpoint is the last;
* EMA: the teacher's BatchNorm running statistics are copied from the student
  (:class:`~ssl_bench.training.ema.EMATeacher`); ``update_model_ema`` averages the whole ``state_dict``, buffers
  included. The teacher's passes here use batch statistics with dropout on (``teacher_mode="train"``, the
  reference's ``ema_model.train()``) and never update running statistics, so these buffers do not enter training;
* the box is drawn with the torch RNG (seeded by the trainer at every step), not ``np.random``; the largest
  component uses ``scipy.ndimage.label`` with full connectivity (skimage ``label``'s default);
* any number of classes (the reference hard-codes ACDC's classes 1..3 and ``DiceLoss(n_classes=4)``) and 3D
  inputs (a cuboid box of 2/3 of each side, 3D components); BCP's 3D LA/Pancreas scripts (other schedules and
  losses) are not reproduced;
* the reference's pre-training draws 12 labelled + 12 unlabelled images per step and uses only the labelled; here
  the pre-training stage draws no unlabelled batch. Its ``consistency_weight`` is computed but unused: not here;
* model selection is the trainer's (``trainer.select``; the ``ssl4mis`` preset reports the best-val and the last
  model), and its best-val search spans both stages; the reference keeps the best-val checkpoint of each stage and
  tests the self-training one;
* ``trainer.epochs`` counts both stages (as for CoraNet), so ``--set trainer.epochs`` changes the self-training
  length only when ``params.pretrain_epochs`` is fixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ssl_bench.core.method import Batch, Method, MethodContext, Stage, StepInfo
from ssl_bench.core.registry import METHODS
from ssl_bench.training.consistency import stochastic_mode
from ssl_bench.training.copy_paste import (
    BCP_RATIO,
    bidirectional_loss,
    bidirectional_mix,
    box_keep_mask,
    check_pairs,
    halves,
    largest_component,
    mix,
    region_losses,
)
from ssl_bench.training.ema import EMATeacher
from ssl_bench.training.strong_augment import step_generator

TEACHER_MODES = ("train", "eval")


@dataclass
class BCPConfig:
    """Options of BCP (defaults: DeepMed-Lab-ECNU/BCP ``code/ACDC_BCP_train.py``)."""

    #: labelled-only copy-paste pre-training epochs, counted in trainer.epochs (None: `pretrain_fraction` of it)
    pretrain_epochs: int | None = None
    #: fraction of trainer.epochs that pre-trains when `pretrain_epochs` is None (reference: 10k of 10k + 30k)
    pretrain_fraction: float = 0.25
    #: side of the pasted box as a fraction of each image side (reference generate_mask: 2/3)
    mask_ratio: float = BCP_RATIO
    #: weight alpha of the pseudo-labelled pixels in the mixed loss (reference --u_weight: 0.5)
    u_weight: float = 0.5
    #: EMA decay beta of the teacher (reference update_model_ema: 0.99)
    ema_decay: float = 0.99
    #: beta_t = min(1 - 1/(t + 1), beta) from the first self-training step (reference: off, constant 0.99)
    ema_warmup: bool = False
    #: largest connected component per class on the teacher's arg-max (reference get_ACDC_masks(nms=1): on)
    largest_cc: bool = True
    #: teacher passes: "train" (dropout on, batch statistics: the reference's ema_model.train()) or "eval"
    teacher_mode: str = "train"


@METHODS.register("bcp")
class BCP(Method):
    """BCP (CVPR 2023): copy-paste pre-training, then a mean teacher with bidirectional copy-paste."""

    Config = BCPConfig
    config_prefix = "bcp"
    presets = {
        "smoke": {},
        "cpu": {},
        # the reference's ACDC run: 10k pre-training + 30k self-training iterations (x 200 per epoch), constant lr
        "ssl4mis": {
            "params.pretrain_epochs": 50,
            "trainer.epochs": 200,
            "optim.schedule": "constant",
            "params.u_weight": 0.5,
            "params.mask_ratio": BCP_RATIO,
            "params.ema_decay": 0.99,
            "params.ema_warmup": False,
            "params.largest_cc": True,
        },
    }

    def __init__(self, cfg: Any, ctx: MethodContext) -> None:
        super().__init__(cfg, ctx)
        c = self.cfg
        if c.teacher_mode not in TEACHER_MODES:
            raise ValueError(f"params.teacher_mode must be one of {TEACHER_MODES}, got {c.teacher_mode!r}")
        if not 0.0 < c.mask_ratio < 1.0:
            raise ValueError(f"params.mask_ratio must be in (0, 1), got {c.mask_ratio}")
        if c.u_weight < 0:
            raise ValueError(f"params.u_weight must be >= 0, got {c.u_weight}")
        if not 0.0 <= c.pretrain_fraction < 1.0:
            raise ValueError(f"params.pretrain_fraction must be in [0, 1), got {c.pretrain_fraction}")
        if c.pretrain_epochs is not None and c.pretrain_epochs < 0:
            raise ValueError(f"params.pretrain_epochs must be >= 0, got {c.pretrain_epochs}")
        if c.pretrain_epochs is None:
            self.pretrain_epochs = max(1, round(c.pretrain_fraction * ctx.epochs)) if c.pretrain_fraction else 0
        else:
            self.pretrain_epochs = c.pretrain_epochs
        if self.pretrain_epochs >= ctx.epochs:
            raise ValueError(
                f"pre-training ({self.pretrain_epochs} epochs) must be shorter than trainer.epochs ({ctx.epochs}), "
                "which counts pre-training and self-training together"
            )
        self.student = ctx.build_backbone()
        self.teacher = EMATeacher(self.student, c.ema_decay, warmup=c.ema_warmup)

    @classmethod
    def check_config(cls, cfg: Any, dims: int) -> None:
        check_pairs(cfg.trainer.batch_size, cfg.trainer.unlabeled_batch_size)

    # -- schedule -------------------------------------------------------------------------------------------------

    def stages(self) -> list[Stage]:
        pre = self.pretrain_epochs
        stages = [Stage("pretrain", pre, unlabeled=False)] if pre else []
        return [*stages, Stage("self-train", self.ctx.epochs - pre)]

    # -- pieces ---------------------------------------------------------------------------------------------------

    def box(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """This step's mask M ``[*S]`` for images ``x [B, C, *S]``."""
        return box_keep_mask(x.shape[2:], self.cfg.mask_ratio, generator=generator, device=x.device)

    @torch.no_grad()
    def pseudo_label(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 3: the teacher's arg-max on ``x [B, C, *S]`` (one pass), then its largest component per class."""
        train = self.cfg.teacher_mode == "train"
        with stochastic_mode(self.teacher.module, dropout=train, bn="batch" if train else "running") as net:
            pl = net(x).argmax(1)
        return largest_component(pl, self.spec.num_classes) if self.cfg.largest_cc else pl

    def pretrain_step(self, batch_l: Batch) -> dict[str, torch.Tensor]:
        """Eq. 1 on the labelled batch: the box of half b pasted onto the background of half a."""
        assert batch_l.label is not None, "labelled batch without labels"
        check_pairs(batch_l.image.shape[0])
        (l_a, l_b), (y_a, y_b) = halves(batch_l.image), halves(batch_l.label)
        keep = self.box(l_a, step_generator())
        t = region_losses(self.student(mix(l_a, l_b, keep)), y_a, y_b, keep)
        out = {"sup/dice": t["dice_bg"] + t["dice_fg"], "sup/ce": t["ce_bg"] + t["ce_fg"]}
        out["sup/total"] = 0.5 * (out["sup/dice"] + out["sup/ce"])
        return {"loss": out["sup/total"], **out}

    def copy_paste(
        self, x_l: torch.Tensor, y_l: torch.Tensor, x_u: torch.Tensor, keep: torch.Tensor
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Eq. 3-4 for labelled ``x_l [B, C, *S]``, ``y_l [B, *S]`` and unlabelled ``x_u``: the mixed images
        ``(x_in, x_out)`` and the targets ``(y_a, y_b, p_a, p_b)`` of Eq. 5."""
        check_pairs(x_l.shape[0], x_u.shape[0])
        (l_a, l_b), (y_a, y_b), (u_a, u_b) = halves(x_l), halves(y_l), halves(x_u)
        p_a, p_b = self.pseudo_label(u_a), self.pseudo_label(u_b)  # two teacher passes, as the reference
        return bidirectional_mix(l_a, u_a, l_b, u_b, keep), (y_a, y_b, p_a, p_b)

    # -- training -------------------------------------------------------------------------------------------------

    def start_self_training(self) -> None:
        """Eq. 2: the teacher becomes the pre-trained student."""
        self.teacher.reset_to(self.student)

    def on_stage_start(self, stage: Stage, step: StepInfo) -> None:
        if stage.name == "self-train":
            self.start_self_training()

    def training_step(self, batch_l: Batch, batch_u: Batch | None, step: StepInfo) -> dict[str, torch.Tensor]:
        if batch_u is None or step.stage == "pretrain":
            return self.pretrain_step(batch_l)
        assert batch_l.label is not None, "labelled batch without labels"
        keep = self.box(batch_l.image, step_generator())
        (x_in, x_out), targets = self.copy_paste(batch_l.image, batch_l.label, batch_u.image, keep)
        out = bidirectional_loss(self.student(x_in), self.student(x_out), *targets, keep, self.cfg.u_weight)
        out["weight/unsup"] = torch.tensor(0.5 * self.cfg.u_weight)
        return out

    def after_optimizer_step(self, step: StepInfo) -> None:
        if step.stage != "pretrain":  # Eq. 6
            self.teacher.update(self.student, step.stage_step)
