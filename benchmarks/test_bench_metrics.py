"""Speed of ssl_bench.evaluation.metrics against medpy.metric.binary on realistic volume sizes.

Run: ``pytest benchmarks/test_bench_metrics.py --benchmark-only -s``

Four synthetic cases (fixed seeds): an ACDC-size cine-MR volume (10 x 256 x 216, labels 0..3, heart in a small
central region) and a CT-size volume (100 x 192 x 240, binary, one small organ), each clean (a few false-positive
islands) and noisy (``_fp0.2%``: 0.2 % of all voxels turned into scattered false positives, the salt noise of an
under-trained network; the bounding box of every class is then the whole volume). For each, the eight metrics
are computed by medpy (one call per metric and class, as users of medpy do) and by ssl-bench; the values must
agree to 1e-6 and the speed-up (best medpy round / best ssl-bench round) is printed and stored in ``extra_info``.
There are no wall-clock assertions.

Before/after in one run: ``SSL_BENCH_METRICS_BASELINE=/path/to/other/checkout/ssl_bench/evaluation/metrics.py``
also times that file's ``segmentation_metrics`` (loaded as a standalone module; its ``ssl_bench`` imports resolve
to this checkout) and prints its speed-up beside ours.
"""

from __future__ import annotations

import importlib.util
import math
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from helpers import scatter_false_positives  # tests/helpers.py (pytest's pythonpath includes tests/)
from scipy import ndimage as ndi

from ssl_bench.evaluation.metrics import METRIC_NAMES, segmentation_metrics

MEDPY_ROUNDS = 3
FAST_ROUNDS = 20
_RESULTS: dict[tuple[str, str], tuple[float, dict]] = {}  # (case, backend) -> (best seconds, metrics)


def _ellipsoid(shape: tuple[int, ...], center, radii) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, center, radii, strict=True)) <= 1.0


def _perturb(mask: np.ndarray, rng: np.random.Generator, sigma: tuple[float, ...], amount: float) -> np.ndarray:
    """A plausible prediction of ``mask``: its boundary moved in and out by smooth noise of about ``amount`` voxels.

    The signed distance to the boundary plus low-frequency noise is thresholded, so the changes stay within a few
    voxels of the object (no spurious predictions all over the volume).
    """
    signed = ndi.distance_transform_edt(~mask) - ndi.distance_transform_edt(mask)
    noise = ndi.gaussian_filter(rng.standard_normal(mask.shape), sigma=sigma)
    noise *= amount / (noise.std() + 1e-12)
    return signed + noise < 0


def acdc_like(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(pred, ref) uint8 label maps of shape (10, 256, 216): 1 RV, 2 myocardium, 3 LV, in a ~90 px central region."""
    rng = np.random.default_rng(seed)
    shape = (10, 256, 216)
    ref = np.zeros(shape, np.uint8)
    for z in range(1, 9):  # base to apex: the heart shrinks
        s = 1.0 - 0.06 * abs(z - 3)
        sl = (slice(z, z + 1), slice(None), slice(None))
        plane = (1, *shape[1:])
        epi = _ellipsoid(plane, (0, 130, 112), (1, 30 * s, 28 * s))
        endo = _ellipsoid(plane, (0, 130, 114), (1, 21 * s, 19 * s))
        rv = _ellipsoid(plane, (0, 128, 78), (1, 34 * s, 18 * s)) & ~_ellipsoid(plane, (0, 130, 112), (1, 33, 31))
        ref[sl][rv] = 1
        ref[sl][epi] = 2
        ref[sl][endo] = 3
    pred = np.zeros_like(ref)
    for k in (1, 2, 3):  # later classes overwrite earlier ones, as an argmax would
        pred[_perturb(ref == k, rng, (0.5, 6, 6), 1.5)] = k
    pred[4, 60:64, 150:155] = 1  # a small false-positive island far from the heart
    return pred, ref


def ct_like(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(pred, ref) uint8 binary maps of shape (100, 192, 240) with one lobulated organ of ~40 x 45 x 60 voxels."""
    rng = np.random.default_rng(seed)
    shape = (100, 192, 240)
    ref = _ellipsoid(shape, (50, 100, 130), (18, 20, 26)) | _ellipsoid(shape, (58, 110, 100), (10, 12, 18))
    ref = _perturb(ref, rng, (4, 8, 8), 2.0)
    pred = _perturb(ref, rng, (3, 5, 5), 1.5)
    pred[30:33, 60:64, 180:185] = True  # false-positive island
    return pred.astype(np.uint8), ref.astype(np.uint8)


NOISE_FRACTION = 0.002  # scattered false positives: 0.2 % of all voxels


def noisy(make: Callable[[], tuple[np.ndarray, np.ndarray]], classes: tuple[int, ...]) -> Callable[[], tuple]:
    """The case ``make`` with :data:`NOISE_FRACTION` of the prediction's voxels set to random classes."""

    def make_noisy() -> tuple[np.ndarray, np.ndarray]:
        pred, ref = make()
        return scatter_false_positives(pred, NOISE_FRACTION, classes, np.random.default_rng(1)), ref

    return make_noisy


CASES: dict[str, tuple[Callable[[], tuple[np.ndarray, np.ndarray]], tuple[int, ...], tuple[float, ...]]] = {
    "acdc_10x256x216_4cls": (acdc_like, (1, 2, 3), (10.0, 1.5, 1.5)),
    "ct_100x192x240_binary": (ct_like, (1,), (2.5, 0.8, 0.8)),
    "acdc_10x256x216_4cls_fp0.2%": (noisy(acdc_like, (1, 2, 3)), (1, 2, 3), (10.0, 1.5, 1.5)),
    "ct_100x192x240_binary_fp0.2%": (noisy(ct_like, (1,)), (1,), (2.5, 0.8, 0.8)),
}
BASELINE_PATH = os.environ.get("SSL_BENCH_METRICS_BASELINE")


@pytest.fixture(scope="module")
def volumes() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {name: make() for name, (make, _, _) in CASES.items()}


def _best_time(benchmark: Any, fallback: Callable[[], Any]) -> float:
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    if stats is not None and getattr(stats, "min", None):
        return float(stats.min)
    t0 = time.perf_counter()
    fallback()
    return time.perf_counter() - t0


def _baseline_function() -> Callable[..., dict]:
    """``segmentation_metrics`` of the file named by ``SSL_BENCH_METRICS_BASELINE`` (or skip)."""
    if not BASELINE_PATH:
        pytest.skip("set SSL_BENCH_METRICS_BASELINE to another checkout's ssl_bench/evaluation/metrics.py")
    spec = importlib.util.spec_from_file_location("baseline_metrics", BASELINE_PATH)
    if spec is None or spec.loader is None:
        pytest.fail(f"SSL_BENCH_METRICS_BASELINE={BASELINE_PATH} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.segmentation_metrics


def _run(benchmark: Any, volumes: dict, name: str, backend: str, rounds: int) -> tuple[float, dict]:
    _, classes, spacing = CASES[name]
    pred, ref = volumes[name]
    if backend == "baseline":
        baseline = _baseline_function()

        def compute() -> dict:
            return baseline(pred, ref, classes, spacing)
    else:

        def compute() -> dict:
            return segmentation_metrics(pred, ref, classes, spacing, backend=backend)

    benchmark.group = name
    benchmark.extra_info.update({"backend": backend, "shape": list(pred.shape), "classes": list(classes)})
    result = benchmark.pedantic(compute, rounds=rounds, iterations=1, warmup_rounds=0 if backend == "medpy" else 1)
    best = _best_time(benchmark, compute)
    _RESULTS[(name, backend)] = (best, result)
    return best, result


@pytest.mark.parametrize("name", list(CASES))
def test_bench_medpy(benchmark, volumes, name):
    best, result = _run(benchmark, volumes, name, "medpy", MEDPY_ROUNDS)
    assert all(row["empty"] == "none" for row in result.values())
    print(f"\n[{name}] medpy: best of {MEDPY_ROUNDS} rounds {best * 1e3:.1f} ms")


def _medpy_result(volumes: dict, name: str) -> tuple[float, dict]:
    if (name, "medpy") not in _RESULTS:  # medpy test deselected: time it once here
        _, classes, spacing = CASES[name]
        t0 = time.perf_counter()
        ref_result = segmentation_metrics(*volumes[name], classes, spacing, backend="medpy")
        _RESULTS[(name, "medpy")] = (time.perf_counter() - t0, ref_result)
    return _RESULTS[(name, "medpy")]


def _check_and_report(benchmark: Any, volumes: dict, name: str, label: str, best: float, result: dict) -> None:
    """Asserts ``result`` equals medpy's to 1e-6 and prints / stores the speed-up against medpy."""
    medpy_best, medpy_result = _medpy_result(volumes, name)
    for k, row in result.items():
        for m in METRIC_NAMES:
            a, b = row[m], medpy_result[k][m]
            assert math.isclose(a, b, rel_tol=0, abs_tol=1e-6), f"{name} class {k} {m}: {label} {a} medpy {b}"
    speedup = medpy_best / best
    benchmark.extra_info["speedup_vs_medpy"] = round(speedup, 2)
    benchmark.extra_info["medpy_best_s"] = medpy_best
    print(
        f"\n[{name}] {label}: best of {FAST_ROUNDS} rounds {best * 1e3:.1f} ms; medpy {medpy_best * 1e3:.1f} ms; "
        f"speed-up x{speedup:.1f}"
    )


@pytest.mark.parametrize("name", list(CASES))
def test_bench_baseline(benchmark, volumes, name):
    best, result = _run(benchmark, volumes, name, "baseline", FAST_ROUNDS)
    _check_and_report(benchmark, volumes, name, f"baseline ({BASELINE_PATH})", best, result)


@pytest.mark.parametrize("name", list(CASES))
def test_bench_ssl_bench(benchmark, volumes, name):
    best, result = _run(benchmark, volumes, name, "ssl-bench", FAST_ROUNDS)
    _check_and_report(benchmark, volumes, name, "ssl-bench", best, result)
    if (name, "baseline") in _RESULTS:
        baseline_best = _RESULTS[(name, "baseline")][0]
        benchmark.extra_info["speedup_vs_baseline"] = round(baseline_best / best, 2)
        print(f"[{name}] ssl-bench vs baseline: x{baseline_best / best:.1f}")
