"""Segmentation metrics: overlap (Dice, Jaccard, precision, recall) and surface distances (HD, HD95, ASD, ASSD).

The values are those of :mod:`medpy.metric.binary` (``dc``, ``jc``, ``precision``, ``recall``, ``hd``, ``hd95``,
``asd``, ``assd``) with medpy's ``voxelspacing`` handling and its default ``connectivity=1`` (the surface of an
object is the object minus its erosion by the cross-shaped structuring element; voxels on the image border belong
to the surface because medpy erodes with ``border_value=0``). They agree with medpy to within 1e-6 wherever medpy
is defined, but are computed much faster:

* the bounding box of every class comes from its mask's projections (:func:`_mask_box`);
* everything for a class is computed on the union bounding box of its prediction and reference. Outside the box
  is background for this class, and the box's own border plays the role of medpy's ``border_value=0``, so the
  erosion, and hence the surface, is exactly the full-volume one (:func:`ssl_bench.evaluation.surface.surface`);
* the directed surface distances come from an exact distance transform of the box, or, when the surfaces are
  sparse in the box (scattered false positives stretch it to the whole volume), from exact nearest-neighbour
  queries between the surface voxels' spacing-scaled coordinates, whichever is cheaper
  (:mod:`ssl_bench.evaluation.surface`). No margin is needed: every surface voxel lies inside the box;
* both directed surface-distance arrays are computed once per class, and HD, HD95, ASD and ASSD are derived from
  them.

Note: ``assd`` is medpy >= 0.5's definition, the mean of the concatenated distances of both directions; medpy
0.4 averaged the two directed means instead (different when the two surfaces have different voxel counts).

Empty masks, where medpy raises or silently returns 1/0, follow :data:`EMPTY_POLICY` (text:
:data:`EMPTY_POLICY_TEXT`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ssl_bench.core.errors import MetricInputError
from ssl_bench.evaluation.surface import distance_metrics, surface_distances

__all__ = [
    "BACKENDS",
    "COUNT_NAMES",
    "DISTANCE_METRICS",
    "EMPTY_POLICY",
    "EMPTY_POLICY_TEXT",
    "METRIC_NAMES",
    "OVERLAP_METRICS",
    "binary_metrics",
    "pseudo_label_quality",
    "segmentation_metrics",
]

METRIC_NAMES: tuple[str, ...] = ("dice", "jaccard", "precision", "recall", "hd", "hd95", "asd", "assd")
OVERLAP_METRICS: tuple[str, ...] = ("dice", "jaccard", "precision", "recall")
DISTANCE_METRICS: tuple[str, ...] = ("hd", "hd95", "asd", "assd")
COUNT_NAMES: tuple[str, ...] = ("tp", "fp", "fn", "n_ref", "n_pred")
BACKENDS: tuple[str, ...] = ("ssl-bench", "medpy")

_NAN = float("nan")

#: Machine-readable empty-mask policy. Keys are the values of the per-class ``"empty"`` field other than
#: ``"none"`` (both masks non-empty: every metric is computed as in medpy); each maps every metric name to the
#: value it takes (``nan`` = undefined: excluded from means, the aggregator counts it).
EMPTY_POLICY: dict[str, dict[str, float]] = {
    "both": dict.fromkeys(METRIC_NAMES, _NAN),
    "pred": {
        "dice": 0.0,
        "jaccard": 0.0,
        "precision": _NAN,
        "recall": 0.0,
        **dict.fromkeys(DISTANCE_METRICS, _NAN),
    },
    "ref": {
        "dice": 0.0,
        "jaccard": 0.0,
        "precision": 0.0,
        "recall": _NAN,
        **dict.fromkeys(DISTANCE_METRICS, _NAN),
    },
}

#: One-sentence version of :data:`EMPTY_POLICY` for table footnotes.
EMPTY_POLICY_TEXT: str = (
    "Empty masks: if prediction and reference are both empty every metric is NaN (excluded from means, counted "
    "separately); if only the prediction is empty Dice, Jaccard and recall are 0 and precision and all surface "
    "distances are NaN (a failure, never a distance of 0); if only the reference is empty Dice, Jaccard and "
    "precision are 0 and recall and all surface distances are NaN."
)

_MAX_LISTED = 10  # how many offending label values an error message lists


# ----------------------------------------------------------------------------------------------------------------
# input checking
# ----------------------------------------------------------------------------------------------------------------
def _prefix(case: Any) -> str:
    return "" if case is None else f"case {case!r}: "


def _to_numpy(x: Any, name: str, case: Any) -> np.ndarray:
    """Turns a numpy array, torch tensor or array-like into a numpy array (no copy where possible)."""
    if hasattr(x, "detach") and hasattr(x, "cpu") and hasattr(x, "numpy"):  # torch.Tensor, without importing torch
        x = x.detach().cpu()
        if str(getattr(x, "dtype", "")) == "torch.bfloat16":  # numpy has no bfloat16
            x = x.float()
        x = x.numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise MetricInputError(f"{_prefix(case)}{name} cannot be converted to an array: {exc}") from exc


def _check_ndim(arr: np.ndarray, name: str, case: Any) -> None:
    if arr.ndim not in (2, 3):
        raise MetricInputError(
            f"{_prefix(case)}{name} must be 2-D (H, W) or 3-D (Z, Y, X); got {arr.ndim}-D array of shape {arr.shape}"
        )


def _check_same_shape(a: np.ndarray, b: np.ndarray, names: tuple[str, str], case: Any) -> None:
    if a.shape != b.shape:
        raise MetricInputError(
            f"{_prefix(case)}shape mismatch: {names[0]} has shape {tuple(a.shape)} but {names[1]} has shape "
            f"{tuple(b.shape)}"
        )


def _as_integer_labels(arr: np.ndarray, name: str, case: Any) -> np.ndarray:
    """Returns ``arr`` as an integer array; bool is viewed as uint8, integral floats are converted to int64.

    Raises:
        MetricInputError: NaN/inf values, non-integral float values or a non-numeric dtype.
    """
    kind = arr.dtype.kind
    if kind == "b":
        return arr.view(np.uint8)
    if kind in "iu":
        return arr
    if kind == "f":
        finite = np.isfinite(arr)
        if not finite.all():
            n_bad = int(arr.size - np.count_nonzero(finite))
            raise MetricInputError(f"{_prefix(case)}{name} contains {n_bad} NaN or inf value(s); labels must be finite")
        frac = arr != np.trunc(arr)
        if frac.any():
            examples = np.unique(arr[frac])[:_MAX_LISTED].tolist()
            raise MetricInputError(
                f"{_prefix(case)}{name} has non-integral float values (e.g. {examples}); pass integer labels, "
                f"not probabilities or logits (take an argmax or threshold first)"
            )
        return arr.astype(np.int64)
    raise MetricInputError(
        f"{_prefix(case)}{name} has non-integer dtype {arr.dtype}; expected an integer, boolean or integral-valued "
        f"float label map"
    )


def _check_classes(classes: Any, case: Any) -> tuple[int, ...]:
    if isinstance(classes, (int, np.integer)) and not isinstance(classes, bool):
        classes = (classes,)
    try:
        items = list(classes)
    except TypeError as exc:
        raise MetricInputError(
            f"{_prefix(case)}classes must be an iterable of integer labels; got {classes!r}"
        ) from exc
    out: list[int] = []
    for c in items:
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
            if isinstance(c, (float, np.floating)) and float(c).is_integer():
                c = int(c)
            else:
                raise MetricInputError(f"{_prefix(case)}classes must be integer labels; got {c!r} in {items!r}")
        c = int(c)
        if c < 0:
            raise MetricInputError(f"{_prefix(case)}classes must be non-negative labels; got {c} in {items!r}")
        if c not in out:
            out.append(c)
    if not out:
        raise MetricInputError(f"{_prefix(case)}classes is empty; give at least one label to score")
    return tuple(out)


def _check_spacing(spacing: Any, ndim: int, shape: tuple[int, ...], case: Any) -> tuple[float, ...] | None:
    if spacing is None:
        return None
    if hasattr(spacing, "tolist"):  # numpy array / torch tensor
        spacing = spacing.tolist()
    if isinstance(spacing, (int, float, np.integer, np.floating)) and not isinstance(spacing, bool):
        spacing = (float(spacing),) * ndim  # a scalar applies to every axis, as in medpy
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError) as exc:
        raise MetricInputError(
            f"{_prefix(case)}spacing must be None, a positive number or a sequence of {ndim} positive numbers; "
            f"got {spacing!r}"
        ) from exc
    if len(values) != ndim:
        raise MetricInputError(
            f"{_prefix(case)}spacing has length {len(values)} but the label maps are {ndim}-D (shape {shape}); "
            f"give one voxel size per axis, in the array's axis order"
        )
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise MetricInputError(f"{_prefix(case)}spacing values must be finite and positive; got {values}")
    return values


def _check_metrics(metrics: Any, case: Any) -> tuple[str, ...]:
    if metrics is None:
        return METRIC_NAMES
    if isinstance(metrics, str):
        metrics = (metrics,)
    try:
        names = [str(m) for m in metrics]
    except TypeError as exc:
        raise MetricInputError(f"{_prefix(case)}metrics must be None or an iterable of metric names") from exc
    unknown = [m for m in names if m not in METRIC_NAMES]
    if unknown:
        raise MetricInputError(f"{_prefix(case)}unknown metric name(s) {unknown}; choose from {list(METRIC_NAMES)}")
    return tuple(m for m in METRIC_NAMES if m in names)


def _check_backend(backend: Any, case: Any) -> str:
    if backend not in BACKENDS:
        raise MetricInputError(f"{_prefix(case)}unknown backend {backend!r}; choose from {list(BACKENDS)}")
    return backend


def _format_values(values: Iterable[Any]) -> str:
    values = sorted({int(v) for v in values})
    shown = ", ".join(str(v) for v in values[:_MAX_LISTED])
    return f"[{shown}{', ...' if len(values) > _MAX_LISTED else ''}]"


def _mask_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of the True voxels of ``mask`` (any ndim >= 1), or None if there are none.

    The range along the first axis comes from one projection of the whole mask; the remaining axes are found
    recursively in that slab's projection, so the work is about two passes over the mask.
    """
    profile = mask.any(axis=tuple(range(1, mask.ndim))) if mask.ndim > 1 else mask
    hits = np.flatnonzero(profile)
    if hits.size == 0:
        return None
    first = slice(int(hits[0]), int(hits[-1]) + 1)
    if mask.ndim == 1:
        return (first,)
    rest = _mask_box(mask[first].any(axis=0))
    assert rest is not None  # the slab holds a True voxel
    return (first, *rest)


