"""Tests of ssl_bench.evaluation.metrics and ssl_bench.evaluation.metrics_io against medpy.metric.binary."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import scatter_false_positives
from medpy.metric import binary as mb
from scipy import ndimage as ndi

from ssl_bench.core.errors import MetricInputError
from ssl_bench.evaluation import surface as surface_module
from ssl_bench.evaluation.metrics import (
    DISTANCE_METRICS,
    EMPTY_POLICY,
    EMPTY_POLICY_TEXT,
    METRIC_NAMES,
    binary_metrics,
    pseudo_label_quality,
    segmentation_metrics,
)
from ssl_bench.evaluation.metrics_io import load_label_map, score_paths

TOL = 1e-6
N_RANDOM_CASES = 240
N_NOISY_CASES = 24


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------
def medpy_metrics(p: np.ndarray, r: np.ndarray, spacing) -> dict[str, float]:
    """The eight metrics computed by medpy itself, one function call each (both masks non-empty)."""
    return {
        "dice": mb.dc(p, r),
        "jaccard": mb.jc(p, r),
        "precision": mb.precision(p, r),
        "recall": mb.recall(p, r),
        "hd": mb.hd(p, r, voxelspacing=spacing),
        "hd95": mb.hd95(p, r, voxelspacing=spacing),
        "asd": mb.asd(p, r, voxelspacing=spacing),
        "assd": mb.assd(p, r, voxelspacing=spacing),
    }


def assert_matches_medpy(pred, ref, classes, spacing, label: str) -> int:
    """Checks segmentation_metrics against medpy for every class; returns how many classes had both masks."""
    ours = segmentation_metrics(pred, ref, classes, spacing)
    compared = 0
    for k in classes:
        p, r = pred == k, ref == k
        row = ours[k]
        assert row["n_pred"] == np.count_nonzero(p) and row["n_ref"] == np.count_nonzero(r), label
        assert row["tp"] == np.count_nonzero(p & r), label
        if row["empty"] != "none":
            for m in METRIC_NAMES:
                expected = EMPTY_POLICY[row["empty"]][m]
                assert (math.isnan(row[m]) and math.isnan(expected)) or row[m] == expected, (label, k, m)
            continue
        expected = medpy_metrics(p, r, spacing)
        for m in METRIC_NAMES:
            assert abs(row[m] - expected[m]) <= TOL, f"{label} class {k} {m}: ours {row[m]!r} medpy {expected[m]!r}"
        compared += 1
    return compared


def _ellipsoid(shape, center, radii) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    d = sum(((g - c) / rr) ** 2 for g, c, rr in zip(grids, center, radii, strict=True))
    return d <= 1.0


def random_case(seed: int):
    """Random label maps with several classes and components, border-touching and single-voxel objects."""
    rng = np.random.default_rng(seed)
    ndim = 2 if seed % 3 == 0 else 3
    shape = (
        tuple(int(rng.integers(6, 40)) for _ in range(2))
        if ndim == 2
        else (
            int(rng.integers(3, 12)),
            int(rng.integers(8, 32)),
            int(rng.integers(8, 32)),
        )
    )
    n_classes = int(rng.integers(1, 4))
    classes = tuple(range(1, n_classes + 1))
    ref = np.zeros(shape, np.uint8)
    for k in classes:
        for _ in range(int(rng.integers(1, 4))):  # several connected components
            kind = rng.random()
            if kind < 0.15:  # single voxel
                ref[tuple(int(rng.integers(0, s)) for s in shape)] = k
                continue
            # centre anywhere, including on or near the border (objects touching the image border)
            center = [float(rng.uniform(-1, s)) for s in shape]
            radii = [float(rng.uniform(0.6, max(1.0, s / 3))) for s in shape]
            if kind < 0.6:
                ref[_ellipsoid(shape, center, radii)] = k
            else:
                lo = [max(0, int(c - rr)) for c, rr in zip(center, radii, strict=True)]
                hi = [min(s, int(c + rr) + 1) for s, c, rr in zip(shape, center, radii, strict=True)]
                ref[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = k
    # prediction: shift, per-class erosion/dilation, label noise, dropped/added voxels
    pred = np.roll(ref, tuple(int(rng.integers(-2, 3)) for _ in range(ndim)), axis=tuple(range(ndim)))
    pred = pred.copy()
    for k in classes:
        if rng.random() < 0.3:
            m = pred == k
            op = ndi.binary_dilation if rng.random() < 0.5 else ndi.binary_erosion
            grown = op(m)
            pred[m] = 0
            pred[grown] = k
    noise = rng.random(shape) < rng.uniform(0, 0.05)
    pred[noise] = rng.integers(0, n_classes + 1, int(noise.sum()))
    if rng.random() < 0.15:  # an object that fills the whole image (its surface is the image border)
        pred[...] = classes[-1]
    if ndim == 2:
        options = [None, (1.0, 1.0), (1.2, 3.5), (4.0, 0.7), tuple(rng.uniform(0.3, 5, 2))]
    else:
        options = [None, (1.0, 1.0, 1.0), (10.0, 1.2, 1.2), (1.0, 1.0, 5.0), tuple(rng.uniform(0.3, 6, 3))]
    spacing = options[int(rng.integers(0, len(options)))]
    return pred, ref, classes, spacing


def noisy_case(seed: int):
    """Larger label maps whose prediction carries scattered false positives (0.1-1 % salt noise over the whole
    image, sometimes in the reference too): the crop is then the whole image while the surfaces stay sparse."""
    rng = np.random.default_rng(10_000 + seed)
    ndim = 2 if seed % 4 == 0 else 3
    if ndim == 2:
        shape = tuple(int(rng.integers(60, 160)) for _ in range(2))
    else:
        shape = (int(rng.integers(4, 12)), int(rng.integers(40, 72)), int(rng.integers(40, 72)))
    classes = tuple(range(1, int(rng.integers(1, 4)) + 1))
    ref = np.zeros(shape, np.uint8)
    for k in classes:
        center = [float(rng.uniform(0.2 * s, 0.8 * s)) for s in shape]
        radii = [float(rng.uniform(1.5, max(2.0, s / 4))) for s in shape]
        ref[_ellipsoid(shape, center, radii)] = k
    if rng.random() < 0.3:  # an object touching the image border
        ref[(slice(None),) * (ndim - 1) + (slice(0, 3),)] = classes[0]
    pred = np.roll(ref, tuple(int(rng.integers(-2, 3)) for _ in range(ndim)), axis=tuple(range(ndim)))
    for k in classes:
        if rng.random() < 0.4:
            m = pred == k
            grown = (ndi.binary_dilation if rng.random() < 0.5 else ndi.binary_erosion)(m)
            pred[m] = 0
            pred[grown] = k
    pred = scatter_false_positives(pred, float(rng.choice([0.001, 0.002, 0.005, 0.01])), classes, rng)
    if rng.random() < 0.25:
        ref = scatter_false_positives(ref, 0.001, classes, rng)
    if ndim == 2:
        options = [None, (1.0, 1.0), (1.2, 3.5), tuple(rng.uniform(0.3, 5, 2))]
    else:
        options = [None, (1.0, 1.0, 1.0), (10.0, 1.5, 1.5), (1.0, 1.0, 5.0), tuple(rng.uniform(0.3, 6, 3))]
    spacing = options[int(rng.integers(0, len(options)))]
    return pred, ref, classes, spacing


# ----------------------------------------------------------------------------------------------------------------
# agreement with medpy
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(N_RANDOM_CASES))
def test_random_cases_match_medpy(seed):
    pred, ref, classes, spacing = random_case(seed)
    assert_matches_medpy(pred, ref, classes, spacing, f"seed {seed} shape {pred.shape} spacing {spacing}")


def test_random_cases_mostly_non_empty():
    """The randomised comparison above must really compare distances (not just hit the empty policy)."""
    compared = 0
    for seed in range(0, N_RANDOM_CASES, 4):
        pred, ref, classes, _ = random_case(seed)
        ours = segmentation_metrics(pred, ref, classes, metrics=("dice",))
        compared += sum(row["empty"] == "none" for row in ours.values())
    assert compared >= 0.8 * len(range(0, N_RANDOM_CASES, 4))


@pytest.mark.parametrize("spacing", [None, (3.0, 0.5, 0.5), (0.5, 0.7, 4.0)])
def test_objects_touching_every_border(spacing):
    """medpy erodes with border_value=0: voxels on the image border are surface voxels; the crop must agree."""
    shape = (6, 15, 17)
    ref = np.zeros(shape, np.uint8)
    ref[0:3, 0:5, 0:6] = 1  # corner
    ref[2:6, 10:15, 3:9] = 1  # touches z-max and y-max faces
    ref[1:4, 4:9, 12:17] = 2  # touches x-max face
    pred = np.zeros(shape, np.uint8)
    pred[0:2, 0:7, 0:4] = 1
    pred[3:6, 9:15, 4:10] = 1
    pred[0:6, 5:10, 11:17] = 2
    assert_matches_medpy(pred, ref, (1, 2), spacing, "border")
    full = np.ones(shape, np.uint8)  # whole image: surface = image border only
    blob = np.zeros(shape, np.uint8)
    blob[2:4, 6:9, 7:10] = 1
    assert_matches_medpy(full, blob, (1,), spacing, "full-vs-blob")
    assert_matches_medpy(blob, full, (1,), spacing, "blob-vs-full")


def test_background_class_can_be_scored():
    pred, ref, classes, spacing = random_case(5)
    assert_matches_medpy(pred, ref, (0, *classes), spacing, "class 0")


def test_single_voxel_objects():
    ref = np.zeros((5, 9, 9), np.uint8)
    ref[2, 4, 4] = 1
    pred = np.zeros_like(ref)
    pred[2, 4, 6] = 1
    pred[4, 0, 8] = 1
    assert assert_matches_medpy(pred, ref, (1,), (2.0, 1.0, 1.0), "single") == 1
    row = segmentation_metrics(ref, ref, (1,))[1]
    assert row["dice"] == 1.0 and row["hd"] == 0.0 and row["assd"] == 0.0


@pytest.mark.parametrize("seed", range(N_NOISY_CASES))
def test_noisy_cases_match_medpy(seed):
    """Scattered false positives: the crop is the whole image, the distances come from the kd-tree path."""
    pred, ref, classes, spacing = noisy_case(seed)
    compared = assert_matches_medpy(pred, ref, classes, spacing, f"noisy seed {seed} shape {pred.shape} sp {spacing}")
    assert compared == len(classes)


@pytest.fixture
def chosen_paths(monkeypatch) -> list[str]:
    """Records every path :func:`ssl_bench.evaluation.surface.choose_path` picks during the test."""
    seen: list[str] = []
    real = surface_module.choose_path

    def spy(*args, **kwargs):
        seen.append(real(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(surface_module, "choose_path", spy)
    return seen


def test_default_suites_exercise_both_paths(chosen_paths):
    """Noisy cases go to the kd-tree and the small random cases mostly to the transform, so both are compared."""
    for seed in range(N_NOISY_CASES):
        pred, ref, classes, spacing = noisy_case(seed)
        segmentation_metrics(pred, ref, classes, spacing)
    assert chosen_paths.count("kdtree") >= 0.9 * len(chosen_paths) > 0
    chosen_paths.clear()
    for seed in range(0, N_RANDOM_CASES, 4):
        pred, ref, classes, spacing = random_case(seed)
        segmentation_metrics(pred, ref, classes, spacing)
    assert chosen_paths.count("edt") >= 0.5 * len(chosen_paths) > 0


@pytest.mark.parametrize("path", surface_module.DISTANCE_PATHS)
def test_each_path_matches_medpy(monkeypatch, path):
    """Either path, forced on clean, noisy, border-touching and one-slice cases, equals medpy (asd alone too)."""
    monkeypatch.setattr(surface_module, "choose_path", lambda *args, **kwargs: path)
    cases = [random_case(seed) for seed in range(0, N_RANDOM_CASES, 6)]
    cases += [noisy_case(seed) for seed in range(0, N_NOISY_CASES, 4)]
    rng = np.random.default_rng(7)
    flat = np.zeros((1, 30, 40), np.uint8)  # one slice: every voxel is a surface voxel along z
    flat[0, 5:20, 8:30] = 1
    cases.append((scatter_false_positives(flat, 0.01, (1,), rng), flat, (1,), (5.0, 0.7, 0.9)))
    for i, (pred, ref, classes, spacing) in enumerate(cases):
        assert_matches_medpy(pred, ref, classes, spacing, f"{path} case {i} shape {pred.shape} spacing {spacing}")
        full = segmentation_metrics(pred, ref, classes, spacing)
        asd_only = segmentation_metrics(pred, ref, classes, spacing, metrics=("asd",))
        for k in classes:
            a, b = asd_only[k]["asd"], full[k]["asd"]
            assert (math.isnan(a) and math.isnan(b)) or a == b, (path, i, k)


@pytest.mark.parametrize("shape", [(7,), (1, 9), (5, 1, 6), (4, 6, 5), (1, 1, 8)])
def test_surface_is_medpy_erosion(shape):
    """surface(m) == m ^ binary_erosion(m, cross, border_value=0), thin and one-voxel axes included."""
    rng = np.random.default_rng(len(shape) * 10 + shape[-1])
    footprint = ndi.generate_binary_structure(len(shape), 1)
    for density in (0.3, 0.7, 0.95, 1.0):
        mask = rng.random(shape) < density
        expected = mask ^ ndi.binary_erosion(mask, structure=footprint, iterations=1, border_value=0)
        np.testing.assert_array_equal(surface_module.surface(mask), expected)


def test_class_boxes_equal_find_objects():
    """The per-class bounding boxes (from projections) are exactly scipy's find_objects boxes, gaps included."""
    from ssl_bench.evaluation.metrics import _class_boxes

    rng = np.random.default_rng(3)
    for shape in [(9,), (7, 11), (5, 8, 6), (1, 6, 1)]:
        for density in (0.01, 0.2, 0.9):
            lab = np.where(rng.random(shape) < density, rng.integers(1, 5, shape), 0).astype(np.int16)
            lab[lab == 3] = 0  # label 3 absent: a gap
            allowed = frozenset((0, 1, 2, 3, 4, 5))
            assert _class_boxes(lab, allowed, "pred", (1, 2, 3, 4, 5), None) == ndi.find_objects(lab, max_label=5)


