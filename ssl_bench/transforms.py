"""Resizing and augmentation of 2D batches (torch, batched, deterministic given a generator).

Shapes: images ``[N, C, H, W]`` float, labels ``[N, H, W]`` integer.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

AUGMENTATIONS = ("none", "flip-rot")


def resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``[N, C, H, W]`` images (no-op if already ``size``)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False)


def resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of ``[N, H, W]`` label maps (no-op if already ``size``)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    out = F.interpolate(labels[:, None].float(), size=size, mode="nearest-exact")
    return out[:, 0].to(labels.dtype)


def prepare_slices(
    images: list[np.ndarray], labels: list[np.ndarray] | None, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Slices of any sizes -> stacked tensors at the training ``size``.

    Args:
        images: N arrays ``(C, H_i, W_i)``; labels: N arrays ``(H_i, W_i)`` or None.

    Returns:
        images ``[N, C, *size]`` float32 (bilinear), labels ``[N, *size]`` uint8 (nearest) or None.
    """
    n = len(images)
    if n == 0:
        raise ValueError("no slices to prepare")
    out_img = torch.empty((n, images[0].shape[0], *size), dtype=torch.float32)
    out_lab = None if labels is None else torch.empty((n, *size), dtype=torch.uint8)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        by_shape.setdefault(tuple(im.shape), []).append(i)
    for idx in by_shape.values():
        sel = torch.as_tensor(idx)
        out_img[sel] = resize_images(torch.from_numpy(np.stack([images[i] for i in idx]).astype(np.float32)), size)
        if out_lab is not None and labels is not None:
            out_lab[sel] = resize_labels(torch.from_numpy(np.stack([labels[i] for i in idx])), size)
    return out_img, out_lab


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
