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
    logits: torch.Tensor, target: torch.Tensor, include_background: bool = True, eps: float = 1e-5
) -> torch.Tensor:
    """1 - mean over classes of the soft Dice between softmax(logits) and one-hot(target)."""
    k = logits.shape[1]
    probs = logits.softmax(dim=1)
    onehot = F.one_hot(target.long(), k).movedim(-1, 1).to(probs.dtype)
    dims = (0, *range(2, logits.ndim))
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + eps) / (denom + eps)
    if not include_background:
        dice = dice[1:]
    return 1 - dice.mean()


def supervised_loss(logits: torch.Tensor, target: torch.Tensor, kind: str = "ce") -> dict[str, torch.Tensor]:
    """Named supervised terms: ``kind`` is ``"ce"`` (paper) or ``"ce+dice"`` (0.5 CE + 0.5 Dice, SSL4MIS)."""
    ce = cross_entropy(logits, target)
    if kind == "ce":
        return {"sup/ce": ce, "sup/total": ce}
    if kind == "ce+dice":
        dice = soft_dice_loss(logits, target)
        return {"sup/ce": ce, "sup/dice": dice, "sup/total": 0.5 * (ce + dice)}
    raise ValueError(f"unknown supervised loss {kind!r}: use 'ce' or 'ce+dice'")
