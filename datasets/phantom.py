"""Built-in procedural phantoms: ``cardiac-phantom`` and ``pancreas-phantom`` (no download, no data root).

Both are **synthetic** images drawn from hand-written random geometry and intensity models. They look roughly
like their modality and exercise the whole benchmark pipeline (several classes, empty classes in some slices,
confounding structures, patient-level splits, spacing in mm), but they have **no medical validity**: do not
draw clinical or absolute-performance conclusions from them. They are meant to be hard enough that a U-Net
trained on a few labelled patients is clearly imperfect, so that semi-supervised methods have room to help.

Volumes, splits, spacing
    Each "patient" is one volume of ``n_slices`` 2D slices (default 8) of ``size x size`` pixels (default 96),
    so the case id is the patient id (``phantom001``, ``phantom002``, ...). Patients are split by index into
    ``train`` / ``val`` / ``test`` with ``n_val = max(1, round(2n/15))``, ``n_test = max(1, round(n/5))`` and
    the rest (about 2/3) in ``train``: 20 / 4 / 6 patients for the default ``n_patients=30``
    (``n_patients >= 3`` is required). The anatomy does not depend on the options: the field of view is fixed
    (144 mm cardiac, 76.8 mm pancreas) and the slices always cover the same extent, so the spacing ``(sz, sy, sx)``
    is ``(base_z * 7 / (n_slices - 1), base_xy * 96 / size, base_xy * 96 / size)``, i.e. ``(8.0, 1.5, 1.5)`` mm
    for the cardiac and ``(2.5, 0.8, 0.8)`` mm for the pancreas phantom at the defaults.

Images and labels
    ``image`` is ``(Z, Y, X)`` float32 in ``[0, 1]``, min-max normalised per volume (like SSL4MIS) and then
    quantised to 12 bits (multiples of 1/4095), ``label`` is ``(Z, Y, X)`` uint8. Image rows run from anterior
    (top) to posterior, columns from the patient's right (left of the image) to the patient's left.

``cardiac-phantom`` (``CardiacPhantom``: 4 classes background / RV / Myo / LV, "MR"), ACDC-like cine short axis
    Slice 0 is basal, slice Z-1 apical (``t`` = 0 at the base, 1 at the apex). Per patient (uniform ranges, mm):
    LV centre offset +-12 (x) / +-10 (y) from the image centre, drifting up to 1.5 mm per slice plus 0.7 mm
    per-slice jitter (breath-hold misregistration); basal LV cavity radius 14-23; wall thickness 5.5-10.5
    (up to 20 % thicker at the apex); ellipticity 0-0.18 at any rotation; 2nd-5th order boundary harmonics
    (std 0.035 endocardium, 0.025 epicardium); cavity scale ``1 - shrink * t**1.4`` with ``shrink`` 0.55-0.85.
    The RV (label 1) is a crescent: an ellipse centred 0.45-0.75 epicardial radii from the LV centre towards
    175-225 degrees (image left, slightly anterior), depth 0.8-1.2 and span 1.1-1.6 epicardial radii, minus the
    LV epicardium; it scales with ``1 - rv_shrink * t**1.2`` (``rv_shrink`` 0.55-1.15) and is absent where that
    factor is below 0.3 (so apical slices often have no RV). Confounders: trabeculae and two papillary muscles
    (myocardium-like, labelled LV) in the cavity, a thin dark RV free wall, bright epicardial fat in a random
    sector, a bright descending aorta (blood-like, labelled background), a dark chest-wall muscle band under
    bright subcutaneous fat, dark lungs, a mid-grey liver growing towards the apex, 2-4 bright fat blobs.
    Intensities before normalisation: blood 0.6-0.95 (RV 0.8-1.0 of that), myocardium 0.2-0.42, tissue
    0.3-0.48, fat 0.7-1.0, liver 0.38-0.55, lung 0.03-0.1, each with smooth texture; a tone curve
    ``x + k x (1.2 - x) / 1.2``, ``k`` in -0.3..0.3 (a linear gain would be undone by the min-max
    normalisation); through-plane partial volume (each neighbouring slice mixed in with weight 0.05-0.2); Gaussian
    blur sigma 0.9-2.0 mm; a multiplicative quadratic bias field (coefficients +-0.2, clipped to 0.6-1.4); Rician
    noise sigma 0.02-0.07.

``pancreas-phantom`` (``PancreasPhantom``: 2 classes background / pancreas, "CT"), abdominal CT crop
    Slice 0 is cranial. The pancreas is a lobulated tube around a cubic Bezier centre line from the head (image
    left, radius 5-8.5 mm) to the tail (image right, radius 3-5.5 mm); the two inner control points bend it by
    -6..20 mm (arches and S shapes), the whole is rotated by +-25 degrees and shifted by +-6 mm, and the centre
    line random-walks by about 1.2 mm per slice. The radius varies slowly along the organ (Chebyshev terms
    +-15 %) with a narrower neck (0-35 %), and a smooth random field modulates the boundary by +-15-35 % per
    standard deviation. Cranial slices show the tail, caudal ones the head (a sliding window along the centre
    line, tapered at both ends); 0-25 % of the slices at each end hold no pancreas. Inside: fatty lobulation,
    sometimes a dark duct (p = 0.5) and an uncinate process (p = 0.7). Confounders: a duodenum touching the head
    and 3-6 round or tubular bowel loops of similar intensity (walls pancreas -30..+25 HU; lumen collapsed,
    fluid, gas or oral contrast), liver (50-100 HU), stomach, kidney, aorta, IVC, SMA with a fat halo, SMV and
    the splenic vein along the posterior border of body and tail, a vertebral body. Pancreas 60-120 HU, fat
    -110..-80 HU; blur sigma 0.5-0.9 mm; Gaussian noise sigma 10-25 HU; window [-125, 275] HU, then min-max.

Determinism and cache
    Patient ``i`` is drawn from ``numpy.random.default_rng(SeedSequence([tag, seed, i]))`` (``tag`` 1 cardiac,
    2 pancreas), so it does not depend on how many patients exist. Array maths is limited to arithmetic, ``sqrt``
    and ``scipy.ndimage`` filters (trigonometry only on scalars), and the image is quantised to 12 bits, so that
    the arrays are the same on every call and machine. They are generated on first use (about 1 s of one CPU
    core per dataset at the default size) and cached as
    ``$SSL_BENCH_CACHE/phantoms/<name>_v<GENERATOR_VERSION>_n<patients>_z<slices>_s<size>_seed<seed>.npz``
    (default ``~/.cache/ssl-bench/phantoms/``), written atomically; an unreadable or inconsistent cache file is
    regenerated with a warning, an unwritable cache folder only gives a warning. Bump :data:`GENERATOR_VERSION`
    whenever the generated arrays change; as a safety net each file also stores a hash of this source file, and a
    file written by a different source is regenerated (quietly).
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import warnings
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from scipy import ndimage

from ssl_bench.core.data import Case, DatasetAdapter, TaskSpec
from ssl_bench.core.errors import DataError
from ssl_bench.core.registry import DATASETS

#: Version of the generators; part of the cache file name. Bump it whenever the generated arrays change.
GENERATOR_VERSION = 1

#: Images are quantised to multiples of ``1 / QUANT_LEVELS`` (12 bits), stored as uint16 in the cache.
QUANT_LEVELS = 4095


#: Hash of this file, stored in each cache file: a cache written by an edited generator whose
#: :data:`GENERATOR_VERSION` was not bumped is regenerated instead of silently reused.
def _source_fingerprint() -> str:
    try:
        return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    except OSError:  # e.g. imported from a zip archive
        return f"v{GENERATOR_VERSION}"


SOURCE_FINGERPRINT = _source_fingerprint()

_REFERENCE_SIZE = 96
_REFERENCE_SLICES = 8


def cache_dir() -> Path:
    """Folder of the phantom cache: ``$SSL_BENCH_CACHE/phantoms`` or ``~/.cache/ssl-bench/phantoms``."""
    base = os.environ.get("SSL_BENCH_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "ssl-bench"
    return root / "phantoms"


def split_sizes(n_patients: int) -> tuple[int, int, int]:
    """``(train, val, test)`` patient counts: val ~ 2/15, test ~ 1/5 (each at least 1), train the rest."""
    n_val = max(1, int(math.floor(2 * n_patients / 15 + 0.5)))
    n_test = max(1, int(math.floor(n_patients / 5 + 0.5)))
    return n_patients - n_val - n_test, n_val, n_test


# -- geometry helpers (arithmetic and sqrt only, so results do not depend on libm) --------------------------


def _grid(size: int, fov_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in mm, ``(yy, xx)``, origin at the image centre."""
    c = (np.arange(size, dtype=np.float64) + 0.5 - size / 2) * (fov_mm / size)
    yy, xx = np.meshgrid(c, c, indexing="ij")
    return yy, xx


