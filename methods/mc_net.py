"""MC-Net: Mutual Consistency Network — one encoder, decoders with different up-sampling, cycled pseudo-labels.

Papers: Y. Wu, M. Xu, Z. Ge, J. Cai, L. Zhang, "Semi-supervised Left Atrium Segmentation with Mutual Consistency
Training", MICCAI 2021 (arXiv:2103.02911; MC-Net, two decoders), and Y. Wu, Z. Ge, D. Zhang, M. Xu, L. Zhang,
Y. Xia, J. Cai, "Mutual Consistency Learning for Semi-supervised Medical Image Segmentation", Medical Image Analysis
81, 2022 (MC-Net+, three decoders). Reference code: ycwu1997/MC-Net ``code/train_mcnet_2d.py`` with
``code/networks/unet.py`` ``MCNet2d_v1`` (2 decoders: bilinear, transposed conv; the ACDC "MC-Net" row of the
SS-Net/BCP tables) / ``MCNet2d_v2`` (+ nearest: MC-Net+), and ``code/train_mcnet_3d.py`` (V-Net, LA/Pancreas).

Method (equation numbers ours: the paper PDFs were not readable here; the maths is the reference code's):

* one encoder shared by D decoders that differ only in their up-sampling (``upsampling``; the backbone's
  ``upsampling`` option, see :data:`ssl_bench.core.backbone.UPSAMPLING`), each with its own output head;
  logits z_d, probabilities p_d = softmax(z_d) over the whole batch (labelled and unlabelled images);
* (1) sharpening (the "cycled pseudo label"): s(p) = p^(1/T) / (p^(1/T) + (1 - p)^(1/T)) element-wise, per class
  (not renormalised over classes), T = 0.1;
* (2) mutual consistency: L_mc = sum_{i != j} mean((p_i - s(p_j))^2), the mean over all images, classes and pixels
  (MSE), gradients through both sides as in the reference (``detach_targets=true`` stops them at s(p_j));
* (3) supervised: L_seg = sum_d l_sup(z_d, y) over the labelled images; the 2D reference's ``loss_seg_dice`` is its
  Dice loss alone, 1 - sum(p g) / (sum p^2 + sum g^2) per class (background included, pooled over the batch), which
  is 0.5 (1 - Dice) + 0.5 with the usual squared-denominator Dice: ``dice_only=true`` optimises 0.5 x Dice (the
  constant 0.5 dropped); its CE is computed but not optimised;
* (4) L = lambda L_seg + w(t) L_mc, lambda = 1 (2D; 0.5 in 3D), w(t) = 0.1 * sigmoid ramp (2D reference:
  0.1 * sigmoid_rampup(iter // 150, 200) over 30,000 iterations; 3D: 1.0, 40 of 15,000 / 150 = 0.4 of the run);
* test: decoder 1 (the reference's ``test_2d.py`` loads only the encoder and ``decoder1``, bilinear):
  ``predict_with="first"``; ``"mean"`` averages the decoders' softmax;
* optimiser (2D reference): SGD 0.01, momentum 0.9, weight decay 1e-4, a **constant** learning rate (no poly
  schedule, unlike SSL4MIS), 30,000 iterations of 12 + 12 images.

``mc-net`` is the 2-decoder MC-Net (``MCNet2d_v1``); ``mc-net-plus`` is MC-Net+ (``MCNet2d_v2``: + a nearest
decoder; the model of the reference's ``train_mcnet_2d.sh`` ACDC runs and of its ``pretrained_pth/ACDC`` numbers).

Deviations:

* ``loss`` (the supervised term when ``dice_only=false``, default) is the suite's ``params.loss`` (CE by default);
  the ``ssl4mis`` preset sets ``dice_only=true`` as the reference;
* the reference's weight uses ``(iter + 1) // 150`` (its counter is incremented before the weight is computed),
  SSL4MIS's ``iter // 150``: the staircase here is the latter (one iteration earlier at each step of the ramp);
* the backbone's up-sampling modes are 1x1 conv + interpolation or a transposed conv, as MC-Net's modes 0-2; its
  bicubic mode 3 (``MCNet2d_v3``) is not offered;
* 3D: ``unet3d`` decoders (transposed conv vs 1x1 conv + trilinear) instead of the reference's V-Net decoders
  (transposed conv vs trilinear), binary Dice there; the ``paper:3d`` preset has its weights (lambda 0.5, w 1.0,
  ramp over 0.4 of the run);
* ramp length as a fraction of the stage; one labelled + unlabelled forward (``joint_bn``) as the reference,
  except under the ``cpu`` preset (separate forwards, the setting of its committed records).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ssl_bench.core.backbone import UPSAMPLING
from ssl_bench.core.method import Batch, MethodContext, StepInfo
from ssl_bench.core.registry import METHODS
from ssl_bench.training.cotraining import CoTrainingConfig, CoTrainingMethod
from ssl_bench.training.losses import soft_dice_loss

CONSISTENCY_ON = ("all", "unlabeled")


def sharpen(p: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. (1): ``p^(1/T) / (p^(1/T) + (1 - p)^(1/T))`` element-wise (each class against its complement)."""
    a = p.pow(1.0 / temperature)
    return a / (a + (1 - p).pow(1.0 / temperature))


