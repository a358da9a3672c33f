"""CoraNet: conservative-radical module (CRM) + separate self-training (C-SN, UC-SN), and its Table IV ablations.

Paper: Y. Shi, J. Zhang, T. Ling, J. Lu, Y. Zheng, Q. Yu, L. Qi, Y. Gao, "Inconsistency-aware Uncertainty
Estimation for Semi-supervised Medical Image Segmentation", IEEE TMI 41(3), 2022 (doi:10.1109/TMI.2021.3124413).
Reference implementation: github.com/koncle/CoraNet (3D V-Net on pancreas only; see ``protocol``).

The method, side by side with the paper (``protocol="paper"``, the default):

* Network: shared encoder E and three branches — D (main), D_con, D_rad — each two 3x3 conv + BN + ReLU and a
  1x1 conv (§IV-A). On the U-Net, D is the U-Net's own last decoder level and D_con, D_rad are freshly initialised
  copies of it on the same input (head kind ``"branch"``, :mod:`ssl_bench.core.backbone`), so E + D is exactly the
  U-Net the baselines train: §III-D2 gives 29.6 M parameters for U-Net and at test, 29.8 M for training; here
  31.04 M and 31.26 M at width 64. Only E + D are used at test time (§III-D2). Backbones without a duplicable last
  block (V-Net, ResNet-18-3D) get two-conv branches on their last feature, the main one included.
* L_crm (Eq. 1) on labelled data: CE(D) + CE_con(D_con) + CE_rad(D_rad), with class costs
  w_con = [alpha, 1] and w_rad = [1, alpha] for [background, foreground], alpha = 5.
* Masks (Eq. 2-6): Y_con, Y_rad from the two heads; uncertain = Y_con XOR Y_rad, certain = 1 - uncertain.
  Pseudo-labels Y_u are the main head's prediction (Eq. 2).
* C-SN (Eq. 7): CE of the main head against Y_u on the certain pixels.
* UC-SN (Eq. 8-9): squared difference between the student's and the EMA teacher's (beta = 0.99) softmax on the
  uncertain pixels. L = L_crm + L_c-sn + L_cnt, weights 1:1 (§III-D3).
* Teacher (Algorithm 1, line 3; Eq. 9): E', D' start self-training as a copy of the pre-trained E, D (the teacher is
  handed the student at the first self-training step, and is not updated during pre-training), then follow Eq. 9
  with a constant beta (no warm-up), in both protocols (the released code loads both networks from the
  pre-training checkpoint and uses a constant 0.99).
* Schedule (Algorithm 1, §IV-A): pre-train on labelled data (30 epochs), then self-train with labelled and
  unlabelled data (100 epochs; ``trainer.epochs`` = 130 counts both, so baselines get the same budget);
  pseudo-labels and masks are recomputed over the whole unlabelled set every 5 epochs (at the end of
  pre-training and every ``refresh_every`` self-training epochs).

Multi-class (§IV-F; the paper gives no detail, this design is ours): the con and rad heads hold one binary
one-vs-rest sub-task per foreground class c (2 channels each, costs as in Eq. 1). A head's K-class map is the
confidence-weighted vote of its sub-tasks: class c wins where its foreground probability p_c exceeds 0.5 and
every other p_c', background where no p_c exceeds 0.5 (argmax over [0.5, p_1, ..., p_{K-1}]). The main head is a
K-class softmax. Uncertain = Y_con != Y_rad. For K = 2 this is exactly the binary CoraNet (tested).

Loss normalisation: the paper writes sums over pixels; every paper-protocol term here is that sum divided by the
batch's pixel count (a constant), which keeps the paper's 1:1 balance between L_c-sn and L_cnt (§III-D3 argues
from the sizes of the regions, so region-normalised means would change the method).

``protocol="released-code"`` reproduces the released 3D code (REFERENCE §1.3-1.5):

1. L_sup = (CE(h0) + Dice(h0) + CE_wcon(h1) + CE_wrad(h2)) / 4, CE as PyTorch weighted means;
2. L_cert = (mCE(h0) + mDice(h0) + mCE(h1) + mCE(h2)) / 4 on certain voxels against the pseudo-label, with the
   con/rad class weights *swapped* relative to the labelled loss (as released, possibly a bug) and CE summed with
   weights then divided by the number of certain voxels;
3. L_unc = mean over the three heads of the channel-summed squared softmax difference on uncertain voxels,
   divided by their count, weighted by 0.1 * sigmoid_rampup(self-training epoch, 40);
4. L = L_sup + 0.5 * (L_cert + L_unc); EMA teacher without warm-up; pseudo-labels from the student.
5. Dice (labelled and masked) is computed per sample and class, then averaged (``utils1/loss.py``), unlike the
   batch-pooled Dice of SSL4MIS/UA-MT.
6. The released schedule is the ``released`` preset (``--preset released``): pre-train 60 epochs of 8 steps,
   self-train epochs 0..200 of 6 steps, refresh every 5, batch 8 + 8, Adam 1e-3 (0.5, 0.999), no augmentation,
   one centre crop per unlabelled volume, the last model tested.
7. Multi-class (ours; the code is binary): a con/rad head's consistency sums the 2 (K - 1) channels of its K - 1
   sub-tasks; it is divided by K - 1, so each sub-task weighs as the released binary head does, and as in the CE
   terms, which average over sub-tasks (without it the con/rad consistency of 4-class ACDC would weigh 3x).

Presets: ``paper`` is §IV-A (30 + 100 epochs, refresh every 5; 30 + 200 in 3D). The reduced ``cpu`` preset
pre-trains for 40 % of its budget (10 of ACDC's 25 epochs) instead of the paper's 23 %, refreshing every 2 epochs:
with 3 pre-training epochs on real ACDC the main head still predicted no RV or myocardium pixel (pseudo-label CSI 0
for both, 99.9 % of pixels "certain"), so self-training would have reinforced an all-background labelling — the
paper's pre-training, 30 epochs at full size, ends with a working segmenter.

Under the SSL4MIS recipe (``ssl4mis`` and ``cpu-bench`` presets) the main head is trained with the recipe's
0.5 (CE + Dice) wherever it meets a label: its labelled term of L_crm (``params.loss``, instead of Eq. 1's CE) and
C-SN on the certain pixels (``params.st_loss``, instead of Eq. 7's CE; the Dice sums restricted to them), as every
method of that recipe and as the released code (Dice on h0 in L_sup and L_cert); the con/rad terms and UC-SN are
unchanged. Measured (issue #15, cpu-bench, 7 labelled ACDC patients, seed 0; results/README.md): with CE alone the
pre-training quarter (1,000 steps) ended at 0.17 validation Dice (0.0 for 600 steps) and the run tested at 61.2
mean DSC, 14.7 below the U-Net (a U-Net trained with CE alone is as slow: 0.23 at 600 steps, against 0.65 with
CE + Dice); with CE + Dice on the labelled term only, pre-training reached 0.66 and self-training 0.72 by step
2,000, then collapsed towards background (0.43 at step 3,400; the stored pseudo-labels' LV recall fell from 0.77
to 0.27, 99 % of pixels "certain"): C-SN's CE against pseudo-labels that under-segment shrinks them at each
refresh. With CE + Dice in C-SN too the drift is slower but not gone (68.4 val-selected, 57.4 last). Online
pseudo-labels (every step) collapse faster (0.28 validation Dice 200 steps into self-training); the refreshes'
``pl/certain_share_k`` shows why: after pre-training 1 % of the myocardium's pseudo-labelled pixels are certain
(RV 39 %, LV 64 %), so C-SN trains the thin structures' surroundings almost only as background (issue #15,
results/README.md). ``--set params.loss=ce --set params.st_loss=ce`` restores Eq. 1 and 7.

Ablations (Table IV) are configurations of this class: ``st_region`` (C-SN on "certain", "all" or "none"
pixels) and ``mt_region`` (UC-SN on "uncertain", "certain", "all" or "none").

Deviations from the paper's protocol (stated, not reproduced):

* one optimiser step on the summed loss L_crm + L_c-sn + L_cnt per iteration; Algorithm 1 (lines 7, 9, 11) updates
  E, D with Eq. 7, then with Eq. 8, then E, D, D_con, D_rad with Eq. 1 — three successive updates (the released
  code also sums the terms into one step);
* normalisation of L_crm: Eq. 1 sums its per-image losses over the labelled images (no 1/m), while Eq. 7 and 8
  average over the unlabelled ones (1/n); here every term is a mean over its batch (the sum over pixels divided by
  the batch's pixel count), so L_crm weighs 1/B_l of a literal reading of Eq. 1 for B_l labelled images per step
  (the reference code also averages; the 1:1 balance of L_c-sn and L_cnt of §III-D3 is kept exactly).

Other deviations: masks are computed with the student in eval mode (BatchNorm running statistics; the released
code, using InstanceNorm, does not need this); ``--estimator`` replaces the CRM by another estimator (Table VI),
in which case the con/rad heads are not built and L_crm reduces to the main CE.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ssl_bench.core.backbone import HeadSpec, SegNet
from ssl_bench.core.method import Batch, EpochData, Method, MethodContext, Stage, StepInfo
from ssl_bench.core.registry import ESTIMATORS, METHODS
from ssl_bench.core.uncertainty import UncertaintyEstimator, UncertaintyMap, build_estimator
from ssl_bench.evaluation.metrics import pseudo_label_quality
from ssl_bench.training.augment import apply_augment
from ssl_bench.training.consistency import stochastic_mode
from ssl_bench.training.ema import EMATeacher
from ssl_bench.training.losses import (
    check_supervised_loss,
    masked_soft_dice_loss,
    masked_squared_error,
    soft_dice_loss,
    supervised_loss,
    weighted_cross_entropy,
)
from ssl_bench.training.ramps import sigmoid_rampup

PROTOCOLS = ("paper", "released-code")
ST_REGIONS = ("certain", "all", "none")
MT_REGIONS = ("uncertain", "certain", "all", "none")


# -- the CRM as an estimator --------------------------------------------------------------------------------------


def subtask_logits(logits: torch.Tensor) -> torch.Tensor:
    """``[B, 2(K-1), *S]`` head output -> ``[B, K-1, 2, *S]`` (one background/foreground pair per class)."""
    b, c = logits.shape[:2]
    return logits.reshape(b, c // 2, 2, *logits.shape[2:])


def vote(logits: torch.Tensor) -> torch.Tensor:
    """Confidence-weighted vote of one-vs-rest sub-tasks: ``[B, 2(K-1), *S]`` -> ``[B, *S]`` class map.

    Class c >= 1 wins where its foreground probability is above 0.5 and above every other class's; background
    where none exceeds 0.5. With one sub-task (K = 2) this is the binary arg-max.
    """
    p_fg = subtask_logits(logits).softmax(2)[:, :, 1]  # [B, K-1, *S]
    background = torch.full_like(p_fg[:, :1], 0.5)
    return torch.cat([background, p_fg], dim=1).argmax(1)


def cost_sensitive_ce(
    heads: dict[str, torch.Tensor],
    target: torch.Tensor,
    w_con: torch.Tensor,
    w_rad: torch.Tensor,
    mask: torch.Tensor | None = None,
    normalize: str = "pixels",
) -> dict[str, torch.Tensor]:
    """CE_con and CE_rad of Eq. 1 (``heads["con"]``, ``heads["rad"]`` ``[B, 2(K-1), *S]``, ``target`` ``[B, *S]``),
    each the mean over the one-vs-rest sub-tasks, with class costs ``w_con`` / ``w_rad`` ``[2]`` (background,
    foreground)."""
    out = {}
    for name, w in (("con", w_con), ("rad", w_rad)):
        sub = subtask_logits(heads[name])
        terms = [
            weighted_cross_entropy(sub[:, i], (target == i + 1).long(), w, mask, normalize) for i in range(sub.shape[1])
        ]
        out[name] = torch.stack(terms).mean()
    return out


@ESTIMATORS.register("crm")
class ConservativeRadicalDisagreement(UncertaintyEstimator):
    """CoraNet's CRM: uncertain where the conservative and radical heads disagree (paper Eq. 5-6)."""

    #: cost alpha forced on the owning CoraNet (None: use its ``alpha`` option)
    alpha: float | None = None

    def required_heads(self) -> list[HeadSpec]:
        n = 2 * (self.num_classes - 1)
        return [HeadSpec("con", n, "branch"), HeadSpec("rad", n, "branch")]

    @torch.no_grad()
    def estimate(self, net: SegNet, x: torch.Tensor, step: StepInfo | None = None) -> UncertaintyMap:
        with stochastic_mode(net, dropout=False, bn="keep"):  # BatchNorm running statistics never updated
            out = net.forward_heads(x, ["con", "rad"])
        uncertain = vote(out["con"]) != vote(out["rad"])  # Eq. 5 (XOR for K = 2)
        return UncertaintyMap(prob=out["main"].softmax(1), certain=~uncertain, score=uncertain.float())


