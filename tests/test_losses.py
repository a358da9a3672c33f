"""Masked losses (CoraNet Eq. 7-8, the released code's masked Dice, UA-MT's masked consistency): pixels outside the
mask get exactly zero gradient, pixels inside get some; normalisations are the documented ones."""

from __future__ import annotations

import pytest
import torch

from ssl_bench.training.consistency import softmax_mse
from ssl_bench.training.losses import (
    masked_mean,
    masked_soft_dice_loss,
    masked_squared_error,
    weighted_cross_entropy,
)

B, K, H, W = 2, 3, 6, 7


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, K, H, W, generator=g, requires_grad=True)
    target = torch.randint(0, K, (B, H, W), generator=g)
    teacher = torch.randn(B, K, H, W, generator=g).softmax(1)
    mask = torch.rand(B, H, W, generator=g) < 0.4
    return logits, target, teacher, mask


LOSSES = {
    "wce-pixels": lambda lg, y, q, m: weighted_cross_entropy(lg, y, torch.tensor([5.0, 1.0, 2.0]), m, "pixels"),
    "wce-mask": lambda lg, y, q, m: weighted_cross_entropy(lg, y, None, m, "mask"),
    "wce-weights": lambda lg, y, q, m: weighted_cross_entropy(lg, y, torch.tensor([1.0, 5.0, 1.0]), m, "weights"),
    "dice": lambda lg, y, q, m: masked_soft_dice_loss(lg, y, m),
    "sq-pixels": lambda lg, y, q, m: masked_squared_error(lg.softmax(1), q, m, "pixels"),
    "sq-mask": lambda lg, y, q, m: masked_squared_error(lg.softmax(1), q, m, "mask"),
    "softmax-mse": lambda lg, y, q, m: softmax_mse(lg, q, m),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_masked_losses_have_zero_gradient_outside_the_mask(name):
    logits, target, teacher, mask = _inputs()
    LOSSES[name](logits, target, teacher, mask).backward()
    grad = logits.grad.abs().sum(1)  # [B, H, W]
    assert torch.all(grad[~mask] == 0), "a masked-out pixel receives gradient"
    assert torch.all(grad[mask] > 0), "a pixel inside the mask receives no gradient"


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_masked_losses_ignore_values_outside_the_mask(name):
    """Changing logits/targets where the mask is off leaves the loss unchanged (for normalisations that do not
    count the whole batch the value is identical; "pixels" divides by the constant batch size)."""
    logits, target, teacher, mask = _inputs()
    out = LOSSES[name](logits, target, teacher, mask)
    other_logits, other_target, other_teacher, _ = _inputs(seed=1)
    m = mask[:, None]
    mixed_logits = torch.where(m, logits, other_logits).detach()
    mixed_target = torch.where(mask, target, other_target)
    mixed_teacher = torch.where(m, teacher, other_teacher)
    again = LOSSES[name](mixed_logits, mixed_target, mixed_teacher, mask)
    assert again.item() == pytest.approx(out.item(), rel=1e-6, abs=1e-7)


def test_empty_mask_gives_zero_loss_and_zero_gradient():
    logits, target, teacher, mask = _inputs()
    empty = torch.zeros_like(mask)
    for name, fn in LOSSES.items():
        if name == "dice":  # 1 - (eps / eps) = 0 by construction; checked below
            continue
        logits.grad = None
        out = fn(logits, target, teacher, empty)
        out.backward()
        assert out.item() == 0.0, name
        assert torch.all(logits.grad == 0), name
    assert masked_soft_dice_loss(logits, target, empty).item() == pytest.approx(0.0, abs=1e-6)


def test_normalisations():
    logits, target, teacher, mask = _inputs()
    ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    n = mask.sum()
    assert weighted_cross_entropy(logits, target, mask=mask, normalize="mask").item() == pytest.approx(
        (ce[mask].sum() / n).item(), rel=1e-6
    )
    assert weighted_cross_entropy(logits, target, mask=mask, normalize="pixels").item() == pytest.approx(
        (ce[mask].sum() / mask.numel()).item(), rel=1e-6
    )
    w = torch.tensor([5.0, 1.0, 2.0])
    assert weighted_cross_entropy(logits, target, w, mask, "weights").item() == pytest.approx(
        ((w[target] * ce)[mask].sum() / w[target][mask].sum()).item(), rel=1e-6
    )
    sq = (logits.softmax(1) - teacher).pow(2).sum(1)  # Eq. 8: channel sum
    assert masked_squared_error(logits.softmax(1), teacher, mask).item() == pytest.approx(
        (sq[mask].sum() / mask.numel()).item(), rel=1e-6
    )
    assert masked_mean(sq, mask).item() == pytest.approx(sq[mask].mean().item(), rel=1e-6)