def mutual_consistency(probs: list[torch.Tensor], temperature: float, detach_targets: bool = False) -> torch.Tensor:
    """Eq. (2): ``sum_{i != j} mean((p_i - sharpen(p_j))^2)`` over D >= 2 probability maps ``[B, K, *S]``."""
    targets = [sharpen(p.detach() if detach_targets else p, temperature) for p in probs]
    total = probs[0].new_zeros(())
    for i, p in enumerate(probs):
        for j, t in enumerate(targets):
            if i != j:
                total = total + (p - t).pow(2).mean()
    return total


@dataclass
class MCNetConfig(CoTrainingConfig):
    """Options of MC-Net (defaults: the 2D reference's values; the ramp length as a fraction of the stage)."""

    #: maximum weight of the mutual consistency (2D reference: 0.1; 3D: 1.0)
    weight: float = 0.1
    #: up-sampling of each decoder, decoder 1 first (the one tested): MC-Net ("bilinear", "transposed");
    #: MC-Net+ ("bilinear", "transposed", "nearest")
    upsampling: tuple[str, ...] = ("bilinear", "transposed")
    #: sharpening temperature T (reference: 0.1)
    temperature: float = 0.1
    #: images of the mutual consistency: "all" (labelled + unlabelled, the reference) or "unlabeled"
    consistency_on: str = "all"
    #: lambda, the weight of the supervised term (2D reference: 1.0; 3D: 0.5)
    sup_weight: float = 1.0
    #: supervised term of each decoder: 0.5 x squared-denominator Dice, no CE (the reference); false: params.loss
    dice_only: bool = False
    #: stop the gradient at the sharpened targets (the reference does not)
    detach_targets: bool = False


