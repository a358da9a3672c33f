"""Helpers shared by tests (importable as ``helpers``: pytest's pythonpath includes tests/)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