def test_medpy_backend_same_values():
    for seed in range(0, 30, 3):
        pred, ref, classes, spacing = random_case(seed)
        ours = segmentation_metrics(pred, ref, classes, spacing)
        theirs = segmentation_metrics(pred, ref, classes, spacing, backend="medpy")
        for k in classes:
            assert ours[k]["empty"] == theirs[k]["empty"]
            for key in (*METRIC_NAMES, "tp", "fp", "fn", "n_ref", "n_pred"):
                a, b = ours[k][key], theirs[k][key]
                assert (math.isnan(a) and math.isnan(b)) or abs(a - b) <= TOL, (seed, k, key, a, b)


def test_metric_subset_and_keys():
    pred, ref, classes, spacing = random_case(4)
    rows = segmentation_metrics(pred, ref, classes, spacing, metrics=("dice",))
    for row in rows.values():
        assert set(row) == {"dice", "tp", "fp", "fn", "n_ref", "n_pred", "empty"}
    full = segmentation_metrics(pred, ref, classes, spacing)
    for k in classes:
        assert set(full[k]) == {*METRIC_NAMES, "tp", "fp", "fn", "n_ref", "n_pred", "empty"}
        assert rows[k]["dice"] == full[k]["dice"] or math.isnan(rows[k]["dice"])
    hd_only = segmentation_metrics(pred, ref, classes, spacing, metrics="hd95")
    for k in classes:
        a, b = hd_only[k]["hd95"], full[k]["hd95"]
        assert (math.isnan(a) and math.isnan(b)) or a == b