def _smooth(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Smooth Gaussian random field with approximately unit standard deviation."""
    sigma_px = max(sigma_px, 0.5)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_px, mode="reflect")
    return field * (2.0 * math.sqrt(math.pi) * sigma_px)


def _rho(
    xx: np.ndarray,
    yy: np.ndarray,
    cx: float,
    cy: float,
    a: float,
    b: float,
    cos_t: float = 1.0,
    sin_t: float = 0.0,
    harmonics: np.ndarray | None = None,
) -> np.ndarray:
    """Normalised radius of a (lobulated) ellipse: < 1 inside.

    ``a``/``b`` are the semi-axes along the rotated x/y axes; ``harmonics`` is ``(K, 2)``: relative radius
    modulation ``sum_k h[k,0] cos((k+2) theta) + h[k,1] sin((k+2) theta)``.
    """
    dx, dy = xx - cx, yy - cy
    u = cos_t * dx + sin_t * dy
    v = -sin_t * dx + cos_t * dy
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    if harmonics is not None and len(harmonics):
        r = np.sqrt(u * u + v * v) + 1e-9
        cu, sv = u / r, v / r  # cos(theta), sin(theta)
        ck, sk = cu * cu - sv * sv, 2 * cu * sv  # k = 2
        mod = np.ones_like(rho)
        for k in range(len(harmonics)):
            mod += harmonics[k, 0] * ck + harmonics[k, 1] * sk
            ck, sk = ck * cu - sk * sv, sk * cu + ck * sv
        rho = rho / np.maximum(mod, 0.3)
    return rho


def _rot(rng: np.random.Generator) -> tuple[float, float]:
    """A random rotation as (cos, sin), drawn without trigonometric functions."""
    v = rng.standard_normal(2)
    n = math.sqrt(float(v @ v)) + 1e-12
    return float(v[0] / n), float(v[1] / n)


def _unit(angle_deg: float) -> tuple[float, float]:
    """(cos, sin) of a scalar angle (scalar libm calls; used for directions only)."""
    t = math.radians(angle_deg)
    return math.cos(t), math.sin(t)


def _curve_distance(xx: np.ndarray, yy: np.ndarray, pts: np.ndarray, reach: float) -> tuple[np.ndarray, np.ndarray]:
    """Distance of every pixel to the nearest of ``pts`` ``(P, 2)`` (x, y) and that point's index.

    Only pixels within ``reach`` (mm) of the points' bounding box are computed; the others get ``inf`` / 0.
    """
    dist = np.full(xx.shape, np.inf)
    arg = np.zeros(xx.shape, dtype=np.int64)
    lo, hi = pts.min(axis=0) - reach, pts.max(axis=0) + reach
    sel = (xx >= lo[0]) & (xx <= hi[0]) & (yy >= lo[1]) & (yy <= hi[1])
    if sel.any():
        px, py = xx[sel], yy[sel]
        d2 = (px[:, None] - pts[None, :, 0]) ** 2 + (py[:, None] - pts[None, :, 1]) ** 2
        i = np.argmin(d2, axis=1)
        dist[sel] = np.sqrt(d2[np.arange(len(px)), i])
        arg[sel] = i
    return dist, arg


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())[1:]
    return lab == (1 + int(np.argmax(sizes)))


def _minmax(volume: np.ndarray) -> np.ndarray:
    lo, hi = float(volume.min()), float(volume.max())
    return (volume - lo) / (hi - lo) if hi > lo else np.zeros_like(volume)


# -- cardiac short-axis MR ------------------------------------------------------------------------------------


def _cardiac_patient(rng: np.random.Generator, n_slices: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One cine-MR-like short-axis stack: image (Z, Y, X) float64 in [0, 1], label (Z, Y, X) uint8."""
    fov = 144.0
    px = fov / size
    yy, xx = _grid(size, fov)
    shape = (size, size)

    # patient geometry
    cx0, cy0 = rng.uniform(-12, 12), rng.uniform(-10, 10)
    drift = rng.uniform(-1.5, 1.5, size=2)
    r_endo0 = rng.uniform(14, 23)
    thick0 = rng.uniform(5.5, 10.5)
    thick_growth = rng.uniform(0.0, 0.2)
    ell = rng.uniform(0.0, 0.18)
    cos_e, sin_e = _rot(rng)
    shrink = rng.uniform(0.55, 0.85)
    h_endo = rng.normal(0, 0.035, size=(4, 2))
    h_epi = rng.normal(0, 0.025, size=(4, 2))
    h_rv = rng.normal(0, 0.05, size=(3, 2))
    rv_cos, rv_sin = _unit(200 + rng.uniform(-25, 25))
    rv_offset = rng.uniform(0.45, 0.75)
    rv_depth = rng.uniform(0.8, 1.2)
    rv_span = rng.uniform(1.1, 1.6)
    rv_shrink = rng.uniform(0.55, 1.15)
    rv_wall = rng.uniform(1.2, 2.5)
    fat_cos, fat_sin = _unit(rng.uniform(0, 360))
    fat_halfwidth = rng.uniform(0.0, 0.7)  # threshold on cos(angle): sector of 90..180 degrees
    fat_width = rng.uniform(2.0, 5.0)
    pap_angles = 20 + rng.uniform(100, 150) * np.array([1.0, -1.0]) + rng.uniform(-20, 20, size=2)
    pap_radius = rng.uniform(1.8, 3.2, size=2)
    trab_depth = rng.uniform(0.7, 0.88)  # trabeculated outer part of the cavity (normalised radius)
    trab_level = rng.uniform(0.2, 1.0)  # threshold on a fine random field: lower = more trabeculae

    # surroundings
    lungs = []
    for side in (-1.0, 1.0):
        lungs.append(
            (
                side * rng.uniform(48, 62),
                rng.uniform(-5, 25),
                rng.uniform(18, 30),
                rng.uniform(30, 48),
                _rot(rng),
                rng.normal(0, 0.06, size=(3, 2)),
            )
        )
    liver = (-rng.uniform(25, 45), rng.uniform(48, 66), rng.uniform(35, 50), rng.uniform(22, 32), _rot(rng))
    h_liver = rng.normal(0, 0.05, size=(3, 2))
    cw_y = -rng.uniform(48, 60)
    cw_curv = rng.uniform(0.002, 0.006)
    cw_muscle = rng.uniform(7, 12)
    cw_fat = rng.uniform(5, 10)
    aorta = (rng.uniform(5, 25), rng.uniform(12, 22), rng.uniform(8, 12))
    n_blobs = int(rng.integers(2, 5))
    blob_r = rng.uniform(3, 8, size=n_blobs)
    blob_dir = [_rot(rng) for _ in range(n_blobs)]
    blob_dist = rng.uniform(8, 30, size=n_blobs)

    # intensities
    blood = rng.uniform(0.6, 0.95)
    rv_blood = blood * rng.uniform(0.8, 1.0)
    myo = rng.uniform(0.2, 0.42)
    tissue = rng.uniform(0.3, 0.48)
    fat = rng.uniform(0.7, 1.0)
    liver_i = rng.uniform(0.38, 0.55)
    lung_i = rng.uniform(0.03, 0.1)
    muscle = myo * rng.uniform(0.9, 1.2)
    tone = rng.uniform(-0.3, 0.3)
    blur_mm = rng.uniform(0.9, 2.0)
    noise = rng.uniform(0.02, 0.07)
    bias_c = rng.uniform(-0.2, 0.2, size=5)
    through_plane = rng.uniform(0.05, 0.2)  # weight of each neighbouring slice (8 mm slices: partial volume)

    xn, yn = xx / (fov / 2), yy / (fov / 2)
    bias = 1 + bias_c[0] * xn + bias_c[1] * yn + bias_c[2] * xn * xn + bias_c[3] * yn * yn + bias_c[4] * xn * yn
    bias = np.clip(bias, 0.6, 1.4)

    img = np.zeros((n_slices, size, size))
    lab = np.zeros((n_slices, size, size), dtype=np.uint8)
    for z in range(n_slices):
        t = z / (n_slices - 1) if n_slices > 1 else 0.3
        jitter = rng.normal(0, 0.7, size=2)
        cx = cx0 + drift[0] * z + jitter[0]
        cy = cy0 + drift[1] * z + jitter[1]
        s = 1 - shrink * t**1.4
        r_endo = r_endo0 * s
        thick = thick0 * (1 + thick_growth * t)
        r_epi = r_endo + thick
        a_endo, b_endo = r_endo * (1 + ell), r_endo * (1 - ell)

        # background tissue
        tex_f = _smooth(rng, shape, 1.5 / px)
        tex_c = _smooth(rng, shape, 8.0 / px)
        sl = tissue + 0.04 * tex_f + 0.06 * tex_c
        for lx, ly, la, lb, (lc, ls), lh in lungs:
            m = _rho(xx, yy, lx + 0.3 * cx, ly, la, lb, lc, ls, lh) < 1
            sl[m] = lung_i + 0.015 * tex_f[m]
        lscale = 0.55 + 0.6 * t
        lm = _rho(xx, yy, liver[0], liver[1], liver[2] * lscale, liver[3] * lscale, *liver[4], h_liver) < 1
        sl[lm] = liver_i + 0.03 * tex_f[lm] + 0.02 * tex_c[lm]
        y_cw = cw_y + cw_curv * xx * xx
        sl[(yy < y_cw) & (yy >= y_cw - cw_muscle)] = muscle
        fat_band = (yy < y_cw - cw_muscle) & (yy >= y_cw - cw_muscle - cw_fat)
        sl[fat_band] = fat
        sl[yy < y_cw - cw_muscle - cw_fat] = 0.02
        sl[(yy < y_cw) & (yy >= y_cw - cw_muscle)] += 0.03 * tex_f[(yy < y_cw) & (yy >= y_cw - cw_muscle)]
        for (bc, bs), br, bd in zip(blob_dir, blob_r, blob_dist, strict=True):
            d = r_endo0 + thick0 + bd
            bm = _rho(xx, yy, cx0 + bc * d, cy0 + bs * d, br, br * 0.8, bc, bs) < 1
            sl[bm] = fat * rng.uniform(0.85, 1.0)
        am = _rho(xx, yy, cx + aorta[0], cy + r_epi + aorta[1], aorta[2], aorta[2]) < 1
        sl[am] = blood * rng.uniform(0.85, 1.05)

        # heart
        rho_endo = _rho(xx, yy, cx, cy, a_endo, b_endo, cos_e, sin_e, h_endo)
        endo = rho_endo < 1
        epi = _rho(xx, yy, cx, cy, a_endo + thick, b_endo + thick, cos_e, sin_e, h_epi) < 1
        rvs = 1 - rv_shrink * t**1.2
        rv = np.zeros(shape, dtype=bool)
        rv_outer = np.zeros(shape, dtype=bool)
        if rvs > 0.3:
            rcx, rcy = cx + rv_cos * rv_offset * r_epi, cy + rv_sin * rv_offset * r_epi
            depth, span = rv_depth * r_epi * rvs, rv_span * r_epi * math.sqrt(rvs)
            rv = (_rho(xx, yy, rcx, rcy, depth, span, rv_cos, rv_sin, h_rv) < 1) & ~epi
            rv_outer = (_rho(xx, yy, rcx, rcy, depth + rv_wall, span + rv_wall, rv_cos, rv_sin, h_rv) < 1) & ~epi
        # epicardial fat in a sector around LV + RV
        dx, dy = xx - cx, yy - cy
        rr = np.sqrt(dx * dx + dy * dy) + 1e-9
        sector = (dx * fat_cos + dy * fat_sin) / rr > fat_halfwidth
        heart_r = _rho(xx, yy, cx, cy, a_endo + thick + fat_width, b_endo + thick + fat_width, cos_e, sin_e, h_epi)
        efat = sector & ((heart_r < 1) | ndimage.binary_dilation(rv_outer, iterations=max(1, round(fat_width / px))))
        sl[efat] = fat * (0.9 + 0.05 * tex_f[efat])
        sl[rv_outer] = myo + 0.02 * tex_f[rv_outer]
        sl[epi] = myo + 0.025 * tex_f[epi]
        sl[endo] = blood * (1 + 0.06 * tex_c[endo])
        trab = endo & (rho_endo > trab_depth) & (_smooth(rng, shape, 0.9 / px) > trab_level)
        sl[trab] = (myo + blood) / 2 - 0.1 * (blood - myo) * tex_f[trab]
        sl[rv] = rv_blood * (1 + 0.05 * tex_c[rv])
        if 0.1 <= t <= 0.85:
            for ang, pr in zip(pap_angles, pap_radius, strict=True):
                pc, ps = _unit(float(ang))
                pc, ps = pc * rv_cos - ps * rv_sin, ps * rv_cos + pc * rv_sin  # relative to the RV direction
                d = r_endo * 0.62
                pm = (_rho(xx, yy, cx + pc * d, cy + ps * d, pr * s, pr * s * 0.8, pc, ps) < 1) & endo
                sl[pm] = myo * 1.1
        lab[z][epi] = 2
        lab[z][endo] = 3
        lab[z][rv] = 1
        img[z] = sl

    img = np.clip(img, 0.0, 1.2)
    img = img + tone * img * (1.2 - img) / 1.2
    if n_slices > 1:
        padded = np.concatenate([img[:1], img, img[-1:]])
        img = (1 - 2 * through_plane) * img + through_plane * (padded[:-2] + padded[2:])
    img = ndimage.gaussian_filter(img, (0, blur_mm / px, blur_mm / px), mode="nearest")
    img = img * bias[None]
    n1 = rng.standard_normal(img.shape) * noise
    n2 = rng.standard_normal(img.shape) * noise
    img = np.sqrt((img + n1) ** 2 + n2 * n2)
    return _minmax(img), lab


# -- pancreas CT ------------------------------------------------------------------------------------------------


def _bezier(ctrl: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Points ``(len(s), 2)`` of the cubic Bezier curve with control points ``ctrl`` ``(4, 2)``."""
    s = s[:, None]
    u = 1 - s
    return u * u * u * ctrl[0] + 3 * u * u * s * ctrl[1] + 3 * u * s * s * ctrl[2] + s * s * s * ctrl[3]


def _bezier_normal(ctrl: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Unit normals of the curve, oriented towards +y (posterior)."""
    s = s[:, None]
    u = 1 - s
    tang = 3 * u * u * (ctrl[1] - ctrl[0]) + 6 * u * s * (ctrl[2] - ctrl[1]) + 3 * s * s * (ctrl[3] - ctrl[2])
    n = np.stack([-tang[:, 1], tang[:, 0]], axis=1)
    n = n / (np.sqrt((n * n).sum(axis=1, keepdims=True)) + 1e-12)
    return np.where(n[:, 1:2] < 0, -n, n)


def _pancreas_radius(
    s: np.ndarray, r_head: float, r_tail: float, poly: np.ndarray, neck_s: float, neck_depth: float
) -> np.ndarray:
    """Organ radius (mm) along the centre line parameter ``s`` (0 = head, 1 = tail)."""
    x = 2 * s - 1
    x2 = x * x
    profile = 1 + poly[0] * (4 * x2 * x - 3 * x) + poly[1] * (8 * x2 * x2 - 8 * x2 + 1)  # Chebyshev T3, T4
    d = (s - neck_s) / 0.12
    neck = 1 - neck_depth * np.clip(1 - d * d, 0, None)
    return (r_head + (r_tail - r_head) * s) * profile * neck


def _pancreas_patient(rng: np.random.Generator, n_slices: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One CT-like stack around the pancreas: image (Z, Y, X) float64 in [0, 1], label (Z, Y, X) uint8."""
    fov = 76.8
    px = fov / size
    yy, xx = _grid(size, fov)
    shape = (size, size)

    # organ geometry (mm, x to the image right, y posterior)
    rc, rs = _unit(rng.uniform(-25, 25))
    shift = rng.uniform(-6, 6, size=2)
    head = np.array([-rng.uniform(22, 30), rng.uniform(-2, 8)])
    tail = np.array([rng.uniform(24, 34), rng.uniform(0, 12)])
    third = (tail[0] - head[0]) / 3
    ctrl = np.stack(
        [
            head,
            head + np.array([third, -rng.uniform(-6, 20)]),
            tail + np.array([-third, -rng.uniform(-6, 20)]),
            tail,
        ]
    )
    ctrl = ctrl @ np.array([[rc, rs], [-rs, rc]]) + shift  # rotate (x, y) rows, then shift
    r_head, r_tail = rng.uniform(5, 8.5), rng.uniform(3, 5.5)
    r_poly = rng.uniform(-0.15, 0.15, size=2)  # slow radius variation along the organ
    neck_s, neck_depth = rng.uniform(0.25, 0.4), rng.uniform(0.0, 0.35)  # the neck is the thinnest part
    lob_amp = rng.uniform(0.15, 0.35)
    n_top = int(math.floor(rng.uniform(0, 0.25) * n_slices + 0.5))
    n_bottom = int(math.floor(rng.uniform(0, 0.25) * n_slices + 0.5))
    if n_top + n_bottom >= n_slices:
        n_top, n_bottom = 0, 0
    has_duct = rng.uniform() < 0.5
    has_uncinate = rng.uniform() < 0.7
    unc = np.array([rng.uniform(-2, 5), rng.uniform(6, 11)])
    unc_r = rng.uniform(3, 6)

    # surroundings
    hu_p = rng.uniform(60, 120)
    hu_fat = -rng.uniform(80, 110)
    liver = (-rng.uniform(42, 58), -rng.uniform(28, 42), rng.uniform(22, 32), rng.uniform(18, 28), _rot(rng))
    hu_liver = rng.uniform(50, 100)
    stomach = (rng.uniform(5, 35), -rng.uniform(34, 44), rng.uniform(14, 24), rng.uniform(8, 13), _rot(rng))
    stomach_lumen = -500.0 if rng.uniform() < 0.3 else rng.uniform(0, 25)
    duo_r = rng.uniform(6, 10)
    duo = (ctrl[0, 0] - r_head - duo_r + rng.uniform(-2, 3), ctrl[0, 1] + rng.uniform(-4, 6), duo_r)
    n_bowel = int(rng.integers(3, 7))
    bowel = []
    for _ in range(n_bowel):
        kind = rng.choice(4, p=[0.35, 0.35, 0.15, 0.15])
        lumen = [None, rng.uniform(5, 30), -600.0, rng.uniform(200, 400)][kind]
        br = rng.uniform(5, 11)
        bowel.append(
            (
                rng.uniform(-36, 36),
                rng.uniform(-36, 20),
                br,
                br * (rng.uniform(0.35, 0.65) if rng.uniform() < 0.4 else rng.uniform(0.7, 1.0)),
                _rot(rng),
                rng.uniform(2, 3.2),
                hu_p + rng.uniform(-30, 25),
                lumen,
                rng.normal(0, 0.1, size=(3, 2)),
            )
        )
    has_kidney = rng.uniform() < 0.7
    kidney = (rng.uniform(25, 40), rng.uniform(28, 40), rng.uniform(12, 18), rng.uniform(18, 26), _rot(rng))
    hu_kidney = rng.uniform(140, 200)
    aorta = (rng.uniform(-6, 6), rng.uniform(22, 28), rng.uniform(7, 10))
    hu_art = rng.uniform(130, 200)
    ivc = (aorta[0] - rng.uniform(20, 28), aorta[1] + rng.uniform(-4, 2), rng.uniform(8, 12), rng.uniform(6, 9))
    hu_vein = rng.uniform(100, 160)
    sma_s = rng.uniform(0.25, 0.4)
    sv_gap, sv_r = rng.uniform(1.0, 2.5), rng.uniform(2.5, 4.0)
    vert = (rng.uniform(-8, 4), rng.uniform(45, 52), rng.uniform(14, 18))
    hu_bone = rng.uniform(250, 600)
    blur_mm = rng.uniform(0.5, 0.9)
    noise_hu = rng.uniform(10, 25)

    img = np.zeros((n_slices, size, size))
    lab = np.zeros((n_slices, size, size), dtype=np.uint8)
    walk = np.zeros(2)
    for z in range(n_slices):
        walk = walk + rng.normal(0, 1.2, size=2)
        cz = ctrl + walk
        cz[1:3] += rng.normal(0, 1.5, size=(2, 2))
        tex_f = _smooth(rng, shape, 0.8 / px)
        tex_c = _smooth(rng, shape, 4.0 / px)
        tex_l = _smooth(rng, shape, 1.6 / px)

        sl = hu_fat + 12 * tex_f + 8 * tex_c
        lm = _rho(xx, yy, liver[0], liver[1], liver[2], liver[3], *liver[4]) < 1
        sl[lm] = hu_liver + 8 * tex_f[lm] + 6 * tex_c[lm]
        so = _rho(xx, yy, stomach[0], stomach[1], stomach[2], stomach[3], *stomach[4]) < 1
        si = _rho(xx, yy, stomach[0], stomach[1], stomach[2] - 3, stomach[3] - 3, *stomach[4]) < 1
        sl[so] = hu_p + rng.uniform(-30, 10) + 8 * tex_f[so]
        sl[si] = stomach_lumen + 6 * tex_f[si]
        if has_kidney:
            km = _rho(xx, yy, kidney[0], kidney[1], kidney[2], kidney[3], *kidney[4]) < 1
            kmed = _rho(xx, yy, kidney[0], kidney[1], kidney[2] * 0.55, kidney[3] * 0.6, *kidney[4]) < 1
            sl[km] = hu_kidney + 10 * tex_f[km]
            sl[kmed] = hu_kidney * 0.7 + 10 * tex_f[kmed]
        for bx, by, ba, bb, (bc, bs), bw, hu_w, lumen, bh in bowel:
            bx, by = bx + 0.5 * walk[0], by + 0.5 * walk[1]
            outer = _rho(xx, yy, bx, by, ba, bb, bc, bs, bh) < 1
            sl[outer] = hu_w + 10 * tex_f[outer]
            if lumen is not None and bb > bw + 1.5:
                inner = _rho(xx, yy, bx, by, ba - bw, bb - bw, bc, bs, bh) < 1
                sl[inner] = lumen + 8 * tex_f[inner]
        dm = _rho(xx, yy, duo[0] + walk[0], duo[1] + walk[1], duo[2], duo[2] * 0.85) < 1
        sl[dm] = hu_p + rng.uniform(-30, 5) + 10 * tex_f[dm]
        vm = _rho(xx, yy, vert[0], vert[1], vert[2], vert[2] * 0.9) < 1
        sl[vm] = hu_bone + 40 * tex_f[vm]
        am = _rho(xx, yy, aorta[0], aorta[1], aorta[2], aorta[2]) < 1
        sl[am] = hu_art + 5 * tex_f[am]
        im = _rho(xx, yy, ivc[0], ivc[1], ivc[2], ivc[3]) < 1
        sl[im] = hu_vein + 5 * tex_f[im]

        # pancreas
        label = np.zeros(shape, dtype=bool)
        if n_top <= z < n_slices - n_bottom:
            tau = (z - n_top + 0.5) / (n_slices - n_top - n_bottom)
            mid = 4 * tau * (1 - tau)
            centre, half = 0.8 - 0.6 * tau, 0.25 + 0.25 * mid
            lo, hi = max(0.0, centre - half), min(1.0, centre + half)
            taper = 0.65 + 0.35 * mid
            length = float(np.sqrt(((cz[3] - cz[0]) ** 2).sum())) * 1.3
            s = np.linspace(lo, hi, max(8, int(length * (hi - lo) / 0.8)))
            pts = _bezier(cz, s)
            radius = _pancreas_radius(s, r_head, r_tail, r_poly, neck_s, neck_depth) * taper
            dist, idx = _curve_distance(xx, yy, pts, reach=float(radius.max()) * (1 + 2.5 * lob_amp) + 1)
            rpix = radius[idx] * (1 + lob_amp * np.clip(tex_l, -2.5, 2.5))
            label = dist < rpix
            if has_uncinate and tau > 0.45:
                label |= _rho(xx, yy, cz[0, 0] + unc[0], cz[0, 1] + unc[1], unc_r, unc_r * 0.7, 1.0, 0.0) < 1
            label = _largest_component(label)

            # vessels around it (painted under the organ)
            sv_s = np.linspace(max(lo, 0.35), max(hi, 0.36), 30)
            if hi > 0.4:
                spts = _bezier(cz, sv_s)
                spts = spts + _bezier_normal(cz, sv_s) * (
                    _pancreas_radius(sv_s, r_head, r_tail, r_poly, neck_s, neck_depth)[:, None] * taper + sv_gap + sv_r
                )
                sd, _ = _curve_distance(xx, yy, spts, reach=sv_r + 1)
                svm = sd < sv_r
                sl[svm] = hu_vein + 5 * tex_f[svm]
            if lo < sma_s < hi:
                neck = _bezier(cz, np.array([sma_s]))[0]
                nrm = _bezier_normal(cz, np.array([sma_s]))[0]
                rn = float(_pancreas_radius(np.array([sma_s]), r_head, r_tail, r_poly, neck_s, neck_depth)[0]) * taper
                sma = neck + nrm * (rn + 6)
                smv = neck + nrm * (rn + 3) - np.array([7.0, 0.0])
                halo = _rho(xx, yy, sma[0], sma[1], 6.5, 6.5) < 1
                sl[halo] = hu_fat + 10 * tex_f[halo]
                m = _rho(xx, yy, sma[0], sma[1], 3.5, 3.5) < 1
                sl[m] = hu_art
                m = _rho(xx, yy, smv[0], smv[1], 5.0, 4.5) < 1
                sl[m] = hu_vein

            fatty = rng.uniform(40, 90) * np.clip(tex_l * -1 - rng.uniform(0.6, 1.3), 0, None)
            sl[label] = (hu_p + 10 * tex_f - fatty)[label]
            if has_duct:
                dd, _ = _curve_distance(xx, yy, _bezier(cz, np.linspace(max(lo, 0.1), min(hi, 0.9), 40)), reach=2.0)
                duct = label & (dd < 1.1)
                sl[duct] = rng.uniform(0, 25)
        lab[z][label] = 1
        img[z] = sl

    img = ndimage.gaussian_filter(img, (0, blur_mm / px, blur_mm / px), mode="nearest")
    img = img + rng.standard_normal(img.shape) * noise_hu
    img = (np.clip(img, -125.0, 275.0) + 125.0) / 400.0
    return _minmax(img), lab


# -- dataset adapters -------------------------------------------------------------------------------------------


class _Phantom(DatasetAdapter):
    """Shared machinery of the procedural phantoms (generation, cache, splits)."""

    name: ClassVar[str]
    base_spacing: ClassVar[tuple[float, float, float]]
    seed_tag: ClassVar[int]
    needs_root: ClassVar[bool] = False
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(
        self, root: str | Path | None = None, *, n_patients: int = 30, n_slices: int = 8, size: int = 96, seed: int = 0
    ) -> None:
        super().__init__(root)
        for key, value, low in (("n_patients", n_patients, 3), ("n_slices", n_slices, 1), ("size", size, 16)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise DataError(f"{self.name}: {key} must be an integer >= {low}, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise DataError(f"{self.name}: seed must be a non-negative integer, got {seed!r}")
        self.n_patients, self.n_slices, self.size, self.seed = int(n_patients), int(n_slices), int(size), int(seed)
        # fixed anatomy: the slices always span base to apex (or the whole pancreas), the image a fixed field of view
        self.spacing = (
            self.base_spacing[0] * ((_REFERENCE_SLICES - 1) / max(1, self.n_slices - 1)),
            self.base_spacing[1] * (_REFERENCE_SIZE / self.size),
            self.base_spacing[2] * (_REFERENCE_SIZE / self.size),
        )
        self.cache_path = cache_dir() / (
            f"{self.name}_v{GENERATOR_VERSION}_n{self.n_patients}_z{self.n_slices}_s{self.size}_seed{self.seed}.npz"
        )
        self._ids = [f"phantom{i + 1:03d}" for i in range(self.n_patients)]
        self._index = {cid: i for i, cid in enumerate(self._ids)}
        self._images: np.ndarray | None = None
        self._labels: np.ndarray | None = None

    # -- DatasetAdapter API --

    def splits(self) -> dict[str, list[str]]:
        n_train, n_val, _ = split_sizes(self.n_patients)
        return {
            "train": self._ids[:n_train],
            "val": self._ids[n_train : n_train + n_val],
            "test": self._ids[n_train + n_val :],
        }

    def load_case(self, case_id: str) -> Case:
        i = self._index.get(case_id)
        if i is None:
            raise DataError(
                f"{self.name}: unknown case id {case_id!r}; valid ids are {', '.join(self._ids[:3])}, ... "
                f"{self._ids[-1]} ({self.n_patients} patients)"
            )
        images, labels = self.arrays()
        meta = {"generator_version": GENERATOR_VERSION, "seed": self.seed, "patient_index": i}
        return Case(case_id, images[i].copy(), labels[i].copy(), self.spacing, self.group(case_id), meta)

    # -- generation and cache --

    @staticmethod
    @abstractmethod
    def _generate_patient(rng: np.random.Generator, n_slices: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Image (Z, Y, X) float in [0, 1] and label (Z, Y, X) uint8 of one patient."""

    def generate(self) -> tuple[np.ndarray, np.ndarray]:
        """Generate all patients (no cache): quantised images ``(P, Z, Y, X)`` uint16 and labels uint8."""
        shape = (self.n_patients, self.n_slices, self.size, self.size)
        quant = np.empty(shape, dtype=np.uint16)
        labels = np.empty(shape, dtype=np.uint8)
        for i in range(self.n_patients):
            rng = np.random.default_rng(np.random.SeedSequence([self.seed_tag, self.seed, i]))
            image, label = self._generate_patient(rng, self.n_slices, self.size)
            quant[i] = np.rint(np.clip(image, 0.0, 1.0) * QUANT_LEVELS).astype(np.uint16)
            labels[i] = label
        return quant, labels

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All images ``(P, Z, Y, X)`` float32 and labels uint8 (loaded from the cache or generated once)."""
        if self._images is None or self._labels is None:
            quant, labels = self._read_cache()
            if quant is None or labels is None:
                quant, labels = self.generate()
                self._write_cache(quant, labels)
            self._images = quant.astype(np.float32) / np.float32(QUANT_LEVELS)
            self._labels = labels
        return self._images, self._labels

    def _read_cache(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        path = self.cache_path
        if not path.is_file():
            return None, None
        shape = (self.n_patients, self.n_slices, self.size, self.size)
        try:
            with np.load(path, allow_pickle=False) as data:
                version = int(data["version"])
                source = str(data["source"]) if "source" in data.files else ""
                quant, labels = data["image_q"], data["label"]
            problem = None
            if version == GENERATOR_VERSION and source != SOURCE_FINGERPRINT:
                return None, None  # written by an edited generator of the same version: regenerate quietly
            if version != GENERATOR_VERSION:
                problem = f"generator version {version}, expected {GENERATOR_VERSION}"
            elif quant.shape != shape or labels.shape != shape:
                problem = f"shape {quant.shape}/{labels.shape}, expected {shape}"
            elif quant.dtype != np.uint16 or labels.dtype != np.uint8:
                problem = f"dtypes {quant.dtype}/{labels.dtype}"
            elif quant.max() > QUANT_LEVELS or labels.max() >= self.spec.num_classes:
                problem = "values out of range"
            if problem is None:
                return quant, labels
        except Exception as exc:  # noqa: BLE001 - any unreadable file is regenerated
            problem = f"{type(exc).__name__}: {exc}"
        warnings.warn(f"{self.name}: cache file {path} is unusable ({problem}); regenerating it", stacklevel=3)
        return None, None

    def _write_cache(self, quant: np.ndarray, labels: np.ndarray) -> None:
        path = self.cache_path
        tmp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as fh:
                np.savez_compressed(
                    fh,
                    image_q=quant,
                    label=labels,
                    version=np.int64(GENERATOR_VERSION),
                    source=np.str_(SOURCE_FINGERPRINT),
                )
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache may be shared
            os.replace(tmp, path)
            tmp = None
        except OSError as exc:
            warnings.warn(f"{self.name}: could not write cache file {path} ({exc}); keeping it in memory", stacklevel=3)
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass


@DATASETS.register("cardiac-phantom")
class CardiacPhantom(_Phantom):
    """Synthetic ACDC-like cine-MR short-axis stacks (RV / Myo / LV), generated on first use."""

    name = "cardiac-phantom"
    spec = TaskSpec(dims=2, num_classes=4, label_names=("background", "RV", "Myo", "LV"), modality="MR")
    base_spacing = (8.0, 1.5, 1.5)
    seed_tag = 1
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    @staticmethod
    def _generate_patient(rng: np.random.Generator, n_slices: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        return _cardiac_patient(rng, n_slices, size)


@DATASETS.register("pancreas-phantom")
class PancreasPhantom(_Phantom):
    """Synthetic abdominal-CT-like slices with a low-contrast pancreas, generated on first use."""

    name = "pancreas-phantom"
    spec = TaskSpec(dims=2, num_classes=2, label_names=("background", "pancreas"), modality="CT")
    base_spacing = (2.5, 0.8, 0.8)
    seed_tag = 2
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    @staticmethod
    def _generate_patient(rng: np.random.Generator, n_slices: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        return _pancreas_patient(rng, n_slices, size)
