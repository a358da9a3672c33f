"""Streaming statistics of one uncertainty estimator over many batches, with known labels (bounded memory).

Per batch: the estimator's probabilities ``prob [B, K, *S]``, certain mask ``[B, *S]``, score ``[B, *S]`` (or None:
then the mask is the score, 1 = uncertain) and the labels ``[B, *S]``. Pixel error = pseudo-label (arg-max of
``prob``) != label. Kept per *group* of pixels: ``all`` and, for every class k >= 1, ``pred_k`` (pixels whose
pseudo-label is k; background is in ``all`` only):

* a :class:`~.uncertainty_metrics.ScoreHistogram` (AUROC/AUPRC/AURC of the score for the group's errors);
* reliability bins of the top-class probability (ECE);
* the certain count;

and per foreground class the confusion counts inside the certain region (PPV/TPR/CSI of the pseudo-label there,
the quantities of CoraNet Fig. 3) and over all pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ssl_bench.evaluation.metrics import confusion_counts, confusion_ratios
from ssl_bench.evaluation.uncertainty_metrics import ECE_BINS, Calibration, ScoreHistogram, calibration, ece

_NAN = float("nan")


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else _NAN


class EstimatorStats:
    """Accumulate :meth:`add` over batches, then :meth:`summary` (JSON-ready) and :meth:`curves`."""

    def __init__(self, num_classes: int, bins: int = ECE_BINS) -> None:
        self.num_classes = num_classes
        self.groups = ["all", *(f"pred_{k}" for k in range(1, num_classes))]
        self.hist = {g: ScoreHistogram() for g in self.groups}
        z = np.zeros(bins)
        self.cal = {g: Calibration(z.copy(), z.copy(), z.copy()) for g in self.groups}
        self.certain = dict.fromkeys(self.groups, 0.0)
        self.pixels = dict.fromkeys(self.groups, 0.0)
        #: per class k >= 1 and region ("certain", "all"): [tp, fp, fn]
        self.confusion = {(k, r): np.zeros(3) for k in range(1, num_classes) for r in ("certain", "all")}
        self.mask_is_score = False

    def add(self, prob: torch.Tensor, certain: torch.Tensor, score: torch.Tensor | None, label: torch.Tensor) -> None:
        """One batch: ``prob [B, K, *S]``, ``certain [B, *S]`` bool, ``score [B, *S]`` or None, ``label [B, *S]``."""
        top, pred = prob.float().max(1)
        top, pred = top.cpu().numpy(), pred.cpu().numpy()
        cert = certain.cpu().numpy().astype(bool)
        gt = label.cpu().numpy().astype(np.int64)
        if score is None:
            self.mask_is_score = True
            s = (~cert).astype(np.float64)
        else:
            s = score.float().cpu().numpy()
        err = pred != gt
        for g in self.groups:
            sel = None if g == "all" else pred == int(g.split("_")[1])
            pick = (lambda a: a.ravel()) if sel is None else (lambda a, m=sel: a[m])
            self.hist[g].add(pick(s), pick(err))
            c = calibration(np.clip(pick(top), 0.0, 1.0), ~pick(err), len(self.cal[g].count))
            for name in ("count", "conf_sum", "correct_sum"):
                getattr(self.cal[g], name).__iadd__(getattr(c, name))
            self.certain[g] += float(pick(cert).sum())
            self.pixels[g] += float(pick(cert).size)
        for k in range(1, self.num_classes):
            pk, gk = pred == k, gt == k
            for region, mask in (("certain", cert), ("all", None)):
                p, r = (pk, gk) if mask is None else (pk & mask, gk & mask)
                self.confusion[(k, region)] += confusion_counts(p, r)

    def summary(self) -> dict[str, Any]:
        """``{group: {auroc, auprc, aurc, aurc_optimal, e_aurc, error_rate, pixels, ece, certain_fraction}}`` and
        ``{"class_k": {region: {ppv, tpr, csi, tp, fp, fn}}}``."""
        out: dict[str, Any] = {}
        for g in self.groups:
            row = self.hist[g].summary()
            row["ece"] = ece(self.cal[g])
            row["certain_fraction"] = _ratio(self.certain[g], self.pixels[g])
            out[g] = row
        for k in range(1, self.num_classes):
            out[f"class_{k}"] = {}
            for region in ("certain", "all"):
                out[f"class_{k}"][region] = confusion_ratios(*(float(v) for v in self.confusion[(k, region)]))
        out["score_is_mask"] = self.mask_is_score
        return out

    def curves(self, points: int = 101) -> dict[str, Any]:
        """Risk-coverage curve and reliability bins per group (for the figures)."""
        out = {}
        for g in self.groups:
            coverage, risk = self.hist[g].curve(points)
            cal = self.cal[g]
            out[g] = {
                "coverage": coverage,
                "risk": risk,
                "reliability": {
                    "count": cal.count.tolist(),
                    "confidence": [None if np.isnan(v) else float(v) for v in cal.confidence()],
                    "accuracy": [None if np.isnan(v) else float(v) for v in cal.accuracy()],
                },
            }
        return out
