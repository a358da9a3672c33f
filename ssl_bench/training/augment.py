"""Geometric augmentation of 2D batches (torch, batched, deterministic given a generator).

Kinds (``dataset.augment``):

* ``"none"``: identity;
* ``"flip-rot"``: rotation by k x 90 degrees (k uniform in 0..3) and a horizontal flip with p = 0.5;
* ``"ssl4mis"``: HiLab-git/SSL4MIS ``code/dataloaders/dataset.py`` ``RandomGenerator`` as used for its published
  numbers (before its June 2025 commit 24db034 changed the probabilities): with p = 0.5 ``random_rot_flip``
  (``np.rot90`` by k uniform in 0..3, then ``np.flip`` along axis 0 or 1 with p = 0.5 each; always a flip), else
  with p = 0.5 ``random_rotate`` (``ndimage.rotate(x, angle, order=0, reshape=False)`` with the integer angle
  ``np.random.randint(-20, 20)``, i.e. uniform in -20..19 degrees, nearest neighbour, 0 outside, image and label
  alike), else nothing: P = 1/2, 1/4, 1/4.
  A flip along axis 0 after rot90^k is the flip along axis 1 after rot90^(k+2), so ``random_rot_flip`` is stored as
  (k or k + 2 mod 4, flip = 1); :func:`rotate_nearest` reproduces ``ndimage.rotate(order=0, reshape=False)``
  exactly (tests/test_data.py). Deviations: SSL4MIS augments the native-size slice and then zooms it to 256^2;
  here slices are resized first (``dataset.image_resize``) and augmented at the training size; on non-square
  slices only the k in {0, 2} reflections are drawn (flip left-right or up-down), since rot90 would change the
  shape.

Representation: ``aug [N, 3]`` float32, per sample (k: rot90 count, flip: 1 = flip of the last axis, angle:
degrees), applied in that order; :func:`apply_augment` re-applies or undoes it on any per-sample map. Legacy
``[N, 2]`` (k, flip) tensors (``consistency.random_dihedral``) are accepted (angle 0). The rot90/flip part
inverts exactly; the inverse of a rotation is the rotation by ``-angle``, which is lossy: corners rotated out of
the image come back as 0, and two nearest-neighbour resamplings can move a pixel's value by one pixel.

Shapes: images ``[N, C, H, W]`` float, labels ``[N, H, W]`` integer.
"""

from __future__ import annotations

import math

import torch

from ssl_bench.core.transforms import nearest_index

AUGMENTATIONS = ("none", "flip-rot", "ssl4mis")
#: SSL4MIS random_rotate: np.random.randint(-20, 20) degrees (the high end excluded)
SSL4MIS_ANGLES = (-20, 20)


def augment_2d(
    image: torch.Tensor, label: torch.Tensor | None, kind: str, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Per-sample random augmentation ``kind`` (see the module docstring) applied identically to image and label.

    Returns:
        image, label (or None) and ``aug [N, 3]`` float32 (k, flip, angle); apply the same transform to any other
        per-sample map with :func:`apply_augment`.
    """
    n = image.shape[0]
    aug = torch.zeros((n, 3), dtype=torch.float32)
    if kind == "none":
        return image, label, aug
    square = image.shape[-1] == image.shape[-2]
    if kind == "flip-rot":
        ks = torch.randint(0, 4, (n,), generator=generator)
        flips = (torch.rand(n, generator=generator) < 0.5).long()
        if not square:
            ks = 2 * (ks % 2 == 0).long()
        aug[:, 0], aug[:, 1] = ks.float(), flips.float()
    elif kind == "ssl4mis":
        rot_flip = torch.rand(n, generator=generator) > 0.5  # `if random.random() > 0.5`
        rotate = ~rot_flip & (torch.rand(n, generator=generator) > 0.5)  # `elif random.random() > 0.5`
        ks = torch.randint(0, 4, (n,), generator=generator)
        axis = torch.randint(0, 2, (n,), generator=generator)
        angles = torch.randint(*SSL4MIS_ANGLES, (n,), generator=generator)
        ks = (ks + 2 * (axis == 0).long()) % 4  # np.flip(axis=0) o rot90^k == np.flip(axis=1) o rot90^(k+2)
        if not square:
            ks = 2 * (ks // 2)
        aug[:, 0] = torch.where(rot_flip, ks, 0).float()
        aug[:, 1] = rot_flip.float()
        aug[:, 2] = torch.where(rotate, angles, 0).float()
    else:
        raise ValueError(f"unknown augmentation {kind!r}: use one of {AUGMENTATIONS}")
    return apply_augment(image, aug), None if label is None else apply_augment(label, aug), aug


def rotate_nearest(x: torch.Tensor, angle: float) -> torch.Tensor:
    """``x [..., H, W]`` (any dtype) rotated by ``angle`` degrees about the image centre with nearest-neighbour
    sampling and 0 outside: ``scipy.ndimage.rotate(x, angle, axes=(1, 0), order=0, reshape=False)`` per 2D map.

    Output pixel o samples the input at ``R (o - c) + c``, ``c = ((H - 1) / 2, (W - 1) / 2)``,
    ``R = [[cos a, sin a], [-sin a, cos a]]`` in (row, column) coordinates, rounded half up.
    """
    if angle == 0:
        return x
    h, w = x.shape[-2:]
    a = math.radians(angle)
    cos, sin = math.cos(a), math.sin(a)
    rows, cols = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    dr, dc = rows - (h - 1) / 2, cols - (w - 1) / 2
    ri, rv = nearest_index(cos * dr + sin * dc + (h - 1) / 2, h)
    ci, cv = nearest_index(-sin * dr + cos * dc + (w - 1) / 2, w)
    flat = (ri * w + ci).reshape(-1).to(x.device)
    out = x.reshape(*x.shape[:-2], h * w).index_select(-1, flat).reshape(x.shape)
    return out * (rv & cv).to(x.device, out.dtype)


def apply_augment(x: torch.Tensor, aug: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """Apply (or undo) per-sample transforms ``aug [N, 3]`` (k, flip, angle; or ``[N, 2]`` (k, flip)) to
    ``x [N, ..., H, W]``: forward rot90^k, flip, rotation by angle; inverse in the reverse order (rotation by
    -angle: lossy, see the module docstring)."""
    out = []
    for i in range(x.shape[0]):
        k, flip = int(aug[i, 0]), bool(aug[i, 1])
        angle = float(aug[i, 2]) if aug.shape[1] > 2 else 0.0
        xi = x[i]
        if not inverse:
            xi = torch.rot90(xi, k, dims=(-2, -1))
            xi = xi.flip(-1) if flip else xi
            xi = rotate_nearest(xi, angle)
        else:
            xi = rotate_nearest(xi, -angle)
            xi = xi.flip(-1) if flip else xi
            xi = torch.rot90(xi, -k, dims=(-2, -1))
        out.append(xi)
    return torch.stack(out)