def test_torch_and_float_inputs():
    torch = pytest.importorskip("torch")
    pred, ref, classes, spacing = random_case(7)
    expected = segmentation_metrics(pred, ref, classes, spacing)
    got_t = segmentation_metrics(torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(ref), classes, spacing)
    got_f = segmentation_metrics(pred.astype(np.float32), ref.astype(np.float64), classes, np.array(spacing or 1.0))
    if spacing is None:
        got_f = segmentation_metrics(pred.astype(np.float32), ref.astype(np.float64), classes, spacing)
    for k in classes:
        for m in METRIC_NAMES:
            for got in (got_t, got_f):
                a, b = got[k][m], expected[k][m]
                assert (math.isnan(a) and math.isnan(b)) or a == b


def test_binary_metrics_matches_medpy():
    rng = np.random.default_rng(0)
    r = _ellipsoid((8, 20, 20), (4, 10, 10), (3, 6, 5))
    p = np.roll(r, 2, axis=2) | (rng.random(r.shape) < 0.01)
    got = binary_metrics(p, r, (3.0, 1.0, 1.0))
    expected = medpy_metrics(p, r, (3.0, 1.0, 1.0))
    for m in METRIC_NAMES:
        assert abs(got[m] - expected[m]) <= TOL
    got_medpy = binary_metrics(p.astype(np.uint8), r.astype(np.uint8), (3.0, 1.0, 1.0), backend="medpy")
    assert all(abs(got_medpy[m] - expected[m]) <= TOL for m in METRIC_NAMES)
    with pytest.raises(MetricInputError, match=r"binary mask.*\[2\]"):
        binary_metrics(p.astype(np.uint8) * 2, r)


