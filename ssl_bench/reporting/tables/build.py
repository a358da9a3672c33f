"""Filling a table from finished runs: :func:`build_table` (the cells, the best value per column, and the
Wilcoxon test against the baseline row)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ssl_bench.core.registry import normalize_name
from ssl_bench.reporting.results import run_order
from ssl_bench.reporting.tables.cells import (
    Cell,
    TableResult,
    cell_selector,
    literal_expected,
    matches,
    resolve_selector,
    run_value,
    scores_folder,
    summary_of,
)
from ssl_bench.reporting.tables.spec import TableSpec, get_spec
from ssl_bench.reporting.tables.stats import _mean_std, wilcoxon_p


def build_table(
    table: str | TableSpec,
    results_dir: str | Path | Iterable[str | Path] | None = None,
    *,
    preset: str = "cpu",
    seeds: Sequence[int] | None = None,
    dataset_map: dict[str, str] | None = None,
    runs: list[Any] | None = None,
    alpha: float = 0.05,
    overrides: dict[str, Any] | None = None,
) -> TableResult:
    """Fill a table from the finished runs under ``results_dir`` (default ``results/runs`` and ``results/records``).

    Args:
        table: a spec or a table id (``"IX"``).
        preset: the preset the runs must have been made with (part of the match).
        seeds: seeds to aggregate (default the spec's).
        dataset_map: dataset substitution, e.g. ``{"acdc": "cardiac-phantom"}`` (``"*"``: every dataset).
        runs: the run records to use instead of searching ``results_dir`` (see :func:`.results.find_runs`).
        alpha: significance level of the Wilcoxon marker.
        overrides: config keys every cell's runs were made with (``ssl-bench run --set``), on top of the spec's.
    """
    from ssl_bench.reporting.results import _as_dirs, find_runs

    spec = table if isinstance(table, TableSpec) else get_spec(table)
    dirs = _as_dirs(results_dir)
    all_runs = runs if runs is not None else find_runs(dirs)
    finished = [r for r in all_runs if r.finished]
    seeds = list(seeds) if seeds else list(spec.seeds)
    result = TableResult(
        spec,
        preset,
        seeds,
        dict(dataset_map or {}),
        dirs,
        {},
        n_runs_found=len(finished),
        overrides=dict(overrides or {}),
    )
    for row in spec.rows:
        for col in spec.columns:
            paper, paper_std = row.paper.get(col.key, (None, None))
            sel = cell_selector(spec, row, col, preset, dataset_map, result.overrides)
            cell = Cell(row, col, sel, runnable=False, paper=paper, paper_std=paper_std)
            original = col.dataset or row.dataset or spec.dataset
            if sel is not None and sel.dataset != normalize_name(original):
                cell.paper_dataset = original
            if sel is None:
                cell.reason = (
                    f"reference row: published numbers ({row.source}), nothing to run"
                    if row.source
                    else "paper only: results cited by the paper, no implementation"
                )
            else:
                expected, reason = resolve_selector(sel)
                cell.runnable, cell.reason = expected is not None, reason
                matched = [r for r in finished if matches(r, expected or literal_expected(sel))]
                for seed in seeds:
                    of_seed = sorted(
                        (r for r in matched if r.get("seed") == seed), key=run_order
                    )  # newest finished wins
                    if of_seed:
                        scored = scores_folder(of_seed[-1], col.checkpoint) is not None
                        (cell.runs if scored else cell.unscored).append(of_seed[-1])
                        cell.duplicates += len(of_seed) - 1
                cell.values = [col.scale * run_value(r, col.metric, col.cls, col.checkpoint) for r in cell.runs]
                cell.mean, cell.std, cell.n = _mean_std(cell.values)
                for r in cell.runs:
                    units = summary_of(r, col.checkpoint).get("distance_units") or {}
                    if col.is_distance and col.metric in units:
                        result.distance_units.setdefault(col.key, set()).add(units[col.metric])
            result.cells[(row.id, col.key)] = cell
    # best per column, Wilcoxon against the baseline row
    for col in spec.columns:
        column = [result.cells[(r.id, col.key)] for r in spec.rows]
        measured = [c for c in column if c.measured]
        means = [c.mean for c in measured]
        if len(measured) >= 2 and max(means) - min(means) >= 5e-3:  # no bold when all are equal
            best = max(means) if col.higher_is_better else min(means)
            for c in measured:
                c.best = math.isclose(c.mean, best, rel_tol=0, abs_tol=5e-3)  # equal at the 2 printed decimals
        for c in measured:
            base_id = spec.baseline_of(c.row)
            if base_id is None or base_id == c.row.id:
                continue
            base = result.cells[(base_id, col.key)]
            if not base.measured:
                continue
            c.p_value = wilcoxon_p(c.runs, base.runs, col.metric, col.cls, col.checkpoint)
            c.significant = c.p_value is not None and c.p_value < alpha
    return result