def _class_boxes(
    lab: np.ndarray, allowed: frozenset[int], name: str, classes: tuple[int, ...], case: Any
) -> list[tuple[slice, ...] | None]:
    """Checks that ``lab`` only holds allowed labels and returns the bounding box of every label 1..max(allowed).

    Returns:
        ``boxes`` with ``boxes[k - 1]`` the bounding box of label ``k`` (``None`` if absent).
    """
    max_allowed = max(allowed)
    lo = int(lab.min()) if lab.size else 0
    hi = int(lab.max()) if lab.size else 0
    bad: set[int] = set()
    if lo < 0 or hi > max_allowed:
        outside = (lab < 0) | (lab > max_allowed)
        bad.update(np.unique(lab[outside]).tolist())
    boxes: list[tuple[slice, ...] | None] = [None] * max_allowed
    for k in range(max(1, lo), min(hi, max_allowed) + 1):  # labels that can be present
        boxes[k - 1] = _mask_box(lab == k)
        if boxes[k - 1] is not None and k not in allowed:
            bad.add(k)
    if bad:
        raise MetricInputError(
            f"{_prefix(case)}{name} contains label value(s) {_format_values(bad)} that are not in classes "
            f"{list(classes)} (0 = background is always allowed); pass every label present in classes"
            f" (or in allowed_labels)"
        )
    return boxes