# ----------------------------------------------------------------------------------------------------------------
# empty-mask policy
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["ssl-bench", "medpy"])
def test_empty_policy(backend):
    blob = np.zeros((4, 10, 10), np.uint8)
    blob[1:3, 2:6, 3:7] = 1
    empty = np.zeros_like(blob)
    both = segmentation_metrics(empty, empty, (1,), backend=backend)[1]
    assert both["empty"] == "both" and all(math.isnan(both[m]) for m in METRIC_NAMES)
    assert (both["tp"], both["fp"], both["fn"], both["n_ref"], both["n_pred"]) == (0, 0, 0, 0, 0)

    pred_empty = segmentation_metrics(empty, blob, (1,), backend=backend)[1]
    assert pred_empty["empty"] == "pred"
    assert pred_empty["dice"] == pred_empty["jaccard"] == pred_empty["recall"] == 0.0
    assert math.isnan(pred_empty["precision"])
    assert all(math.isnan(pred_empty[m]) for m in DISTANCE_METRICS)  # a failure, never a distance of 0
    assert pred_empty["fn"] == pred_empty["n_ref"] == 32

    ref_empty = segmentation_metrics(blob, empty, (1,), backend=backend)[1]
    assert ref_empty["empty"] == "ref"
    assert ref_empty["dice"] == ref_empty["jaccard"] == ref_empty["precision"] == 0.0
    assert math.isnan(ref_empty["recall"])
    assert all(math.isnan(ref_empty[m]) for m in DISTANCE_METRICS)
    assert ref_empty["fp"] == ref_empty["n_pred"] == 32