@ESTIMATORS.register("crm-alpha1")
class EqualCostDisagreement(ConservativeRadicalDisagreement):
    """CRM with alpha = 1: two differently initialised heads with equal costs disagree (Table VIII, star)."""

    alpha = 1.0


# -- the method -----------------------------------------------------------------------------------------------------


@dataclass
class CoraNetConfig:
    """Options of CoraNet (defaults: the paper's protocol)."""

    #: "paper" (the TMI paper) or "released-code" (github.com/koncle/CoraNet HEAD; see module docstring)
    protocol: str = "paper"
    #: misclassification cost alpha of Eq. 1 (Table VIII: 1, 2, 5, 10)
    alpha: float = 5.0
    #: the main head's labelled term of L_crm (training.losses.SUPERVISED_LOSSES): "ce" (Eq. 1) or a recipe's
    #: CE + Dice ("ce+dice-ssl4mis": the ssl4mis / cpu-bench presets, as every method of that recipe); paper
    #: protocol only (the released code has its own L_sup)
    loss: str = "ce"
    #: C-SN's loss against the pseudo-label on the certain pixels: "ce" (Eq. 7) or a recipe's CE + Dice (the
    #: ssl4mis / cpu-bench presets; the released code's L_cert also adds Dice); paper protocol only
    st_loss: str = "ce"
    #: labelled-only pre-training epochs (Algorithm 1 line 2; §IV-A: 30), counted in ``trainer.epochs``: the
    #: self-training stage gets the rest, so every method of a comparison trains for the same number of epochs
    pretrain_epochs: int = 30
    #: if set, pre-train for this fraction of ``trainer.epochs`` instead of ``pretrain_epochs`` (rounded, at least 1);
    #: the ``cpu`` preset uses 0.4 (see "Presets" in the module docstring): there, ``--set params.pretrain_epochs=N``
    #: also needs ``--set params.pretrain_fraction=null``
    pretrain_fraction: float | None = None
    #: epochs between refreshes of the stored pseudo-labels and masks (§IV-A: 5)
    refresh_every: int = 5
    #: steps per pre-training / self-training epoch (None: trainer.iters_per_epoch); the released code's epochs are
    #: 8 and 6 steps (60 labelled crops and 50 unlabelled volumes in batches of 8, REFERENCE §1.5)
    pretrain_iters: int | None = None
    self_train_iters: int | None = None
    #: "offline": stored for the whole unlabelled set, refreshed every `refresh_every` epochs (paper, code);
    #: "online": recomputed for every batch from the current student
    pseudo_labels: str = "offline"
    #: EMA decay beta of Eq. 9
    ema_decay: float = 0.99
    #: C-SN region: "certain" (CoraNet), "all" (seg+st), "none"
    st_region: str = "certain"
    #: UC-SN region: "uncertain" (CoraNet), "certain" (seg+mt (mask)), "all" (seg+mt), "none"
    mt_region: str = "uncertain"
    #: weights of L_c-sn and L_cnt (§III-D3: 1:1)
    st_weight: float = 1.0
    mt_weight: float = 1.0
    #: std of Gaussian noise added to the teacher's input (0: none, as in the released code)
    teacher_noise: float = 0.0
    #: uncertainty estimator producing the certain mask (Table VI); "crm" is CoraNet's own
    estimator: str = "crm"
    #: options of the estimator (its Config fields)
    estimator_options: dict[str, Any] = field(default_factory=dict)
    #: model used by predict(): "student" (paper, code) or "teacher"
    eval_model: str = "student"