# ----------------------------------------------------------------------------------------------------------------
# per-class computation
# ----------------------------------------------------------------------------------------------------------------
def _union_box(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    if a is None:
        return b
    if b is None:
        return a
    return tuple(slice(min(sa.start, sb.start), max(sa.stop, sb.stop)) for sa, sb in zip(a, b, strict=True))


def _overlap_metrics(tp: int, n_pred: int, n_ref: int, wanted: tuple[str, ...]) -> dict[str, float]:
    """Dice, Jaccard, precision, recall from counts (both masks non-empty), with medpy's float arithmetic."""
    out: dict[str, float] = {}
    if "dice" in wanted:
        out["dice"] = 2.0 * tp / float(n_pred + n_ref)
    if "jaccard" in wanted:
        out["jaccard"] = float(tp) / float(n_pred + n_ref - tp)
    if "precision" in wanted:
        out["precision"] = tp / float(n_pred)
    if "recall" in wanted:
        out["recall"] = tp / float(n_ref)
    return out


def _empty_state(n_pred: int, n_ref: int) -> str:
    if n_pred == 0 and n_ref == 0:
        return "both"
    if n_pred == 0:
        return "pred"
    if n_ref == 0:
        return "ref"
    return "none"


def _finish(values: dict[str, float], counts: dict[str, int], state: str, wanted: tuple[str, ...]) -> dict[str, Any]:
    if state != "none":
        values = {m: EMPTY_POLICY[state][m] for m in wanted}
    row: dict[str, Any] = {m: values[m] for m in wanted}
    row.update(counts)
    row["empty"] = state
    return row


def _class_fast(
    pred: np.ndarray,
    ref: np.ndarray,
    k: int,
    box: tuple[slice, ...] | None,
    spacing: tuple[float, ...] | None,
    wanted: tuple[str, ...],
) -> dict[str, Any]:
    if box is None:  # class absent from both maps
        return _finish({}, {"tp": 0, "fp": 0, "fn": 0, "n_ref": 0, "n_pred": 0}, "both", wanted)
    p = pred[box] == k
    r = ref[box] == k
    n_pred = int(np.count_nonzero(p))
    n_ref = int(np.count_nonzero(r))
    tp = int(np.count_nonzero(np.logical_and(p, r)))
    counts = {"tp": tp, "fp": n_pred - tp, "fn": n_ref - tp, "n_ref": n_ref, "n_pred": n_pred}
    state = _empty_state(n_pred, n_ref)
    values: dict[str, float] = {}
    if state == "none":
        values.update(_overlap_metrics(tp, n_pred, n_ref, wanted))
        dist_wanted = tuple(m for m in wanted if m in DISTANCE_METRICS)
        if dist_wanted:
            sd_pred, sd_ref = surface_distances(p, r, spacing, both_directions=dist_wanted != ("asd",))
            values.update(distance_metrics(sd_pred, sd_ref, dist_wanted))
    return _finish(values, counts, state, wanted)


def _class_medpy(
    pred: np.ndarray, ref: np.ndarray, k: int, spacing: tuple[float, ...] | None, wanted: tuple[str, ...]
) -> dict[str, Any]:
    from medpy.metric import binary as mb

    p = pred == k
    r = ref == k
    n_pred = int(np.count_nonzero(p))
    n_ref = int(np.count_nonzero(r))
    tp = int(np.count_nonzero(p & r))
    counts = {"tp": tp, "fp": n_pred - tp, "fn": n_ref - tp, "n_ref": n_ref, "n_pred": n_pred}
    state = _empty_state(n_pred, n_ref)
    values: dict[str, float] = {}
    if state == "none":
        funcs = {"dice": mb.dc, "jaccard": mb.jc, "precision": mb.precision, "recall": mb.recall}
        dfuncs = {"hd": mb.hd, "hd95": mb.hd95, "asd": mb.asd, "assd": mb.assd}
        for m in wanted:
            if m in funcs:
                values[m] = float(funcs[m](p, r))
            else:
                values[m] = float(dfuncs[m](p, r, voxelspacing=spacing, connectivity=1))
    return _finish(values, counts, state, wanted)


# ----------------------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------------------
def segmentation_metrics(
    pred: Any,
    ref: Any,
    classes: Iterable[int],
    spacing: Sequence[float] | float | None = None,
    *,
    metrics: Iterable[str] | None = None,
    backend: str = "ssl-bench",
    case: Any = None,
    allowed_labels: Iterable[int] | None = None,
) -> dict[int, dict[str, Any]]:
    """Per-class overlap and surface-distance metrics of a predicted label map against a reference.

    Values equal medpy's (``medpy.metric.binary.dc/jc/precision/recall/hd/hd95/asd/assd`` on ``pred == k`` and
    ``ref == k`` with ``voxelspacing=spacing``, ``connectivity=1``) to within 1e-6 wherever medpy is defined.
    ``asd`` is directed: the mean distance from the prediction's surface to the reference's surface; ``assd`` is
    the mean over the concatenated distances of both directions (medpy >= 0.5). ``hd95`` is the 95th percentile
    (linear interpolation) of both directed distance sets together.

    Empty-mask policy (see :data:`EMPTY_POLICY`): both masks empty -> every metric NaN; prediction empty but
    reference not -> dice/jaccard/recall 0, precision NaN, hd/hd95/asd/assd NaN; reference empty but prediction
    not -> dice/jaccard/precision 0, recall NaN, hd/hd95/asd/assd NaN. Distances are never 0 for an empty mask.

    Args:
        pred: predicted integer label map, numpy array or torch tensor of shape (H, W) or (Z, Y, X). Bool and
            integral-valued float arrays are accepted.
        ref: reference label map of the same shape.
        classes: labels to score (non-negative ints). Label 0 is background; it may be scored too.
        spacing: voxel size per axis (length ``ndim``, same axis order as the arrays; a scalar applies to all
            axes) or None for voxel units.
        metrics: subset of :data:`METRIC_NAMES` to compute (e.g. ``("dice",)`` during training: no surface work
            is done then); None computes all eight.
        backend: ``"ssl-bench"`` (fast, cropped) or ``"medpy"`` (calls medpy itself on the full volume, wrapped
            in the same empty-mask policy).
        case: optional case name, quoted in error messages.
        allowed_labels: labels that may appear in the maps without being scored (besides ``classes`` and 0).

    Returns:
        ``{k: row}`` for each class ``k`` in the given order. ``row`` holds the requested metrics (float, NaN where
        undefined), the counts ``tp``, ``fp``, ``fn``, ``n_ref``, ``n_pred`` (int, always present) and ``empty``
        (``"none"``, ``"both"``, ``"pred"`` or ``"ref"``: which masks are empty).

    Raises:
        MetricInputError: shape mismatch, ndim not 2 or 3, non-integer dtype or non-integral float values, NaN or
            inf, labels outside ``classes`` ∪ {0}, bad spacing, unknown metric name or backend, bad ``classes``.
    """
    backend = _check_backend(backend, case)
    wanted = _check_metrics(metrics, case)
    cls = _check_classes(classes, case)
    extra = _check_classes(allowed_labels, case) if allowed_labels is not None else ()
    p = _to_numpy(pred, "pred", case)
    r = _to_numpy(ref, "ref", case)
    _check_ndim(p, "pred", case)
    _check_ndim(r, "ref", case)
    _check_same_shape(p, r, ("pred", "ref"), case)
    sp = _check_spacing(spacing, p.ndim, tuple(p.shape), case)
    p = _as_integer_labels(p, "pred", case)
    r = _as_integer_labels(r, "ref", case)
    allowed = frozenset((0, *cls, *extra))
    pboxes = _class_boxes(p, allowed, "pred", cls, case)
    rboxes = _class_boxes(r, allowed, "ref", cls, case)

    full = tuple(slice(0, s) for s in p.shape)
    out: dict[int, dict[str, Any]] = {}
    for k in cls:
        if backend == "medpy":
            out[k] = _class_medpy(p, r, k, sp, wanted)
            continue
        if k == 0:
            box: tuple[slice, ...] | None = full
        else:
            box = _union_box(pboxes[k - 1], rboxes[k - 1])
        out[k] = _class_fast(p, r, k, box, sp, wanted)
    return out


def _binary_mask(x: Any, name: str, case: Any = None) -> np.ndarray:
    """Returns ``x`` as an integer array whose values are all 0 or 1 (raises MetricInputError otherwise)."""
    arr = _as_integer_labels(_to_numpy(x, name, case), name, case)
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 1):
        values = np.unique(arr[(arr < 0) | (arr > 1)])
        raise MetricInputError(
            f"{_prefix(case)}{name} must be a binary mask with values in {{0, 1}}; found {_format_values(values)}"
            f" (use segmentation_metrics for label maps, or pass cls= to pseudo_label_quality)"
        )
    return arr


