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
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-sample random augmentation applied identically to image and label.

    ``"flip-rot"``: rotation by k x 90 degrees (k uniform in 0..3) and a horizontal flip with p = 0.5 (the rot90 +
    flip part of the SSL4MIS augmentation; square images required for odd k). ``"none"``: identity.
    """
    if kind == "none":
        return image, label
    if kind != "flip-rot":
        raise ValueError(f"unknown augmentation {kind!r}: use one of {AUGMENTATIONS}")
    n = image.shape[0]
    ks = torch.randint(0, 4, (n,), generator=generator).tolist()
    flips = (torch.rand(n, generator=generator) < 0.5).tolist()
    if image.shape[-1] != image.shape[-2]:
        ks = [2 * (k % 2 == 0) for k in ks]  # only 0 / 180 degrees on non-square images
    imgs, labs = [], []
    for i in range(n):
        im = torch.rot90(image[i], ks[i], dims=(-2, -1))
        lb = None if label is None else torch.rot90(label[i], ks[i], dims=(-2, -1))
        if flips[i]:
            im = im.flip(-1)
            lb = None if lb is None else lb.flip(-1)
        imgs.append(im)
        labs.append(lb)
    out_label = None if label is None else torch.stack(labs)  # type: ignore[arg-type]
    return torch.stack(imgs), out_label