def test_empty_policy_description():
    assert set(EMPTY_POLICY) == {"both", "pred", "ref"}
    for state in EMPTY_POLICY.values():
        assert set(state) == set(METRIC_NAMES)
    assert EMPTY_POLICY["pred"]["dice"] == 0.0 and math.isnan(EMPTY_POLICY["pred"]["precision"])
    assert EMPTY_POLICY["ref"]["precision"] == 0.0 and math.isnan(EMPTY_POLICY["ref"]["recall"])
    assert "NaN" in EMPTY_POLICY_TEXT and "empty" in EMPTY_POLICY_TEXT
    assert "Empty-mask policy" in (segmentation_metrics.__doc__ or "")


def test_absent_class_among_present_ones():
    ref = np.zeros((12, 12), np.uint8)
    ref[2:5, 2:5] = 1
    rows = segmentation_metrics(ref, ref, (1, 2, 3))
    assert rows[1]["dice"] == 1.0 and rows[2]["empty"] == "both" and rows[3]["empty"] == "both"


# ----------------------------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------------------------
def _maps():
    a = np.zeros((4, 8, 8), np.uint8)
    a[1:3, 2:5, 2:5] = 1
    return a, a.copy()


def test_error_type_is_value_error():
    assert issubclass(MetricInputError, ValueError)


