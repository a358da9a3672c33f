"""Strong augmentation of grayscale 2D slice batches (FixMatch, UniMatch, BCP): batched torch ops, seeded.

Every random draw comes from the ``torch.Generator`` passed in (a CPU generator; the per-sample numbers are drawn on
the CPU and moved to the images' device), so a run resumed from a checkpoint draws the same augmentations as an
uninterrupted one. Methods get one per training step from :func:`step_generator`.

Pieces (images ``[B, 1, H, W]`` in [0, 1]; the intensity ops work on any ``[B, C, *S]``):

* :func:`intensity_jitter`: brightness and contrast factors ``U[1 - s, 1 + s]`` in a random order per sample, each
  clamped to [0, 1] (torchvision ``ColorJitter`` on a one-channel image, where saturation and hue do nothing);
* :func:`random_gamma`: ``x^g`` with ``g ~ U[gamma_range]`` (in neither reference; off by default);
* :func:`gaussian_blur` / :func:`random_blur`: Gaussian kernel of standard deviation ``sigma ~ U[0.1, 2]``, radius
  ``ceil(3 sigma)``, reflect padding (UniMatch: PIL ``GaussianBlur(radius=sigma)`` with p = 0.5);
* :func:`cutmix_boxes`: UniMatch's per-sample CutMix box (``obtain_cutmix_box``: p = 0.5, area ``U[0.02, 0.4] HW``,
  aspect ``U[0.3, 1/0.3]``, top-left corner uniform, redrawn until the box fits);
* :func:`mix_with_mask`: **the** function that mixes two batches with a per-pixel mask — images, probabilities,
  logits, labels and confidences alike. CutMix here and BCP's copy-paste (``ssl_bench.training.copy_paste``) both
  use it, so the image and its target are always mixed by the same rule.

torchvision: ``torchvision.transforms.v2.functional`` (``adjust_brightness``, ``adjust_contrast``, ``adjust_gamma``,
``gaussian_blur``) takes one factor per call; the ops here take one factor per sample in one batched call and are
tested against the torchvision functions on single images (``tests/test_fixmatch_unimatch.py``).

References: UniMatch (LiheYoung/UniMatch ``more-scenarios/medical/dataset/acdc.py`` and ``dataset/transform.py``:
``ColorJitter(0.5, 0.5, 0.5, 0.25)`` with p = 0.8, ``blur(p=0.5)``, ``obtain_cutmix_box(p=0.5)``); SSL4MIS FixMatch
(HiLab-git/SSL4MIS ``code/dataloaders/dataset.py`` ``WeakStrongAugment``: ``ColorJitter(0.8, 0.8, 0.8, 0.2)``, p = 1).

Deviations from the references: float images throughout (UniMatch round-trips the slice through an 8-bit PIL image,
so its jittered views are quantised to 1/255 and its contrast mean is rounded); an exact Gaussian kernel (PIL's blur
approximates it with box filters); the CutMix box redraw stops after ``max_tries`` and then clamps the last draw
into the image (only reachable on very small or elongated images).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "StrongAugmentConfig",
    "check_strong_config",
    "cutmix_boxes",
    "gaussian_blur",
    "intensity_jitter",
    "mix_with_mask",
    "random_blur",
    "random_gamma",
    "step_generator",
    "strong_augment",
]


@dataclass
class StrongAugmentConfig:
    """Options of the strong view (mixed into a method's Config; defaults: UniMatch's medical branch)."""

    #: probability of the brightness/contrast jitter (UniMatch: 0.8; SSL4MIS FixMatch: 1.0)
    jitter_p: float = 0.8
    #: brightness factor ~ U[max(0, 1 - b), 1 + b] (torchvision ColorJitter; UniMatch 0.5, SSL4MIS FixMatch 0.8)
    brightness: float = 0.5
    #: contrast factor ~ U[max(0, 1 - c), 1 + c] around the per-image mean (UniMatch 0.5, SSL4MIS FixMatch 0.8)
    contrast: float = 0.5
    #: probability of a random gamma x^g (neither reference: 0)
    gamma_p: float = 0.0
    #: range of g
    gamma_range: tuple[float, float] = (0.7, 1.5)
    #: probability of a Gaussian blur (UniMatch: 0.5; SSL4MIS FixMatch: 0)
    blur_p: float = 0.5
    #: range of the blur's standard deviation in pixels (UniMatch: U(0.1, 2.0))
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    #: probability that a sample gets a CutMix box (UniMatch: 0.5; 0 = no CutMix)
    cutmix_p: float = 0.5
    #: box area as a fraction of the image, U[lo, hi] (UniMatch: 0.02, 0.4)
    cutmix_area: tuple[float, float] = (0.02, 0.4)
    #: box aspect ratio height / width, U[lo, hi] (UniMatch: 0.3, 1 / 0.3)
    cutmix_ratio: tuple[float, float] = (0.3, 1 / 0.3)


def check_strong_config(c: StrongAugmentConfig) -> None:
    """One-line ``ValueError`` for an impossible strong-augmentation option."""
    for name in ("jitter_p", "gamma_p", "blur_p", "cutmix_p"):
        if not 0.0 <= getattr(c, name) <= 1.0:
            raise ValueError(f"params.{name} must be in [0, 1], got {getattr(c, name)}")
    if c.brightness < 0 or c.contrast < 0:
        raise ValueError(f"params.brightness and params.contrast must be >= 0, got {c.brightness}, {c.contrast}")
    for name in ("gamma_range", "blur_sigma", "cutmix_area", "cutmix_ratio"):
        lo, hi = getattr(c, name)
        if not 0.0 < lo <= hi:
            raise ValueError(f"params.{name} must be (lo, hi) with 0 < lo <= hi, got {(lo, hi)}")
    if c.cutmix_area[1] > 1.0:
        raise ValueError(f"params.cutmix_area must lie in (0, 1], got {c.cutmix_area}")


def step_generator() -> torch.Generator:
    """A CPU generator seeded from the global torch RNG (which the trainer re-seeds at every step from the run seed
    and the step index, so the draws are the same after a resume)."""
    return torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)


def _per_sample(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``[B]`` -> ``[B, 1, ..., 1]`` on ``x``'s device and dtype, to broadcast over ``x [B, ...]``."""
    return v.to(device=x.device, dtype=x.dtype).view(-1, *([1] * (x.ndim - 1)))


