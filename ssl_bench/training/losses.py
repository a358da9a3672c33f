"""Loss functions shared by methods (written once, used everywhere).

Shapes: logits ``[B, K, *spatial]``, integer targets ``[B, *spatial]``, masks ``[B, *spatial]`` in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean pixel-wise cross-entropy, optionally with per-class ``weight`` ``[K]`` (normalised as in PyTorch)."""
    return F.cross_entropy(logits, target.long(), weight=weight)


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    include_background: bool = True,
    eps: float = 1e-5,
    *,
    squared: bool = False,
    per_sample: bool = False,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """1 - mean over classes of the soft Dice (2 sum(p g) + eps) / (sum(p) + sum(g) + eps) of softmax(logits), one-hot.

    Args:
        logits: ``[B, K, *S]``; target: ``[B, *S]`` integer.
        squared: denominators sum(p^2) + sum(g^2) (SSL4MIS ``DiceLoss``, UA-MT ``dice_loss``; V-Net's form).
        per_sample: Dice of each sample, then the mean over samples and classes (the released CoraNet code);
            otherwise the sums pool the whole batch (SSL4MIS, UA-MT).
        mask: ``[B, *S]``: the sums are restricted to these pixels (the released CoraNet's masked Dice).
    """
    k = logits.shape[1]
    probs = logits.softmax(dim=1)
    onehot = F.one_hot(target.long(), k).movedim(-1, 1).to(probs.dtype)
    if mask is not None:
        m = mask.to(probs.dtype).unsqueeze(1)
        probs, onehot = probs * m, onehot * m
    dims = tuple(range(2, logits.ndim)) if per_sample else (0, *range(2, logits.ndim))
    inter = (probs * onehot).sum(dims)
    if squared:
        denom = probs.pow(2).sum(dims) + onehot.pow(2).sum(dims)
    else:
        denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + eps) / (denom + eps)  # [K] or [B, K]
    if not include_background:
        dice = dice[..., 1:]
    return 1 - dice.mean()


#: Supervised losses by name: kind -> (weight of CE, Dice options) with loss = w (CE + Dice), or CE alone.
SUPERVISED_LOSSES: dict[str, dict[str, object] | None] = {
    # the CoraNet paper's L_ce
    "ce": None,
    # 0.5 (CE + soft Dice) with linear denominators over all classes, pooled over the batch (ours, kept for the
    # committed cpu-preset records; not SSL4MIS's form)
    "ce+dice": {"squared": False, "include_background": True},
    # HiLab-git/SSL4MIS code/utils/losses.py DiceLoss: squared denominators, all classes, pooled over the batch
    "ce+dice-ssl4mis": {"squared": True, "include_background": True},
    # yulequan/UA-MT code/utils/losses.py dice_loss: squared denominators, foreground only (binary there; here the
    # mean over the foreground classes), pooled over the batch
    "ce+dice-uamt": {"squared": True, "include_background": False},
}


def check_supervised_loss(kind: str, option: str = "loss") -> None:
    """One-line error for an unknown ``params.<option>`` (``loss``; CoraNet's ``st_loss`` too)."""
    if kind not in SUPERVISED_LOSSES:
        raise ValueError(f"params.{option} must be one of {', '.join(SUPERVISED_LOSSES)}, got {kind!r}")


def supervised_loss(
    logits: torch.Tensor, target: torch.Tensor, kind: str = "ce", mask: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Named supervised terms of a :data:`SUPERVISED_LOSSES` ``kind``: ``"ce"`` (paper) or 0.5 (CE + Dice).

    ``mask [B, *S]``: only those pixels count — the CE summed over them divided by the batch's pixel count (as
    :func:`weighted_cross_entropy` ``"pixels"``), the Dice sums restricted to them.
    """
    check_supervised_loss(kind)
    ce = cross_entropy(logits, target) if mask is None else weighted_cross_entropy(logits, target, mask=mask)
    dice_options = SUPERVISED_LOSSES[kind]
    if dice_options is None:
        return {"sup/ce": ce, "sup/total": ce}
    dice = soft_dice_loss(logits, target, mask=mask, **dice_options)  # type: ignore[arg-type]
    return {"sup/ce": ce, "sup/dice": dice, "sup/total": 0.5 * (ce + dice)}


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``values [B, *S]`` over the pixels where ``mask`` is set (all pixels if None; 0 if the mask is empty)."""
    if mask is None:
        return values.mean()
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp_min(1.0)


def weighted_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    normalize: str = "pixels",
) -> torch.Tensor:
    """Cross-entropy with per-class costs ``weight [K]`` restricted to ``mask``.

    Each pixel contributes ``w[target] * CE``; the sum over pixels where ``mask`` is set is divided by:

    * ``"pixels"``: the number of pixels in the batch (masked or not) — a constant, so that the paper's sums
      (CoraNet Eq. 1, 7) keep their relative weights whatever the size of the region;
    * ``"mask"``: the number of pixels in the mask (a mean over the region; the released CoraNet unlabelled CE);
    * ``"weights"``: the sum of ``w[target]`` over the mask (PyTorch's weighted mean; the released labelled CE).
    """
    target = target.long()
    ce = F.cross_entropy(logits, target, reduction="none")  # [B, *S]
    w = weight[target] if weight is not None else torch.ones_like(ce)
    m = torch.ones_like(ce) if mask is None else mask.to(ce.dtype)
    total = (w * ce * m).sum()
    if normalize == "pixels":
        return total / ce.numel()
    if normalize == "mask":
        return masked_mean(w * ce, mask)
    if normalize == "weights":
        return total / (w * m).sum().clamp_min(1e-12)
    raise ValueError(f"unknown normalisation {normalize!r}: use 'pixels', 'mask' or 'weights'")


def masked_soft_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, eps: float = 1e-5, per_sample: bool = False
) -> torch.Tensor:
    """Soft Dice loss (all classes, background included) with intersection and sums restricted to ``mask``."""
    return soft_dice_loss(logits, target, True, eps, per_sample=per_sample, mask=mask)


def masked_squared_error(
    p: torch.Tensor, q: torch.Tensor, mask: torch.Tensor | None = None, normalize: str = "pixels"
) -> torch.Tensor:
    """Sum over channels of ``(p - q)^2`` at pixels where ``mask`` is set, divided by the batch's pixel count
    (``"pixels"``, CoraNet Eq. 8 up to a constant) or by the mask's pixel count (``"mask"``).

    ``p``, ``q``: ``[B, K, *S]`` (typically softmax probabilities); ``mask``: ``[B, *S]``.
    """
    sq = (p - q).pow(2).sum(1)  # [B, *S]
    if normalize == "mask":
        return masked_mean(sq, mask)
    if normalize == "pixels":
        m = torch.ones_like(sq) if mask is None else mask.to(sq.dtype)
        return (sq * m).sum() / sq.numel()
    raise ValueError(f"unknown normalisation {normalize!r}: use 'pixels' or 'mask'")