@pytest.mark.parametrize(
    ("make", "kwargs", "pattern"),
    [
        (
            lambda a, b: (a, b[:, :, :7]),
            {},
            r"shape mismatch: pred has shape \(4, 8, 8\) but ref has shape \(4, 8, 7\)",
        ),
        (lambda a, b: (a[0, 0], b[0, 0]), {}, r"must be 2-D .* or 3-D .*got 1-D"),
        (lambda a, b: (a[None], b[None]), {}, r"got 4-D"),
        (lambda a, b: (a.astype(np.float32) + 0.5, b), {}, r"pred has non-integral float values"),
        (lambda a, b: (a, b.astype(np.complex64)), {}, r"ref has non-integer dtype complex64"),
        (lambda a, b: (a.astype(str), b), {}, r"pred has non-integer dtype"),
        (lambda a, b: (np.where(a > 0, np.nan, 0.0), b), {}, r"pred contains \d+ NaN or inf"),
        (lambda a, b: (a, np.where(b > 0, np.inf, 0.0)), {}, r"ref contains \d+ NaN or inf"),
        (lambda a, b: (a * 5, b), {}, r"pred contains label value\(s\) \[5\] that are not in classes \[1\]"),
        (lambda a, b: (a, b.astype(np.int16) - 3), {}, r"ref contains label value\(s\) \[-3, -2\]"),
        (lambda a, b: (a, b), {"spacing": (1.0, 1.0)}, r"spacing has length 2 but the label maps are 3-D"),
        (lambda a, b: (a, b), {"spacing": (1.0, 0.0, 1.0)}, r"spacing values must be finite and positive"),
        (lambda a, b: (a, b), {"spacing": (1.0, -2.0, 1.0)}, r"spacing values must be finite and positive"),
        (lambda a, b: (a, b), {"spacing": "abc"}, r"spacing must be None"),
        (lambda a, b: (a, b), {"metrics": ("dice", "hausdorff")}, r"unknown metric name\(s\) \['hausdorff'\]"),
        (lambda a, b: (a, b), {"backend": "monai"}, r"unknown backend 'monai'"),
        (lambda a, b: (a, b), {"classes": ()}, r"classes is empty"),
        (lambda a, b: (a, b), {"classes": (1.5,)}, r"classes must be integer labels"),
        (lambda a, b: (a, b), {"classes": (-1,)}, r"classes must be non-negative"),
    ],
)
def test_bad_input(make, kwargs, pattern):
    a, b = _maps()
    pred, ref = make(a, b)
    kwargs = {"classes": (1,), **kwargs}
    classes = kwargs.pop("classes")
    spacing = kwargs.pop("spacing", None)
    with pytest.raises(MetricInputError, match=pattern):
        segmentation_metrics(pred, ref, classes, spacing, **kwargs)


def test_bad_input_names_case_and_allowed_labels():
    a, b = _maps()
    b[0, 0, 0] = 2
    with pytest.raises(MetricInputError, match=r"case 'patient007': ref contains label value\(s\) \[2\]"):
        segmentation_metrics(a, b, (1,), case="patient007")
    rows = segmentation_metrics(a, b, (1,), allowed_labels=(2,))
    assert set(rows) == {1} and rows[1]["dice"] == 1.0


