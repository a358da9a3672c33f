"""Temporal Ensembling: consistency with an exponential moving average of past per-pixel predictions.

Paper: S. Laine and T. Aila, "Temporal Ensembling for Semi-Supervised Learning", ICLR 2017 (arXiv:1610.02242;
github.com/smlaine2/tempens). The "Temporal Ensembling" (TE) rows of CoraNet Tables II, III and VII (Shi et al.,
IEEE TMI 2021, doi:10.1109/TMI.2021.3124413). There is no segmentation reference implementation (not in SSL4MIS,
UA-MT or CoraNet): this one is derived from the paper, per pixel.

Method (Laine & Aila, Algorithm 2):

* every unlabelled image i has an ensemble Z_i ``[K, *S]``; after each epoch Z_i <- alpha Z_i + (1 - alpha) z_i with
  z_i the network's softmax for image i, and the training target is the bias-corrected z^_i = Z_i / (1 - alpha^t),
  t = number of updates so far (alpha = 0.6);
* loss = CE on labelled pixels + w(t) * mean over pixels of (1/K) ||softmax(f(x_i)) - z^_i||^2, with Gaussian input
  noise (sigma = 0.15) and dropout (0.5; the ``paper`` preset, none in smoke/cpu as for the Π-model) on the
  training passes;
* before the first update there are no targets: Z = 0 and w = 0 (the paper: "w(t) ... zero on the first training
  epoch"); afterwards w(t) = w_max * exp(-5 (1 - t)^2) ramp-up.

Deviations (documented choices):

* z_i comes from one extra stochastic pass over the un-augmented unlabelled set at the end of each epoch (dropout,
  input noise, and a random rot90/flip that is inverted on the output; BatchNorm in the net's current mode without
  updating running statistics), not from the predictions made during the epoch. This costs one forward pass over
  the unlabelled set per epoch, needs no per-epoch accumulator (half the memory), and updates every image exactly
  once per epoch whatever ``trainer.iters_per_epoch`` is (the paper's epochs visit every image once).
* targets are kept in the un-augmented frame and brought into each batch's augmented frame with the batch's
  ``aug`` (:func:`ssl_bench.training.augment.apply_augment`), so the trainer's rot90/flip augmentation stays exact;
  with ``dataset.augment=ssl4mis`` a rotated view is aligned by a nearest-neighbour rotation (lossy at the corners,
  whose rotated-out pixels get all-zero targets).
* in 3D the targets belong to the fixed unlabelled views (``dataset.unlabeled_views=center``, set by the 3D presets);
  random crops are refused with an error, since a target cannot follow a crop it was not computed on.
* the consistency covers unlabelled images only (the paper also ensembles labelled images; their targets would
  need a second store indexed by the labelled stream).
* targets are stored bias-corrected on the CPU as ``uint8`` (``storage``; quantisation error <= 1/510 per stored
  value, bounded by 1/(510 (1 - alpha)) = 0.005 over repeated updates for alpha = 0.6), ``fp16`` or ``fp32``.
  Cost: N_u * K * H * W * bytes — for ACDC at the paper preset (1056 unlabelled 256x256 slices of 4 classes at the
  20 % budget) 277 MB in uint8 (554 MB fp16, 1.1 GB fp32), which also goes into every ``last.pt``.
* labelled and unlabelled images go through the network together (``joint_bn``, the default), as the paper's mixed
  minibatches; the ``cpu`` preset uses separate passes (``joint_bn=false``, the setting of its committed records).
* the ramp length is a fraction of the stage (``rampup``; the paper: 80 of 300 epochs, the ``paper`` preset).
  w_max: the paper uses 30 * M/N; the ``paper`` preset uses 30 * 0.2 = 6 (20 % budget), the default 1.0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ssl_bench.core.method import Batch, EpochData, MethodContext, Stage, StepInfo
from ssl_bench.core.registry import METHODS
from ssl_bench.training.augment import apply_augment
from ssl_bench.training.consistency import (
    ConsistencyConfig,
    ConsistencyMethod,
    add_noise,
    align,
    random_dihedral,
    softmax_mse,
    stochastic_mode,
)

STORAGE_DTYPES = {"uint8": torch.uint8, "fp16": torch.float16, "fp32": torch.float32}


def ensemble_update(target: torch.Tensor, z: torch.Tensor, alpha: float, t: int) -> torch.Tensor:
    """Bias-corrected ensemble after update number ``t`` (>= 1), from the previous corrected target and new ``z``.

    With Z the raw ensemble: Z_{t-1} = target * (1 - alpha^(t-1)); Z_t = alpha Z_{t-1} + (1 - alpha) z;
    returns Z_t / (1 - alpha^t). (t = 1 gives z itself whatever ``target`` holds.)
    """
    if t < 1:
        raise ValueError(f"update number must be >= 1, got {t}")
    raw = alpha * (1.0 - alpha ** (t - 1)) * target + (1.0 - alpha) * z
    return raw / (1.0 - alpha**t)


def quantize(p: torch.Tensor, storage: str) -> torch.Tensor:
    """Probabilities -> stored dtype (uint8: round(255 p))."""
    if storage == "uint8":
        return (p * 255.0).round_().clamp_(0, 255).to(torch.uint8)
    return p.to(STORAGE_DTYPES[storage])


def dequantize(q: torch.Tensor) -> torch.Tensor:
    """Stored targets -> float32 probabilities."""
    return q.float() / 255.0 if q.dtype == torch.uint8 else q.float()


def target_bytes(num_unlabeled: int, num_classes: int, spatial: tuple[int, ...], storage: str = "uint8") -> int:
    """Memory of the ensemble targets: N_u * K * prod(spatial) * bytes per value."""
    numel = num_unlabeled * num_classes
    for s in spatial:
        numel *= s
    return numel * torch.empty((), dtype=STORAGE_DTYPES[storage]).element_size()


@dataclass
class TemporalEnsemblingConfig(ConsistencyConfig):
    """Options of Temporal Ensembling (defaults: Laine & Aila where they transfer; see the module docstring)."""

    #: w_max (the paper: 30 scaled by the labelled fraction; `paper` preset 6)
    weight: float = 1.0
    #: dropout of the U-Net bottleneck and last feature (None: model.dropout; the paper and the `paper` preset: 0.5)
    dropout: float | None = None
    #: ensemble momentum alpha (the paper: 0.6)
    alpha: float = 0.6
    #: Gaussian input noise of the training and target passes: std and clamp (the paper: 0.15, no clamp)
    noise_std: float = 0.15
    noise_clip: float | None = None
    #: target pass at epoch end with dropout, noise and a random rot90/flip (inverted); False: a plain pass
    stochastic_targets: bool = True
    #: storage of the targets: "uint8" (quantised), "fp16" or "fp32" (CPU memory, checkpointed)
    storage: str = "uint8"
    #: batch size of the end-of-epoch pass over the unlabelled set
    target_batch_size: int = 16


@METHODS.register("temporal-ensembling")
class TemporalEnsembling(ConsistencyMethod):
    """Temporal Ensembling (Laine & Aila, ICLR 2017): per-pixel EMA (alpha 0.6, bias-corrected) targets per epoch."""

    Config = TemporalEnsemblingConfig
    presets = {
        "smoke": {},
        "cpu": {},
        # Laine & Aila: w_max = 30 * M/N (20 % labelled), ramp-up over 80 of 300 epochs
        "paper": {"params.weight": 6.0, "params.rampup": 80 / 300, "params.dropout": 0.5},
        # 3D: one target per unlabelled volume needs fixed views (random crops are refused)
        "smoke:3d": {"dataset.unlabeled_views": "center"},
        "cpu:3d": {"dataset.unlabeled_views": "center"},
        "paper:3d": {"dataset.unlabeled_views": "center"},
    }

    def __init__(self, cfg: Any, ctx: MethodContext) -> None:
        super().__init__(cfg, ctx)
        c = self.cfg
        if not 0.0 <= c.alpha < 1.0:
            raise ValueError(f"params.alpha must be in [0, 1), got {c.alpha}")
        if c.storage not in STORAGE_DTYPES:
            raise ValueError(f"params.storage must be one of {sorted(STORAGE_DTYPES)}, got {c.storage!r}")
        if c.noise_std < 0 or c.target_batch_size < 1:
            raise ValueError("need params.noise_std >= 0 and params.target_batch_size >= 1")
        self.targets: torch.Tensor | None = None  # [N_u, K, *S] bias-corrected, un-augmented frame, CPU
        self.updates = 0

    # -- training -------------------------------------------------------------------------------------------------

    def batch_targets(self, batch_u: Batch, like: torch.Tensor) -> torch.Tensor | None:
        """The batch's targets in its augmented frame ``[B, K, *S]``, or None before the first update."""
        if self.targets is None or self.updates == 0:
            return None
        if batch_u.crop is not None:
            raise ValueError(
                "temporal-ensembling keeps one target per unlabelled view, but the unlabelled batches are random 3D "
                "crops: set dataset.unlabeled_views=center"
            )
        stored = dequantize(self.targets[batch_u.index.cpu()])
        return align(stored, batch_u).to(device=like.device, dtype=like.dtype)

    def training_step(self, batch_l: Batch, batch_u: Batch | None, step: StepInfo) -> dict[str, torch.Tensor]:
        if batch_u is None:
            return self.supervised_only(batch_l)
        c = self.cfg

        def noisy_pass(x: torch.Tensor) -> torch.Tensor:
            return self.student(add_noise(x, c.noise_std, c.noise_clip))

        logits_l, logits_u = self.forward_split(noisy_pass, batch_l.image, batch_u.image)
        sup = self.supervised(logits_l, batch_l.label)
        target = self.batch_targets(batch_u, logits_u)
        weight = self.unsup_weight(step)
        if target is None:  # no ensemble yet: Z = 0 and w = 0 (Laine & Aila, first epoch)
            target, weight = torch.zeros_like(logits_u), 0.0
        unsup = {"unsup/temporal": softmax_mse(logits_u, target)}
        return self.combine(sup, unsup, weight)

    # -- ensemble -------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def predictions(self, x: torch.Tensor) -> torch.Tensor:
        """z for a batch of un-augmented images: softmax of one stochastic (or plain) pass, ``[B, K, *S]``."""
        c = self.cfg
        if not c.stochastic_targets:
            with stochastic_mode(self.student, dropout=False):
                return self.student(x).float().softmax(1)
        aug = random_dihedral(x)
        with stochastic_mode(self.student, dropout=True):
            out = self.student(add_noise(apply_augment(x, aug), c.noise_std, c.noise_clip)).float()
        return apply_augment(out, aug, inverse=True).softmax(1)

    def on_epoch_end(self, epoch: int, stage: Stage, data: EpochData) -> dict[str, float] | None:
        if not stage.unlabeled or data.num_unlabeled == 0:
            return None
        c, n = self.cfg, data.num_unlabeled
        first = self.updates == 0 or self.targets is None
        if not first and len(self.targets) != n:
            raise RuntimeError(f"temporal-ensembling: {len(self.targets)} stored targets for {n} unlabelled images")
        t = 1 if first else self.updates + 1
        hidden = data.hidden_labels_u if data.hidden_labels_u is not None and len(data.hidden_labels_u) == n else None
        confidence, correct, pixels = 0.0, 0.0, 0
        for batch in data.iterate_unlabeled(c.target_batch_size):
            idx = batch.index.cpu()
            z = self.predictions(batch.image).cpu()
            if first and pixels == 0:
                self.targets = torch.zeros((n, *z.shape[1:]), dtype=STORAGE_DTYPES[c.storage])
            assert self.targets is not None
            if not first:  # in place: each image is read, then overwritten, once per epoch
                z = ensemble_update(dequantize(self.targets[idx]), z, c.alpha, t)
            self.targets[idx] = quantize(z, c.storage)
            target = dequantize(self.targets[idx])
            confidence += float(target.amax(1).sum())
            pixels += target[:, 0].numel()
            if hidden is not None:  # analysis only: the ensemble's arg-max vs the hidden labels (never trained on)
                correct += float((target.argmax(1) == hidden[idx.to(hidden.device)].cpu().long()).sum())
        if not pixels:
            return None
        self.updates = t
        logs = {"te/updates": float(t), "te/target_confidence": confidence / pixels}
        if hidden is not None:
            logs["te/target_pixel_acc"] = correct / pixels
        return logs

    # -- state ----------------------------------------------------------------------------------------------------

    def extra_state(self) -> dict[str, Any]:
        return {"targets": self.targets, "updates": self.updates}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        targets = state.get("targets")
        self.targets = None if targets is None else targets.cpu()
        self.updates = int(state.get("updates", 0))
