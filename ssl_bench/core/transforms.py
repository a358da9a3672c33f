"""Resizing of 2D batches to the training size (torch, batched); shared by training and evaluation.

Two modes (``dataset.image_resize``):

* ``"bilinear"``: images bilinear, labels nearest-exact (both with half-pixel centres, ``align_corners=False``);
* ``"nearest"``: images *and* labels with :func:`zoom_nearest`, which equals SSL4MIS's
  ``scipy.ndimage.zoom(x, (h / H, w / W), order=0)`` exactly (its ``RandomGenerator`` and ``test_single_volume``).

Shapes: images ``[N, C, H, W]`` float, labels ``[N, H, W]`` integer.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

#: dataset.image_resize values
IMAGE_RESIZE = ("bilinear", "nearest")


def check_image_resize(mode: str) -> None:
    if mode not in IMAGE_RESIZE:
        raise ValueError(f"dataset.image_resize must be one of {IMAGE_RESIZE}, got {mode!r}")


def nearest_index(coord: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scipy's order-0 sampling of an axis of length ``n`` at float64 ``coord``: index ``floor(coord + 0.5)``
    (clamped) and whether ``0 <= coord <= n - 1`` (scipy's ``mode="constant"``: 0 outside)."""
    idx = torch.floor(coord + 0.5).long().clamp_(0, n - 1)
    return idx, (coord >= 0) & (coord <= n - 1)


def zoom_nearest(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Order-0 resize of the last two axes of ``x [..., H, W]`` (any dtype) to ``size``, equal to
    ``scipy.ndimage.zoom(x, (h / H, w / W), order=0)``: output pixel ``o`` samples input ``o (H - 1) / (h - 1)``
    (corners aligned; scipy's ``grid_mode=False``), rounded half up; an output whose float64 coordinate lands
    past the last input pixel is 0, as in scipy."""
    gathered = x
    for axis, (n_in, n_out) in zip((-2, -1), zip(x.shape[-2:], size, strict=True), strict=True):
        if n_in == n_out:
            continue
        ratio = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        coord = torch.arange(n_out, dtype=torch.float64) * ratio
        idx, valid = nearest_index(coord, n_in)
        gathered = gathered.index_select(axis, idx.to(x.device))
        if not bool(valid.all()):
            shape = [1] * gathered.ndim
            shape[axis] = n_out
            gathered = gathered * valid.to(x.device, gathered.dtype).view(shape)
    return gathered


def resize_images(images: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize ``[N, C, H, W]`` images (or logits) bilinearly or with :func:`zoom_nearest` (no-op if already
    ``size``)."""
    check_image_resize(mode)
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    if mode == "nearest":
        return zoom_nearest(images, size)
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False)


def resize_labels(labels: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize ``[N, H, W]`` label maps for images resized with ``mode``: nearest-exact for ``"bilinear"`` images,
    :func:`zoom_nearest` (the images' own sampling grid) for ``"nearest"``; no-op if already ``size``."""
    check_image_resize(mode)
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    if mode == "nearest":
        return zoom_nearest(labels, size)
    out = F.interpolate(labels[:, None].float(), size=size, mode="nearest-exact")
    return out[:, 0].to(labels.dtype)


def prepare_slices(
    images: list[np.ndarray], labels: list[np.ndarray] | None, size: tuple[int, int], mode: str = "bilinear"
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Slices of any sizes -> stacked tensors at the training ``size``.

    Args:
        images: N arrays ``(C, H_i, W_i)``; labels: N arrays ``(H_i, W_i)`` or None.
        mode: ``dataset.image_resize`` (see :func:`resize_images` and :func:`resize_labels`).

    Returns:
        images ``[N, C, *size]`` float32, labels ``[N, *size]`` uint8 or None.
    """
    check_image_resize(mode)
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
        batch = torch.from_numpy(np.stack([images[i] for i in idx]).astype(np.float32))
        out_img[sel] = resize_images(batch, size, mode)
        if out_lab is not None and labels is not None:
            out_lab[sel] = resize_labels(torch.from_numpy(np.stack([labels[i] for i in idx])), size, mode)
    return out_img, out_lab
