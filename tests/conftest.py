"""Shared fixtures: isolated results/cache folders, the CLI runner, a few tiny configs."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Phantom cache shared across the session (generation is deterministic); results per test."""
    cache = os.environ.get("SSL_BENCH_TEST_CACHE") or str(tmp_path_factory.getbasetemp() / "cache")
    monkeypatch.setenv("SSL_BENCH_CACHE", cache)
    monkeypatch.setenv("SSL_BENCH_RESULTS", str(tmp_path_factory.mktemp("results")))


@pytest.fixture
def cli():
    """Call ``ssl-bench`` in-process; returns (exit code, stdout, stderr)."""
    from ssl_bench.cli.main import main

    def run(*args: str, capsys: pytest.CaptureFixture | None = None) -> int:
        return main([str(a) for a in args])

    return run
