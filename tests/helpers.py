"""Helpers shared by tests (importable as ``helpers``: pytest's pythonpath includes tests/)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def run_cli_subprocess(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m ssl_bench ARGS`` in a fresh process (for kill/resume and traceback-free errors)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "ssl_bench", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


ACDC_ROOT = os.environ.get("SSL_BENCH_ACDC")


def acdc_root() -> Path:
    """Real ACDC (SSL4MIS layout) or skip."""
    if not ACDC_ROOT or not Path(ACDC_ROOT).is_dir():
        pytest.skip("real ACDC data not available: set SSL_BENCH_ACDC to the SSL4MIS ACDC folder")
    return Path(ACDC_ROOT).resolve()  # absolute: tests symlink into it from tmp folders


def scatter_false_positives(
    pred: np.ndarray, fraction: float, classes: tuple[int, ...], rng: np.random.Generator
) -> np.ndarray:
    """A copy of label map ``pred`` with ``fraction`` of all voxels (picked among its background voxels) set to
    random labels from ``classes``: the salt noise of an under-trained network. Shape and dtype are kept.
    """
    out = pred.copy()
    background = np.flatnonzero(out.reshape(-1) == 0)
    n = min(background.size, round(fraction * out.size))
    picked = rng.choice(background, n, replace=False)
    out.reshape(-1)[picked] = rng.choice(np.asarray(classes, dtype=out.dtype), n)
    return out