@METHODS.register("mc-net")
class MCNet(CoTrainingMethod):
    """MC-Net (MICCAI 2021): one encoder, decoders with different up-sampling, MSE to each other's sharpened output."""

    Config = MCNetConfig
    presets = {
        "smoke": {},
        "cpu": {},
        "paper": {"params.rampup": 1.0},
        # ycwu1997/MC-Net train_mcnet_3d.py: lamda 0.5, consistency 1, sigmoid_rampup(iter // 150, 40) of 15,000
        "paper:3d": {"params.sup_weight": 0.5, "params.weight": 1.0, "params.rampup": 0.4},
        # ycwu1997/MC-Net train_mcnet_2d.py with MCNet2d_v1: Dice only (lamda 1), consistency 0.1 x
        # sigmoid_rampup(iter // 150, 200) over 30,000 iterations, T = 0.1, MSE on the whole batch of 12 + 12 in
        # one forward, test decoder 1
        "ssl4mis": {
            "params.dice_only": True,
            "params.sup_weight": 1.0,
            "params.temperature": 0.1,
            "params.upsampling": ("bilinear", "transposed"),
            "params.consistency_on": "all",
            "params.predict_with": "first",
            "optim.schedule": "constant",
        },
    }

    def __init__(self, cfg: Any, ctx: MethodContext) -> None:
        cfg = cfg if cfg is not None else self.Config()
        bad = [m for m in cfg.upsampling if m not in UPSAMPLING]
        if len(cfg.upsampling) < 2 or bad:
            raise ValueError(f"params.upsampling needs >= 2 modes of {UPSAMPLING}, got {tuple(cfg.upsampling)}")
        if cfg.temperature <= 0 or cfg.sup_weight < 0:
            raise ValueError(
                f"need params.temperature > 0 and params.sup_weight >= 0, got {cfg.temperature}, {cfg.sup_weight}"
            )
        if cfg.consistency_on not in CONSISTENCY_ON:
            raise ValueError(f"params.consistency_on must be one of {CONSISTENCY_ON}, got {cfg.consistency_on!r}")
        overrides = [{"upsampling": m} for m in cfg.upsampling]
        super().__init__(cfg, ctx, overrides=overrides, share_encoder=True)

    def supervised(self, logits_l: torch.Tensor, label: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Eq. (3) per decoder: 0.5 x Dice (``dice_only``) or ``params.loss``."""
        if not self.cfg.dice_only:
            return super().supervised(logits_l, label)
        assert label is not None, "labelled batch without labels"
        dice = soft_dice_loss(logits_l, label, squared=True)
        return {"sup/dice": dice, "sup/total": 0.5 * dice}

    def _weighted(self, sup: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        sup["sup/total"] = self.cfg.sup_weight * sup["sup/total"]
        return sup

    def supervised_only(self, batch_l: Batch) -> dict[str, torch.Tensor]:
        sup = self._weighted(self.supervised_sum(self.forward_nets(batch_l.image), batch_l.label))
        return {"loss": sup["sup/total"], **sup}

    def training_step(self, batch_l: Batch, batch_u: Batch | None, step: StepInfo) -> dict[str, torch.Tensor]:
        if batch_u is None:
            return self.supervised_only(batch_l)
        logits_l, logits_u = self.nets_forward(batch_l, batch_u)
        assert logits_u is not None
        sup = self._weighted(self.supervised_sum(logits_l, batch_l.label))  # Eq. (3), lambda of Eq. (4)
        if self.cfg.consistency_on == "all":
            logits = [torch.cat([a, b]) for a, b in zip(logits_l, logits_u)]
        else:
            logits = logits_u
        probs = [z.float().softmax(1) for z in logits]
        unsup = {"unsup/mutual": mutual_consistency(probs, self.cfg.temperature, self.cfg.detach_targets)}
        with torch.no_grad():
            agreement = (probs[0].argmax(1) == probs[1].argmax(1)).float().mean()
        return self.combine(sup, unsup, self.unsup_weight(step), **{"mc/agreement": agreement})  # Eq. (4)


@dataclass
class MCNetPlusConfig(MCNetConfig):
    """Options of MC-Net+ (MC-Net's, with three decoders by default)."""

    #: up-sampling of each decoder, decoder 1 first (the one tested): MCNet2d_v2's bilinear, transposed, nearest
    upsampling: tuple[str, ...] = ("bilinear", "transposed", "nearest")


@METHODS.register("mc-net-plus")
class MCNetPlus(MCNet):
    """MC-Net+ (MedIA 2022): MC-Net with three decoders (bilinear, transposed conv, nearest up-sampling)."""

    Config = MCNetPlusConfig
    presets = {
        **MCNet.presets,
        "ssl4mis": {**MCNet.presets["ssl4mis"], "params.upsampling": ("bilinear", "transposed", "nearest")},
    }