def _brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * f).clamp(0.0, 1.0)


def _contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=tuple(range(1, x.ndim)), keepdim=True)  # one channel: the image's grey-level mean
    return (f * x + (1.0 - f) * mean).clamp(0.0, 1.0)


def intensity_jitter(
    x: torch.Tensor, generator: torch.Generator, *, p: float, brightness: float, contrast: float
) -> torch.Tensor:
    """With probability ``p`` per sample: brightness ``clamp(f_b x)`` and contrast ``clamp(f_c x + (1 - f_c) mean(x))``
    in a random order, ``f ~ U[max(0, 1 - s), 1 + s]``; other samples unchanged. ``x`` ``[B, C, *S]`` in [0, 1]."""
    n = x.shape[0]
    apply = torch.rand(n, generator=generator) < p
    fb = _per_sample(_uniform(n, max(0.0, 1 - brightness), 1 + brightness, generator), x)
    fc = _per_sample(_uniform(n, max(0.0, 1 - contrast), 1 + contrast, generator), x)
    contrast_first = _per_sample(torch.rand(n, generator=generator) < 0.5, x).bool()
    b_then_c = _contrast(_brightness(x, fb), fc)
    c_then_b = _brightness(_contrast(x, fc), fb)
    out = torch.where(contrast_first, c_then_b, b_then_c)
    return torch.where(_per_sample(apply, x).bool(), out, x)