def binary_metrics(
    pred_mask: Any,
    ref_mask: Any,
    spacing: Sequence[float] | float | None = None,
    *,
    metrics: Iterable[str] | None = None,
    backend: str = "ssl-bench",
) -> dict[str, Any]:
    """Metrics of one binary prediction mask against a binary reference mask.

    Same as ``segmentation_metrics(pred_mask, ref_mask, classes=(1,), ...)[1]``.

    Empty-mask policy (see :data:`EMPTY_POLICY`): both masks empty -> every metric NaN; prediction empty but
    reference not -> dice/jaccard/recall 0, precision NaN, hd/hd95/asd/assd NaN; reference empty but prediction
    not -> dice/jaccard/precision 0, recall NaN, hd/hd95/asd/assd NaN. Distances are never 0 for an empty mask.

    Args:
        pred_mask: bool or {0, 1} array / tensor of shape (H, W) or (Z, Y, X).
        ref_mask: same shape.
        spacing: voxel size per axis or None (voxel units).
        metrics: subset of :data:`METRIC_NAMES`; None for all.
        backend: ``"ssl-bench"`` or ``"medpy"``.

    Returns:
        The metric row: requested metrics, counts ``tp, fp, fn, n_ref, n_pred`` and ``empty``.

    Raises:
        MetricInputError: values other than 0/1 and every error of :func:`segmentation_metrics`.
    """
    p = _binary_mask(pred_mask, "pred_mask")
    r = _binary_mask(ref_mask, "ref_mask")
    return segmentation_metrics(p, r, (1,), spacing, metrics=metrics, backend=backend)[1]


