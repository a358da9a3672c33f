"""Resizing of 2D batches to the training size (torch, batched); shared by training and evaluation.

Shapes: images ``[N, C, H, W]`` float, labels ``[N, H, W]`` integer.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


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