@METHODS.register("coranet")
class CoraNet(Method):
    """CoraNet (TMI 2021): conservative-radical uncertainty + separate self-training on certain/uncertain regions."""

    Config = CoraNetConfig
    config_prefix = "coranet"
    presets = {
        "smoke": {"params.pretrain_epochs": 1, "params.refresh_every": 1},
        # 40 % pre-training: the masks need a working segmenter (see "Presets" above); short epochs, frequent refresh
        "cpu": {"params.pretrain_fraction": 0.4, "params.refresh_every": 2},
        # trainer.epochs is the whole budget: 30 pre-training + 100 self-training epochs (§IV-A)
        "paper": {"params.pretrain_epochs": 30, "trainer.epochs": 130, "params.refresh_every": 5},
        # §IV-D: 3D CoraNet pre-trains 30 epochs and self-trains 200
        "paper:3d": {"params.pretrain_epochs": 30, "trainer.epochs": 230, "params.refresh_every": 5},
        # koncle/CoraNet train_ST_3D_VNet.py (REFERENCE §1.4-1.5): pre-train 60 epochs of 8 steps, self-train 201
        # epochs (0..200) of 6 steps, refresh every 5, one fixed centre crop per unlabelled volume
        "released": {
            "params.protocol": "released-code",
            "params.pretrain_epochs": 60,
            "params.pretrain_fraction": None,
            "trainer.epochs": 261,
            "params.pretrain_iters": 8,
            "params.self_train_iters": 6,
            "params.refresh_every": 5,
        },
        "released:3d": {"dataset.unlabeled_views": "center"},
        # the SSL4MIS recipe around CoraNet's own losses: the paper's 30 : 100 split of pre- and self-training
        # (0.23 of the run) and a refresh every 1000 iterations; C-SN with the recipe's CE + Dice (see "Under the
        # SSL4MIS recipe" above)
        "ssl4mis": {"params.pretrain_fraction": 0.23, "params.refresh_every": 5, "params.st_loss": "ce+dice-ssl4mis"},
        "cpu-bench": {"params.pretrain_fraction": 0.25, "params.refresh_every": 1, "params.st_loss": "ce+dice-ssl4mis"},
    }

    def __init__(self, cfg: Any, ctx: MethodContext) -> None:
        super().__init__(cfg, ctx)
        c = self.cfg
        for name, value, allowed in (
            ("protocol", c.protocol, PROTOCOLS),
            ("st_region", c.st_region, ST_REGIONS),
            ("mt_region", c.mt_region, MT_REGIONS),
            ("pseudo_labels", c.pseudo_labels, ("offline", "online")),
            ("eval_model", c.eval_model, ("student", "teacher")),
        ):
            if value not in allowed:
                raise ValueError(f"params.{name} must be one of {allowed}, got {value!r}")
        for name in ("loss", "st_loss"):
            check_supervised_loss(getattr(c, name), name)
            if c.protocol == "released-code" and getattr(c, name) != "ce":
                raise ValueError(
                    f"params.{name}={getattr(c, name)} applies to the paper protocol; the released code has its own "
                    f"CE + Dice terms: use --set params.{name}=ce with params.protocol=released-code"
                )
        if c.alpha <= 0 or c.refresh_every < 1 or c.pretrain_epochs < 0:
            raise ValueError("need alpha > 0, refresh_every >= 1 and pretrain_epochs >= 0")
        for name in ("pretrain_iters", "self_train_iters"):
            if getattr(c, name) is not None and getattr(c, name) < 1:
                raise ValueError(f"params.{name} must be >= 1 (or null: trainer.iters_per_epoch)")
        if c.pretrain_fraction is not None and not 0 < c.pretrain_fraction < 1:
            raise ValueError(f"params.pretrain_fraction must be in (0, 1), got {c.pretrain_fraction}")
        #: labelled-only pre-training epochs actually used
        self.pretrain_epochs = (
            c.pretrain_epochs if c.pretrain_fraction is None else max(1, round(c.pretrain_fraction * ctx.epochs))
        )
        if self.pretrain_epochs >= ctx.epochs:
            source = "params.pretrain_epochs" if c.pretrain_fraction is None else "params.pretrain_fraction"
            raise ValueError(
                f"pre-training ({self.pretrain_epochs} epochs, from {source}) must be shorter than trainer.epochs "
                f"({ctx.epochs}), which counts pre-training and self-training together"
            )
        if c.pseudo_labels == "offline" and self.pretrain_epochs < 1 and self.uses_unlabeled:
            raise ValueError(
                "offline pseudo-labels are computed at the end of pre-training: set "
                "params.pretrain_epochs >= 1 or params.pseudo_labels=online"
            )
        if self.cfg.eval_model == "teacher" and c.mt_region == "none":
            raise ValueError("eval_model=teacher needs a teacher (mt_region != 'none')")
        k = self.spec.num_classes
        self.estimator: UncertaintyEstimator = build_estimator(c.estimator, c.estimator_options, k)
        self.crm = isinstance(self.estimator, ConservativeRadicalDisagreement)
        dropout = self.estimator.required_dropout()
        self.student = ctx.build_backbone(self.estimator.required_heads(), main_head="branch", dropout=dropout)
        # an estimator that never marks pixels uncertain (`none`) leaves UC-SN nothing to train on
        self.mt_region = c.mt_region if (self.estimator.marks_uncertain or c.mt_region != "uncertain") else "none"
        self.teacher = None
        if self.mt_region != "none":
            # Eq. 9 and the released code: a constant beta (no warm-up); the teacher starts self-training as a copy
            # of the pre-trained student (Algorithm 1, line 3), see training_step
            self.teacher = EMATeacher(self.student, c.ema_decay, warmup=False)
        # Eq. 1: costs for [background, foreground] of every sub-task
        alpha = self.estimator.alpha if self.crm and self.estimator.alpha is not None else c.alpha
        self.register_buffer("w_con", torch.tensor([alpha, 1.0]), persistent=False)
        self.register_buffer("w_rad", torch.tensor([1.0, alpha]), persistent=False)
        self._pl: torch.Tensor | None = None  # [N_u, *S] uint8 stored pseudo-labels (offline mode)
        self._certain: torch.Tensor | None = None  # [N_u, *S] bool stored certain masks
        self._refreshed_at: int = -1

    @classmethod
    def check_config(cls, cfg: Any, dims: int) -> None:
        offline = cfg.params.pseudo_labels == "offline" and cls.uses_unlabeled
        if offline and dims == 3 and cfg.dataset.unlabeled_views != "center":
            raise ValueError(
                "offline pseudo-labels are stored per unlabelled view, but 3D unlabelled data are random crops: use "
                "--set dataset.unlabeled_views=center (as the released code) or --set params.pseudo_labels=online"
            )

    # -- schedule -------------------------------------------------------------------------------------------------

    def stages(self) -> list[Stage]:
        pre, c = self.pretrain_epochs, self.cfg
        stages = [Stage("pretrain", pre, unlabeled=False, iters_per_epoch=c.pretrain_iters)] if pre else []
        self_train = Stage(
            "self-train", self.ctx.epochs - pre, unlabeled=self.uses_unlabeled, iters_per_epoch=c.self_train_iters
        )
        return [*stages, self_train]

    def on_stage_start(self, stage: Stage, step: StepInfo) -> None:
        if self.teacher is not None and stage.name == "self-train" and stage.unlabeled:
            self.teacher.reset_to(self.student)  # Algorithm 1, line 3: teacher <- pre-trained student

    # -- losses ---------------------------------------------------------------------------------------------------

    def _cost_sensitive(
        self,
        heads: dict[str, torch.Tensor],
        target: torch.Tensor,
        w_con: torch.Tensor,
        w_rad: torch.Tensor,
        mask: torch.Tensor | None,
        normalize: str,
    ) -> dict[str, torch.Tensor]:
        return cost_sensitive_ce(heads, target, w_con, w_rad, mask, normalize)

    def _labelled_losses(self, heads: dict[str, torch.Tensor], y: torch.Tensor) -> dict[str, torch.Tensor]:
        """L_crm (Eq. 1; paper) or L_sup (released code) on a labelled batch."""
        released = self.cfg.protocol == "released-code"
        norm = "weights" if released else "pixels"
        if released:  # CE as PyTorch's weighted mean + Dice per sample (utils1/loss.py)
            out = {"sup/ce": weighted_cross_entropy(heads["main"], y, normalize=norm)}
            out["sup/dice"] = soft_dice_loss(heads["main"], y, per_sample=True)
            total = out["sup/ce"] + out["sup/dice"]
        else:  # Eq. 1's CE(D) (the mean over pixels), or the recipe's 0.5 (CE + Dice) with params.loss
            out = supervised_loss(heads["main"], y, self.cfg.loss)
            total = out.pop("sup/total")
        if self.crm:
            cs = self._cost_sensitive(heads, y, self.w_con, self.w_rad, None, norm)
            out["sup/ce_con"], out["sup/ce_rad"] = cs["con"], cs["rad"]
            total = total + cs["con"] + cs["rad"]
        n_terms = (2 if released else 1) + (2 if self.crm else 0)
        out["sup/total"] = total / n_terms if released else total
        head = self.estimator.head_loss(heads, y)  # e.g. the aleatoric estimator's variance head
        if head is not None:
            out["sup/estimator_head"] = head
            out["sup/total"] = out["sup/total"] + head
        return out

    def training_step(self, batch_l: Batch, batch_u: Batch | None, step: StepInfo) -> dict[str, torch.Tensor]:
        assert batch_l.label is not None
        heads_l = self.student.forward_heads(batch_l.image)
        logs = self._labelled_losses(heads_l, batch_l.label)
        loss = logs["sup/total"]
        if batch_u is None or step.stage == "pretrain" or not self.uses_unlabeled:
            return {"loss": loss, **logs}
        pseudo, certain = self._pseudo_labels(batch_u, step)
        # the paper trains only the main head on unlabelled data; the released code also the con/rad heads
        released = self.cfg.protocol == "released-code"
        heads_u = self.student.forward_heads(batch_u.image, ["con", "rad"] if (self.crm and released) else [])
        st_mask = {"certain": certain, "all": torch.ones_like(certain), "none": None}[self.cfg.st_region]
        mt_mask = {"uncertain": ~certain, "certain": certain, "all": torch.ones_like(certain), "none": None}[
            self.mt_region
        ]
        logs["mask/certain_frac"] = certain.float().mean()
        if released:
            return self._released_unlabelled(loss, logs, heads_u, batch_u, pseudo, st_mask, mt_mask, step)
        if st_mask is not None:  # C-SN, Eq. 7 (or the recipe's 0.5 (CE + Dice) on the same pixels, params.st_loss)
            logs["unsup/c_sn"] = supervised_loss(heads_u["main"], pseudo, self.cfg.st_loss, st_mask)["sup/total"]
            loss = loss + self.cfg.st_weight * logs["unsup/c_sn"]
        if mt_mask is not None:  # UC-SN, Eq. 8
            teacher = self._teacher_probs(batch_u.image, ["main"])
            logs["unsup/uc_sn"] = masked_squared_error(heads_u["main"].softmax(1), teacher["main"], mt_mask)
            loss = loss + self.cfg.mt_weight * logs["unsup/uc_sn"]
        return {"loss": loss, **logs}

    def _released_unlabelled(
        self,
        loss: torch.Tensor,
        logs: dict[str, torch.Tensor],
        heads_u: dict[str, torch.Tensor],
        batch_u: Batch,
        pseudo: torch.Tensor,
        st_mask: torch.Tensor | None,
        mt_mask: torch.Tensor | None,
        step: StepInfo,
    ) -> dict[str, torch.Tensor]:
        """REFERENCE §1.4: L = L_sup + 0.5 (L_cert + 0.1 ramp(epoch, 40) L_unc), swapped con/rad weights."""
        extra = torch.zeros((), device=loss.device)
        if st_mask is not None:
            terms = [
                weighted_cross_entropy(heads_u["main"], pseudo, mask=st_mask, normalize="mask"),
                masked_soft_dice_loss(heads_u["main"], pseudo, st_mask, per_sample=True),
            ]
            if self.crm:  # the released code trains con with w_rad and rad with w_con on unlabelled data
                cs = self._cost_sensitive(heads_u, pseudo, self.w_rad, self.w_con, st_mask, "mask")
                terms += [cs["con"], cs["rad"]]
            logs["unsup/cert"] = torch.stack(terms).mean()
            extra = extra + logs["unsup/cert"]
        if mt_mask is not None:
            names = ["main", "con", "rad"] if self.crm else ["main"]
            teacher = self._teacher_probs(batch_u.image, names)
            # a con/rad head holds K - 1 binary sub-tasks (2 channels each): its channel-summed error is divided by
            # K - 1, so every sub-task weighs as the released binary head does, and as its CE (a mean over sub-tasks)
            n_sub = self.spec.num_classes - 1
            logs["unsup/unc"] = torch.stack(
                [
                    masked_squared_error(
                        heads_u[n].softmax(1) if n == "main" else _pair_softmax(heads_u[n]),
                        teacher[n],
                        mt_mask,
                        normalize="mask",
                    )
                    / (1 if n == "main" else n_sub)
                    for n in names
                ]
            ).mean()
            self_train_epoch = step.stage_step // max(1, step.steps_per_epoch)
            logs["weight/unc"] = torch.tensor(0.1 * sigmoid_rampup(self_train_epoch, 40))
            extra = extra + logs["weight/unc"] * logs["unsup/unc"]
        return {"loss": loss + 0.5 * extra, **logs}

    @torch.no_grad()
    def _teacher_probs(self, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        assert self.teacher is not None
        if self.cfg.teacher_noise > 0:
            x = x + self.cfg.teacher_noise * torch.randn_like(x)
        heads = self.teacher.module.forward_heads(x, [n for n in names if n != "main"])
        return {n: heads[n].softmax(1) if n == "main" else _pair_softmax(heads[n]) for n in names}

    # -- pseudo-labels and masks ------------------------------------------------------------------------------------

    def _estimate(self, x: torch.Tensor, step: StepInfo | None) -> UncertaintyMap:
        was_training = self.student.training
        self.student.eval()
        try:
            return self.estimator.estimate(self.student, x, step)
        finally:
            self.student.train(was_training)

    def _pseudo_labels(self, batch_u: Batch, step: StepInfo) -> tuple[torch.Tensor, torch.Tensor]:
        """Pseudo-label ``[B, *S]`` int64 and certain mask ``[B, *S]`` bool for an unlabelled batch."""
        if self.cfg.pseudo_labels == "online" or self._pl is None:
            umap = self._estimate(batch_u.image, step)
            return umap.pseudo_label, umap.certain
        idx = batch_u.index.cpu()
        pl, cert = self._pl[idx], self._certain[idx]
        if batch_u.aug is not None:  # stored maps are in the un-augmented frame
            pl, cert = apply_augment(pl, batch_u.aug), apply_augment(cert, batch_u.aug)
        return pl.to(batch_u.image.device).long(), cert.to(batch_u.image.device)

    def refresh(self, data: EpochData) -> dict[str, float]:
        """Recompute pseudo-labels and masks for every unlabelled image (Algorithm 1 line 13)."""
        pls, certs = [], []
        for batch in data.iterate_unlabeled(16):
            umap = self._estimate(batch.image, None)
            pls.append(umap.pseudo_label.to(torch.uint8).cpu())
            certs.append(umap.certain.cpu())
        if not pls:
            return {}
        self._pl, self._certain = torch.cat(pls), torch.cat(certs)
        logs = {"pl/certain_frac": float(self._certain.float().mean())}
        # what C-SN trains on: the share of each class's pseudo-labelled pixels that are certain (thin structures
        # can be almost entirely uncertain, leaving C-SN with background only)
        for k in range(1, self.spec.num_classes):
            in_class = self._pl == k
            n = int(in_class.sum())
            logs[f"pl/certain_share_{k}"] = float((in_class & self._certain).sum()) / n if n else float("nan")
        if data.hidden_labels_u is not None:  # analysis only (Fig. 3/4): never used for training
            gt = data.hidden_labels_u.cpu().numpy()
            pl, cert = self._pl.numpy(), self._certain.numpy()
            for k in range(1, self.spec.num_classes):
                for region, mask in (("certain", cert), ("all", None)):
                    q = pseudo_label_quality(pl, gt, mask, cls=k)
                    for key in ("ppv", "tpr", "csi"):
                        logs[f"pl/{region}/{key}_{k}"] = q[key]
        return logs

    def on_epoch_end(self, epoch: int, stage: Stage, data: EpochData) -> dict[str, float] | None:
        if self.cfg.pseudo_labels != "offline" or not self.uses_unlabeled or data.num_unlabeled == 0:
            return None
        if epoch + 1 >= self.ctx.epochs:  # no training follows: unused masks (and their pl/* scores) are skipped
            return None
        if stage.name == "pretrain":
            due = epoch + 1 == self.pretrain_epochs  # masks for the first self-training epochs (line 4)
        else:
            due = (epoch + 1 - self.pretrain_epochs) % self.cfg.refresh_every == 0
        if not due:
            return None
        self._refreshed_at = epoch + 1
        return self.refresh(data)

    def after_optimizer_step(self, step: StepInfo) -> None:
        if self.teacher is not None and step.stage != "pretrain":  # Eq. 9, during self-training only
            self.teacher.update(self.student, step.stage_step)

    # -- inference and state --------------------------------------------------------------------------------------

    def inference_module(self) -> nn.Module:
        return self.teacher.module if (self.cfg.eval_model == "teacher" and self.teacher) else self.student

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.inference_module()(x)

    def extra_state(self) -> dict[str, Any]:
        return {"pseudo_labels": self._pl, "certain": self._certain, "refreshed_at": self._refreshed_at}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self._pl, self._certain = state.get("pseudo_labels"), state.get("certain")
        self._refreshed_at = state.get("refreshed_at", -1)


def _pair_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax within each sub-task's (background, foreground) pair, flattened back to ``[B, 2(K-1), *S]``."""
    return subtask_logits(logits).softmax(2).flatten(1, 2)


# -- Table IV ablations: the same module with other regions ------------------------------------------------------


@dataclass
class SegConfig(CoraNetConfig):
    st_region: str = "none"
    mt_region: str = "none"


@dataclass
class SegSTConfig(CoraNetConfig):
    st_region: str = "all"
    mt_region: str = "none"


@dataclass
class SegSTMaskConfig(CoraNetConfig):
    st_region: str = "certain"
    mt_region: str = "none"


@dataclass
class SegMTConfig(CoraNetConfig):
    st_region: str = "none"
    mt_region: str = "all"


@dataclass
class SegMTMaskConfig(CoraNetConfig):
    st_region: str = "none"
    mt_region: str = "certain"


@METHODS.register("coranet-seg")
class CoraNetSeg(CoraNet):
    """CoraNet ablation 'seg' (Table IV): L_crm only, no unlabelled data."""

    Config = SegConfig
    uses_unlabeled = False


@METHODS.register("coranet-seg-st")
class CoraNetSegST(CoraNet):
    """CoraNet ablation 'seg+st' (Table IV): self-training on all unlabelled pixels (no mask)."""

    Config = SegSTConfig


@METHODS.register("coranet-seg-st-mask")
class CoraNetSegSTMask(CoraNet):
    """CoraNet ablation 'seg+st (mask)' (Table IV): self-training on certain pixels only."""

    Config = SegSTMaskConfig


@METHODS.register("coranet-seg-mt")
class CoraNetSegMT(CoraNet):
    """CoraNet ablation 'seg+mt' (Table IV): mean teacher on all unlabelled pixels (no mask)."""

    Config = SegMTConfig


@METHODS.register("coranet-seg-mt-mask")
class CoraNetSegMTMask(CoraNet):
    """CoraNet ablation 'seg+mt (mask)' (Table IV): mean teacher on certain pixels only."""

    Config = SegMTMaskConfig