# ----------------------------------------------------------------------------------------------------------------
# pseudo-label quality
# ----------------------------------------------------------------------------------------------------------------
def test_pseudo_label_quality_hand_example():
    pred = np.array([[1, 1, 1, 0], [0, 1, 0, 0]])
    ref = np.array([[1, 1, 0, 0], [1, 1, 1, 0]])
    # tp = 3 ((0,0),(0,1),(1,1)), fp = 1 ((0,2)), fn = 2 ((1,0),(1,2))
    q = pseudo_label_quality(pred, ref)
    assert (q["tp"], q["fp"], q["fn"]) == (3, 1, 2)
    assert q["ppv"] == pytest.approx(3 / 4) and q["tpr"] == pytest.approx(3 / 5) and q["csi"] == pytest.approx(3 / 6)
    region = np.array([[True, True, True, True], [False, False, False, False]])  # first row only
    q = pseudo_label_quality(pred, ref, region)
    assert (q["tp"], q["fp"], q["fn"]) == (2, 1, 0)
    assert q["ppv"] == pytest.approx(2 / 3) and q["tpr"] == 1.0 and q["csi"] == pytest.approx(2 / 3)
    # label maps with cls=
    q = pseudo_label_quality(pred * 2, ref * 2, cls=2)
    assert (q["tp"], q["fp"], q["fn"]) == (3, 1, 2)
    q = pseudo_label_quality(np.zeros((3, 3)), np.zeros((3, 3)))
    assert math.isnan(q["ppv"]) and math.isnan(q["tpr"]) and math.isnan(q["csi"])
    with pytest.raises(MetricInputError, match=r"pred must be a binary mask"):
        pseudo_label_quality(pred * 2, ref)
    with pytest.raises(MetricInputError, match=r"shape mismatch"):
        pseudo_label_quality(pred, ref, region[:, :2])


# ----------------------------------------------------------------------------------------------------------------
# metrics_io
# ----------------------------------------------------------------------------------------------------------------
def _save_nifti(path: Path, arr: np.ndarray, zooms) -> None:
    nib = pytest.importorskip("nibabel")
    img = nib.Nifti1Image(arr, np.diag([*zooms, 1.0]))
    img.header.set_zooms(zooms)
    nib.save(img, str(path))


def test_load_label_map_round_trips(tmp_path):
    h5py = pytest.importorskip("h5py")
    arr = np.zeros((5, 7, 9), np.uint8)
    arr[1:3, 2:5, 3:8] = 2
    _save_nifti(tmp_path / "a.nii.gz", arr, (0.8, 0.9, 4.0))
    got, sp = load_label_map(tmp_path / "a.nii.gz")
    assert np.array_equal(got, arr) and sp == pytest.approx((0.8, 0.9, 4.0))
    np.save(tmp_path / "a.npy", arr)
    got, sp = load_label_map(tmp_path / "a.npy")
    assert np.array_equal(got, arr) and sp is None
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["image"] = arr.astype(np.float32)
        f["label"] = arr
    got, sp = load_label_map(tmp_path / "a.h5")
    assert np.array_equal(got, arr) and sp is None
    with h5py.File(tmp_path / "b.h5", "w") as f:
        f["image"] = arr.astype(np.float32)
        f["mask"] = arr
    with pytest.raises(
        MetricInputError, match=r"b\.h5: HDF5 file has no dataset 'label'; available: \['image', 'mask'\]"
    ):
        load_label_map(tmp_path / "b.h5")
    with pytest.raises(MetricInputError, match=r"missing\.npy: no such file"):
        load_label_map(tmp_path / "missing.npy")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(MetricInputError, match=r"a\.txt: unknown label-map file extension"):
        load_label_map(tmp_path / "a.txt")
    (tmp_path / "bad.npy").write_text("not numpy")
    with pytest.raises(MetricInputError, match=r"bad\.npy: cannot read label map"):
        load_label_map(tmp_path / "bad.npy")


