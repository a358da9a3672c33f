"""Bidirectional copy-paste (BCP) as batched torch ops: the box mask, the two mixing directions, the mixed loss.

Bai, Chen, Li, Shen, Wang, "Bidirectional Copy-Paste for Semi-Supervised Medical Image Segmentation", CVPR 2023
(arXiv:2305.00673). Reference: github.com/DeepMed-Lab-ECNU/BCP, ``code/ACDC_BCP_train.py`` (``generate_mask``,
``mix_loss``, ``get_ACDC_2DLargestCC``, the mixing lines of ``pre_train`` and ``self_train``) and
``code/utils/losses.py`` (``DiceLoss`` with a mask). Written here from that description; used by
``methods/bcp.py`` and ``methods/abd.py`` (ABD, Chi et al. CVPR 2024, builds on BCP's self-training).

Notation (shapes: images ``[B, C, *S]``, label maps ``[B, *S]``, masks ``[*S]``, ``S`` 2D or 3D):

* ``keep`` M: 1 everywhere except a zero-valued box with sides ``int(ratio * size)`` per spatial axis (BCP:
  ratio 2/3), at a uniformly drawn corner ``[0, size - side)``; one box for the whole batch (``generate_mask``).
* ``mix(a, b, M) = a * M + b * (1 - M)``: ``a`` is the *background* (kept outside the box), ``b`` the *foreground*
  (pasted into the box).
* bidirectional mixing of labelled pairs (l_a, l_b) and unlabelled pairs (u_a, u_b) (the first / second halves of
  each batch, as the reference splits its 12 + 12 batch into 6 + 6 + 6 + 6):
  ``x_into_u = mix(u_a, l_a, M)`` (labelled foreground on an unlabelled background) and
  ``x_into_l = mix(l_b, u_b, M)`` (unlabelled foreground on a labelled background).
* mixed loss (``mix_loss``): for logits z and two targets, ``y_bg`` on the kept pixels and ``y_fg`` in the box,
  ``Dice = w_bg D(z, y_bg; M) + w_fg D(z, y_fg; 1 - M)`` and ``CE = w_bg CE(z, y_bg; M) + w_fg CE(z, y_fg; 1 - M)``
  with D the masked squared-denominator Dice over all K classes pooled over the batch,
  ``1 - 1/K sum_k (2 sum m p_k g_k + e) / (sum m p_k^2 + sum m g_k^2 + e)``, e = 1e-10, and CE the masked mean
  ``sum m CE / sum m``; the pixels of ground truth get weight 1, those of pseudo-labels ``u_weight`` (0.5).
  BCP's objective per step is ``(Dice + CE) / 2`` summed over the two mixed batches.

The mixing itself is :func:`ssl_bench.training.strong_augment.mix_with_mask` (the suite's one mixing rule, also
CutMix's), with the box ``M = 0`` as its mask.

Randomness: the box position is drawn with a torch generator (methods pass
:func:`~ssl_bench.training.strong_augment.step_generator`, seeded from the global RNG that the trainer re-seeds at
every step, so a resumed run draws the same boxes; None = the global RNG). The reference draws it with
``np.random``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from ssl_bench.training.losses import soft_dice_loss, weighted_cross_entropy
from ssl_bench.training.strong_augment import mix_with_mask

#: BCP's box side as a fraction of each image side (``generate_mask``: ``int(img_x * 2 / 3)``).
BCP_RATIO = 2 / 3
#: smoothing of the reference's ``DiceLoss`` (``_dice_mask_loss``)
DICE_EPS = 1e-10


def box_side(size: int, ratio: float = BCP_RATIO) -> int:
    """``int(size * ratio)`` as the reference computes ``int(size * 2 / 3)`` (no float round-down at multiples of 3)."""
    return int(size * ratio + 1e-9)


def box_keep_mask(
    spatial: Sequence[int],
    ratio: float = BCP_RATIO,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """BCP's mask M ``[*spatial]`` float: 0 in one random box of sides ``box_side(s, ratio)``, 1 elsewhere.

    The box's first index on an axis of size s is uniform in ``[0, s - side)`` (``np.random.randint(0, s - side)``;
    0 when ``side == s``, where the reference would fail).
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"copy-paste box ratio must be in [0, 1], got {ratio}")
    keep = torch.ones(tuple(spatial), device=device)
    region = []
    for s in spatial:
        side = box_side(s, ratio)
        start = int(torch.randint(0, max(1, s - side), (1,), generator=generator))
        region.append(slice(start, start + side))
    keep[tuple(region)] = 0.0
    return keep


def halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two halves ``x[:n // 2], x[n // 2:]`` of a batch (the reference's ``img_a, img_b``)."""
    n = x.shape[0] // 2
    return x[:n], x[n:]


def check_pairs(n_labelled: int, n_unlabelled: int | None = None) -> None:
    """Copy-paste pairs the halves of the labelled (and unlabelled) batch: both must split into equal halves."""
    if n_labelled < 2 or n_labelled % 2:
        raise ValueError(f"copy-paste needs an even labelled batch of at least 2, got trainer.batch_size={n_labelled}")
    if n_unlabelled is not None and n_unlabelled != n_labelled:
        raise ValueError(
            f"bidirectional copy-paste pairs labelled and unlabelled images: trainer.unlabeled_batch_size "
            f"({n_unlabelled}) must equal trainer.batch_size ({n_labelled})"
        )


def mix(background: torch.Tensor, foreground: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``background * M + foreground * (1 - M)`` for images ``[B, C, *S]`` or label maps ``[B, *S]`` (integer maps
    stay integer); ``keep`` M ``[*S]`` broadcasts over the batch (and channels)."""
    box = (keep == 0).expand(background.shape[0], *keep.shape)  # [B, *S]: take the foreground
    return mix_with_mask(background, foreground, box)


def bidirectional_mix(
    l_a: torch.Tensor, u_a: torch.Tensor, l_b: torch.Tensor, u_b: torch.Tensor, keep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mix(u_a, l_a, M), mix(l_b, u_b, M))``: labelled foreground into unlabelled background, and unlabelled
    foreground into labelled background (images or label maps alike)."""
    return mix(u_a, l_a, keep), mix(l_b, u_b, keep)


def region_losses(
    logits: torch.Tensor, target_bg: torch.Tensor, target_fg: torch.Tensor, keep: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Unweighted terms of the mixed loss: masked Dice and CE of ``target_bg`` on the kept pixels (M = 1) and of
    ``target_fg`` in the box (M = 0). Keys ``dice_bg, ce_bg, dice_fg, ce_fg``; each a scalar."""
    m_bg = keep.expand(logits.shape[0], *keep.shape)
    m_fg = 1.0 - m_bg
    out = {}
    for name, target, m in (("bg", target_bg, m_bg), ("fg", target_fg, m_fg)):
        out[f"dice_{name}"] = soft_dice_loss(logits, target.long(), eps=DICE_EPS, squared=True, mask=m)
        out[f"ce_{name}"] = weighted_cross_entropy(logits, target.long(), mask=m, normalize="mask")
    return out


def mixed_loss(
    logits: torch.Tensor,
    target_bg: torch.Tensor,
    target_fg: torch.Tensor,
    keep: torch.Tensor,
    weight_bg: float = 1.0,
    weight_fg: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's ``mix_loss``: ``(w_bg D_bg + w_fg D_fg, w_bg CE_bg + w_fg CE_fg)`` (see the module docstring)."""
    t = region_losses(logits, target_bg, target_fg, keep)
    return weight_bg * t["dice_bg"] + weight_fg * t["dice_fg"], weight_bg * t["ce_bg"] + weight_fg * t["ce_fg"]


def bidirectional_loss(
    out_into_u: torch.Tensor,
    out_into_l: torch.Tensor,
    y_a: torch.Tensor,
    y_b: torch.Tensor,
    pl_a: torch.Tensor,
    pl_b: torch.Tensor,
    keep: torch.Tensor,
    u_weight: float,
) -> dict[str, torch.Tensor]:
    """BCP's self-training objective on the two mixed batches, split into ground-truth and pseudo-label terms.

    ``out_into_u`` are the logits of ``mix(u_a, l_a)`` (targets: pseudo-label ``pl_a`` outside, ``y_a`` in the box),
    ``out_into_l`` those of ``mix(l_b, u_b)`` (``y_b`` outside, ``pl_b`` in the box). Returns ``sup/dice``, ``sup/ce``
    (ground-truth pixels), ``unsup/dice``, ``unsup/ce`` (pseudo-labelled pixels), ``sup/total`` and ``loss`` =
    ``(sup/dice + sup/ce) / 2 + u_weight (unsup/dice + unsup/ce) / 2``, which is the reference's
    ``(Dice + CE) / 2`` with ``mix_loss(out_unl, plab_a, lab_a, unlab=True) + mix_loss(out_l, lab_b, plab_b)``.
    """
    t_u = region_losses(out_into_u, pl_a, y_a, keep)
    t_l = region_losses(out_into_l, y_b, pl_b, keep)
    out = {
        "sup/dice": t_u["dice_fg"] + t_l["dice_bg"],
        "sup/ce": t_u["ce_fg"] + t_l["ce_bg"],
        "unsup/dice": t_u["dice_bg"] + t_l["dice_fg"],
        "unsup/ce": t_u["ce_bg"] + t_l["ce_fg"],
    }
    out["sup/total"] = 0.5 * (out["sup/dice"] + out["sup/ce"])
    out["loss"] = out["sup/total"] + u_weight * 0.5 * (out["unsup/dice"] + out["unsup/ce"])
    return out


def largest_component(label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per sample and foreground class, keep only the largest connected component of ``label == c`` (the rest
    becomes background): ``get_ACDC_2DLargestCC`` for any K and 2D or 3D maps ``[B, *S]``.

    Connectivity is full (8 neighbours in 2D, 26 in 3D), skimage's ``label`` default; ties between equally large
    components keep the first in raster order; a class with no pixel stays empty.
    """
    arr = label.detach().cpu().numpy()
    out = np.zeros_like(arr)
    structure = ndimage.generate_binary_structure(arr.ndim - 1, arr.ndim - 1)
    for i in range(arr.shape[0]):
        for c in range(1, num_classes):
            components, n = ndimage.label(arr[i] == c, structure=structure)
            if n == 0:
                continue
            sizes = np.bincount(components.ravel())[1:]
            out[i][components == int(np.argmax(sizes)) + 1] = c
    return torch.from_numpy(out).to(label.device)