def random_gamma(
    x: torch.Tensor, generator: torch.Generator, *, p: float, gamma_range: tuple[float, float]
) -> torch.Tensor:
    """With probability ``p`` per sample ``clamp(x, 0, 1)^g``, ``g ~ U[gamma_range]``. ``x`` ``[B, C, *S]``."""
    n = x.shape[0]
    apply = torch.rand(n, generator=generator) < p
    g = _per_sample(_uniform(n, *gamma_range, generator), x)
    return torch.where(_per_sample(apply, x).bool(), x.clamp(0.0, 1.0).pow(g), x)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample Gaussian blur of ``x`` ``[B, C, H, W]`` with standard deviations ``sigma`` ``[B]`` (> 0).

    Sample ``b``'s kernel is ``exp(-t^2 / (2 sigma_b^2))`` on ``t = -r_b..r_b``, ``r_b = ceil(3 sigma_b)`` (clamped to
    ``min(H, W) - 1`` for reflect padding), normalised to sum 1: torchvision's ``gaussian_blur`` with kernel size
    ``2 r_b + 1``. Separable, one grouped convolution per axis for the whole batch.
    """
    if x.ndim != 4:
        raise ValueError(f"gaussian_blur needs [B, C, H, W], got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    sigma = sigma.to(torch.float64).cpu()
    radius = torch.ceil(3.0 * sigma).clamp(max=min(h, w) - 1).long()
    rmax = int(radius.max()) if b else 0
    if rmax < 1:
        return x
    t = torch.arange(-rmax, rmax + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (t[None] / sigma[:, None]) ** 2) * (t.abs()[None] <= radius[:, None])
    kernel = (kernel / kernel.sum(1, keepdim=True)).to(device=x.device, dtype=x.dtype)  # [B, 2 rmax + 1]
    kernel = kernel.repeat_interleave(c, dim=0)  # one kernel per (sample, channel) group
    y = x.reshape(1, b * c, h, w)
    with torch.autocast(x.device.type, enabled=False):  # the view is an input: keep its precision under AMP
        y = F.conv2d(F.pad(y, (rmax, rmax, 0, 0), mode="reflect"), kernel.view(b * c, 1, 1, -1), groups=b * c)
        y = F.conv2d(F.pad(y, (0, 0, rmax, rmax), mode="reflect"), kernel.view(b * c, 1, -1, 1), groups=b * c)
    return y.reshape(b, c, h, w)


def random_blur(
    x: torch.Tensor, generator: torch.Generator, *, p: float, sigma_range: tuple[float, float]
) -> torch.Tensor:
    """With probability ``p`` per sample a Gaussian blur with ``sigma ~ U[sigma_range]`` (UniMatch ``blur``)."""
    n = x.shape[0]
    apply = torch.rand(n, generator=generator) < p
    sigma = _uniform(n, *sigma_range, generator)
    if not bool(apply.any()):
        return x
    return torch.where(_per_sample(apply, x).bool(), gaussian_blur(x, sigma), x)


def strong_augment(x: torch.Tensor, generator: torch.Generator, c: StrongAugmentConfig) -> torch.Tensor:
    """The photometric part of the strong view: jitter, then gamma, then blur (CutMix is applied by the method,
    which must mix the targets too). ``x`` ``[B, 1, H, W]`` in [0, 1] -> same shape."""
    x = intensity_jitter(x, generator, p=c.jitter_p, brightness=c.brightness, contrast=c.contrast)
    x = random_gamma(x, generator, p=c.gamma_p, gamma_range=c.gamma_range)
    return random_blur(x, generator, p=c.blur_p, sigma_range=c.blur_sigma)


def cutmix_boxes(
    n: int,
    size: tuple[int, int],
    generator: torch.Generator,
    *,
    p: float = 0.5,
    area: tuple[float, float] = (0.02, 0.4),
    ratio: tuple[float, float] = (0.3, 1 / 0.3),
    max_tries: int = 1000,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Per-sample CutMix box masks ``[n, H, W]`` bool (True inside the box; all False for samples without a box).

    UniMatch's ``obtain_cutmix_box``: with probability ``p`` a box of area ``s = U[area] H W``; then repeatedly
    ``r ~ U[ratio]``, width ``floor(sqrt(s / r))``, height ``floor(sqrt(s r))``, top-left corner uniform over the
    image, until the box fits inside it (``s`` is drawn once, the rest at every try).
    """
    h, w = size
    apply = torch.rand(n, generator=generator) < p
    s = _uniform(n, *area, generator) * h * w
    bw = torch.zeros(n, dtype=torch.long)
    bh, bx, by = bw.clone(), bw.clone(), bw.clone()
    pending = apply.clone()
    for _ in range(max_tries):
        if not bool(pending.any()):
            break
        r = _uniform(n, *ratio, generator)
        cw = torch.floor(torch.sqrt(s / r)).long()
        ch = torch.floor(torch.sqrt(s * r)).long()
        cx = torch.randint(0, w, (n,), generator=generator)
        cy = torch.randint(0, h, (n,), generator=generator)
        ok = pending & (cx + cw <= w) & (cy + ch <= h)
        bw, bh, bx, by = (torch.where(ok, new, old) for new, old in ((cw, bw), (ch, bh), (cx, bx), (cy, by)))
        pending &= ~ok
    if bool(pending.any()):  # never fitted: clamp the last draw into the image
        cw, ch = cw.clamp(max=w), ch.clamp(max=h)
        bw, bh = torch.where(pending, cw, bw), torch.where(pending, ch, bh)
        bx = torch.where(pending, torch.minimum(cx, w - cw), bx)
        by = torch.where(pending, torch.minimum(cy, h - ch), by)
    rows = torch.arange(h)[None, :, None]
    cols = torch.arange(w)[None, None, :]

    def v(t: torch.Tensor) -> torch.Tensor:
        return t.view(n, 1, 1)

    inside = (rows >= v(by)) & (rows < v(by + bh)) & (cols >= v(bx)) & (cols < v(bx + bw))
    return (inside & v(apply)).to(device) if device is not None else inside & v(apply)


def mix_with_mask(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Pixel-wise mix of two batches: ``b`` where ``mask`` is set, ``a`` elsewhere.

    The one mixing rule of the suite (CutMix, BCP's copy-paste): mix an image and its target with the same mask and
    they stay aligned. ``a``, ``b``: the same shape, ``[B, *S]`` (labels, confidences) or ``[B, C, *S]`` (images,
    probabilities, logits); ``mask``: ``[B, *S]``, bool or 0/1 (non-zero = take ``b``), broadcast over ``C``.
    Gradients flow to ``a`` and ``b`` at the pixels taken from each.
    """
    if a.shape != b.shape:
        raise ValueError(f"mix_with_mask: a {tuple(a.shape)} and b {tuple(b.shape)} differ in shape")
    m = mask.bool()
    if a.ndim == m.ndim + 1 and m.shape == (a.shape[0], *a.shape[2:]):
        m = m.unsqueeze(1)
    elif m.shape != a.shape:
        raise ValueError(f"mix_with_mask: mask {tuple(mask.shape)} does not fit batch {tuple(a.shape)}")
    return torch.where(m.to(a.device), b, a)