def test_score_paths_files_and_folders(tmp_path):
    rng = np.random.default_rng(3)
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    zooms = (1.5, 1.5, 6.0)
    cases = {}
    for i in range(3):
        ref = np.zeros((16, 14, 6), np.uint8)
        ref[3:10, 4:11, 1:5] = 1
        ref[5:8, 6:9, 2:4] = 2
        pred = np.roll(ref, int(rng.integers(-2, 3)), axis=0)
        _save_nifti(tmp_path / "ref" / f"case{i}.nii.gz", ref, zooms)
        _save_nifti(tmp_path / "pred" / f"case{i}.nii.gz", pred, zooms)
        cases[f"case{i}"] = (pred, ref)
    (tmp_path / "ref" / "notes.txt").write_text("ignored")
    rows = score_paths(tmp_path / "pred", tmp_path / "ref", (1, 2))
    assert [(r["case"], r["class"]) for r in rows] == [(f"case{i}", k) for i in range(3) for k in (1, 2)]
    for row in rows:
        pred, ref = cases[row["case"]]
        expected = segmentation_metrics(pred, ref, (1, 2), zooms)[row["class"]]
        assert row["spacing_unit"] == "mm"
        assert all(row[m] == expected[m] for m in METRIC_NAMES)
    # explicit spacing wins
    rows2 = score_paths(
        tmp_path / "pred" / "case0.nii.gz", tmp_path / "ref" / "case0.nii.gz", (1, 2), spacing=(1, 1, 1)
    )
    expected = segmentation_metrics(*cases["case0"], (1, 2), (1, 1, 1))[1]
    assert len(rows2) == 2 and rows2[0]["hd"] == expected["hd"] and rows2[0]["spacing_unit"] == "mm"
    # .npy: no spacing -> voxels
    np.save(tmp_path / "p.npy", cases["case1"][0])
    np.save(tmp_path / "r.npy", cases["case1"][1])
    rows3 = score_paths(tmp_path / "p.npy", tmp_path / "r.npy", (1, 2))
    assert rows3[0]["spacing_unit"] == "voxel" and rows3[0]["case"] == "r"
    assert rows3[0]["hd"] == segmentation_metrics(*cases["case1"], (1, 2))[1]["hd"]
    # extra prediction: warning; missing prediction: error listing it
    np.save(tmp_path / "pred" / "extra.npy", cases["case1"][0])
    with pytest.warns(UserWarning, match=r"1 prediction file\(s\) without a reference are ignored: extra\.npy"):
        score_paths(tmp_path / "pred", tmp_path / "ref", (1, 2))
    (tmp_path / "pred" / "case2.nii.gz").unlink()
    with pytest.raises(MetricInputError, match=r"no prediction for 1 reference file\(s\): case2\.nii\.gz"):
        score_paths(tmp_path / "pred", tmp_path / "ref", (1, 2))
    with pytest.raises(MetricInputError, match=r"both be files or both be folders"):
        score_paths(tmp_path / "p.npy", tmp_path / "ref", (1, 2))
    with pytest.raises(MetricInputError, match=r"nothere: prediction path does not exist"):
        score_paths(tmp_path / "nothere", tmp_path / "ref", (1, 2))
    np.save(tmp_path / "bad.npy", cases["case1"][0] * 3)
    with pytest.raises(MetricInputError, match=r"case 'r': pred contains label value"):
        score_paths(tmp_path / "bad.npy", tmp_path / "r.npy", (1, 2))


# ----------------------------------------------------------------------------------------------------------------
# real data (ACDC, SSL4MIS layout)
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.acdc
def test_real_acdc_volume_matches_medpy():
    root = os.environ.get("SSL_BENCH_ACDC")
    if not root:
        pytest.skip("SSL_BENCH_ACDC is not set (folder with data/<id>.h5 and test.list of the SSL4MIS ACDC copy)")
    root_path = Path(root)
    test_list = root_path / "test.list"
    if not test_list.is_file():
        pytest.skip(f"SSL_BENCH_ACDC={root} has no test.list")
    ids = [line.strip() for line in test_list.read_text().splitlines() if line.strip()]
    h5 = root_path / "data" / f"{ids[0]}.h5"
    if not h5.is_file():
        pytest.skip(f"{h5} is missing")
    ref, spacing = load_label_map(h5)
    assert spacing is None and ref.ndim == 3
    # "prediction": each class eroded in-plane, then shifted by one pixel along y
    pred = np.zeros_like(ref)
    for k in (1, 2, 3):
        eroded = ndi.binary_erosion(ref == k, structure=np.ones((1, 3, 3), bool))
        pred[eroded] = k
    pred = np.roll(pred, 1, axis=1)
    for sp in (None, (10.0, 1.5, 1.5)):
        compared = assert_matches_medpy(pred, ref, (1, 2, 3), sp, f"{ids[0]} spacing {sp}")
        assert compared == 3