def pseudo_label_quality(pred: Any, ref: Any, region: Any = None, *, cls: int | None = None) -> dict[str, float]:
    """Quality of pseudo labels against the ground truth (Fig. 3/4 of the CoraNet paper).

    ``ppv = tp / (tp + fp)``, ``tpr = tp / (tp + fn)``, ``csi = tp / (tp + fp + fn)`` (critical success index),
    each NaN when its denominator is 0. Only voxels inside ``region`` are counted (e.g. CoraNet's certain region).

    Args:
        pred: pseudo labels, any shape (e.g. (B, H, W) or (B, Z, Y, X)), numpy array or torch tensor. Without
            ``cls`` a binary mask (bool or {0, 1}); with ``cls`` an integer label map.
        ref: ground truth of the same shape and kind.
        region: optional bool mask of the same shape; None counts every voxel.
        cls: if given, ``pred`` and ``ref`` are label maps and the foreground is ``== cls``.

    Returns:
        ``{"ppv", "tpr", "csi"}`` as floats and ``{"tp", "fp", "fn"}`` as floats (counts).

    Raises:
        MetricInputError: shape mismatch, NaN, non-integral values, non-binary masks without ``cls``, a non-bool
            ``region``.
    """
    p = _to_numpy(pred, "pred", None)
    r = _to_numpy(ref, "ref", None)
    _check_same_shape(p, r, ("pred", "ref"), None)
    if cls is None:
        pm = _binary_mask(p, "pred").astype(bool)
        rm = _binary_mask(r, "ref").astype(bool)
    else:
        if isinstance(cls, bool) or not isinstance(cls, (int, np.integer)):
            raise MetricInputError(f"cls must be an integer label; got {cls!r}")
        pm = _as_integer_labels(p, "pred", None) == cls
        rm = _as_integer_labels(r, "ref", None) == cls
    if region is not None:
        g = _to_numpy(region, "region", None)
        _check_same_shape(g, p, ("region", "pred"), None)
        if g.dtype.kind != "b":
            g = _binary_mask(g, "region")
        g = g.astype(bool, copy=False)
        pm = pm & g
        rm = rm & g
    return confusion_ratios(*confusion_counts(pm, rm))


def confusion_counts(pred_mask: np.ndarray, ref_mask: np.ndarray) -> tuple[float, float, float]:
    """``(tp, fp, fn)`` of two bool masks of one shape."""
    return (
        float(np.count_nonzero(pred_mask & ref_mask)),
        float(np.count_nonzero(pred_mask & ~ref_mask)),
        float(np.count_nonzero(~pred_mask & ref_mask)),
    )


def confusion_ratios(tp: float, fp: float, fn: float) -> dict[str, float]:
    """``{"ppv", "tpr", "csi", "tp", "fp", "fn"}`` from the counts; a ratio with denominator 0 is NaN."""

    def ratio(num: float, den: float) -> float:
        return num / den if den > 0 else _NAN

    return {
        "ppv": ratio(tp, tp + fp),
        "tpr": ratio(tp, tp + fn),
        "csi": ratio(tp, tp + fp + fn),
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }
