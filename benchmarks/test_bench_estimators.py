"""Time of an estimator comparison (``ssl-bench estimators compare``) on ACDC val at the ``cpu`` preset's size.

Run: ``SSL_BENCH_ACDC=/data/acdc_ssl4mis pytest benchmarks/test_bench_estimators.py -s``
(``SSL_BENCH_BENCH_THREADS`` sets torch's threads, default torch's choice; skipped without ``SSL_BENCH_ACDC``).

What is timed is what the command does after loading the model: the 20 val volumes' slices at the training size
(``dataset.image_size`` of ``--dataset acdc --preset cpu``, 128 x 128) through the 7 built-in estimators
(crm, softmax-threshold, entropy, mc-dropout, tta, aleatoric, none) and the ``margin`` plugin, each with its
statistics accumulated, on the ``estimator-reference`` network of that preset (freshly initialised: the number of
passes, not the weights, sets the cost). Reported: the total wall time (goal <= 5 minutes, issue #16; reported,
not asserted) and the process CPU time (what the wall time is on a free core with one thread), per estimator
the passes and ms per slice and the ratio to one deterministic pass (softmax-threshold, measured in the same run),
and what batching MC dropout's passes gives (``per_forward`` 10 against 1, on the same 32 slices, interleaved).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

GOAL_S = 300.0
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setting():
    root = os.environ.get("SSL_BENCH_ACDC")
    if not root or not Path(root).is_dir():
        pytest.skip("needs real ACDC: set SSL_BENCH_ACDC")
    if os.environ.get("SSL_BENCH_BENCH_THREADS"):
        torch.set_num_threads(int(os.environ["SSL_BENCH_BENCH_THREADS"]))
    from ssl_bench.core.registry import load_plugin_file
    from ssl_bench.reporting.estimator_compare import comparison_slices
    from ssl_bench.training.runner import build_adapter, build_method, resolve_config

    load_plugin_file(ROOT / "examples" / "margin_estimator.py")
    cfg = resolve_config("estimator-reference", "acdc", preset="cpu", labeled=7, data_root=root)
    adapter = build_adapter(cfg)
    net = build_method(cfg, adapter).inference_module().eval()
    t0 = time.perf_counter()
    images, labels, cases = comparison_slices(cfg, adapter, "val")
    return cfg, net, images, labels, cases, time.perf_counter() - t0


def test_comparison_time(setting):
    from ssl_bench.core.uncertainty import build_estimator
    from ssl_bench.reporting.estimator_compare import (
        DEFAULT_ESTIMATORS,
        IMAGES_PER_FORWARD,
        EstimatorRequest,
        batched_options,
        score_estimator,
    )

    cfg, net, images, labels, cases, data_s = setting
    names = [*DEFAULT_ESTIMATORS, "margin"]
    k = net.num_classes
    rows, total, cpu0 = [], 0.0, time.process_time()
    for name in names:  # options as `estimators compare` sets them (batch 16, passes batched to 16 images on a CPU)
        options = batched_options(EstimatorRequest(name), 16, IMAGES_PER_FORWARD["cpu"])
        t0 = time.perf_counter()
        _, cost = score_estimator(build_estimator(name, options, k), net, images, labels, batch_size=16)
        wall = time.perf_counter() - t0
        total += wall
        rows.append((name, cost, wall))
    cpu = time.process_time() - cpu0
    single = next(c for n, c, _ in rows if n == "softmax-threshold")["ms_per_slice"]
    size = "x".join(map(str, cfg.dataset.image_size))
    print(f"\nACDC val: {len(cases)} volumes, {len(images)} slices at {size}; threads {torch.get_num_threads()}")
    print(f"{'estimator':<18} {'passes':>6} {'ms/slice':>9} {'x 1 pass':>9} {'wall s':>7}")
    for name, cost, wall in rows:
        print(
            f"{name:<18} {cost['passes_per_slice']:>6.0f} {cost['ms_per_slice']:>9.1f} "
            f"{cost['ms_per_slice'] / single:>9.1f} {wall:>7.1f}"
        )
    verdict = "met" if total + data_s <= GOAL_S else "MISSED"
    print(
        f"total {total + data_s:.1f} s (estimators + statistics {total:.1f} s, slices {data_s:.1f} s); "
        f"goal <= 300 s: {verdict}"
    )
    # on a loaded machine the wall time includes waiting for a core; the process's CPU time does not
    print(f"process CPU time of the estimators: {cpu:.1f} s ({cpu / max(total, 1e-9):.2f} of the wall time)")
    assert len(rows) == 8


def test_mc_dropout_batching_and_shared_encoder(setting):
    """MC dropout's 50 passes on 16 slices: the compare default (encoder once, 1 pass per forward on a CPU) against
    full passes and against 10 passes per forward (160 images), interleaved rounds, process CPU time per slice."""
    from ssl_bench.core.uncertainty import build_estimator
    from ssl_bench.reporting.estimator_compare import score_estimator

    _, net, images, labels, _, _ = setting
    x, y = images[:16], labels[:16]
    k = net.num_classes
    variants = {
        "shared encoder, per_forward 1 (default)": {"per_forward": 1},
        "full passes, per_forward 1": {"per_forward": 1, "share_encoder": False},
        "shared encoder, per_forward 10": {"per_forward": 10},
    }
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(2):  # interleaved rounds: drifting load hits all alike
        for label, options in variants.items():
            est = build_estimator("mc-dropout", options, k)
            t0 = time.process_time()
            score_estimator(est, net, x, y, batch_size=16)
            times[label].append(1000 * (time.process_time() - t0) / len(x))
    base = min(times["shared encoder, per_forward 1 (default)"])
    print("\nmc-dropout, 50 passes, 16 slices (process CPU ms per slice):")
    for label, values in times.items():
        print(f"  {label:<40} {min(values):>8.1f}  ({min(values) / base:.2f}x the default)")
    assert base > 0
