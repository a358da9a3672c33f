"""Geometric augmentation of 2D batches (torch, batched, deterministic given a generator).

Shapes: images ``[N, C, H, W]`` float, labels ``[N, H, W]`` integer.
"""

from __future__ import annotations

import torch

AUGMENTATIONS = ("none", "flip-rot")


def augment_2d(
    image: torch.Tensor, label: torch.Tensor | None, kind: str, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Per-sample random augmentation applied identically to image and label.

    ``"flip-rot"``: rotation by k x 90 degrees (k uniform in 0..3) and a horizontal flip with p = 0.5 (the rot90 +
    flip part of the SSL4MIS augmentation; on non-square images only k in {0, 2}). ``"none"``: identity.

    Returns:
        image, label (or None) and ``aug`` ``[N, 2]`` int64: per sample (k, flip); apply the same transform to
        any other per-sample map with :func:`apply_augment`.
    """
    n = image.shape[0]
    if kind == "none":
        return image, label, torch.zeros((n, 2), dtype=torch.long)
    if kind != "flip-rot":
        raise ValueError(f"unknown augmentation {kind!r}: use one of {AUGMENTATIONS}")
    ks = torch.randint(0, 4, (n,), generator=generator)
    flips = (torch.rand(n, generator=generator) < 0.5).long()
    if image.shape[-1] != image.shape[-2]:
        ks = 2 * (ks % 2 == 0).long()
    aug = torch.stack([ks, flips], dim=1)
    return apply_augment(image, aug), None if label is None else apply_augment(label, aug), aug


def apply_augment(x: torch.Tensor, aug: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """Apply (or undo) per-sample (k, flip) transforms ``aug [N, 2]`` to ``x [N, ..., H, W]``."""
    out = []
    for i in range(x.shape[0]):
        k, flip = int(aug[i, 0]), bool(aug[i, 1])
        xi = x[i]
        if not inverse:
            xi = torch.rot90(xi, k, dims=(-2, -1))
            xi = xi.flip(-1) if flip else xi
        else:
            xi = xi.flip(-1) if flip else xi
            xi = torch.rot90(xi, -k, dims=(-2, -1))
        out.append(xi)
    return torch.stack(out)
