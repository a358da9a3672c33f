"""Statistics of the cells: mean ± sample std over seeds, and the paired Wilcoxon signed-rank test of a row
against its baseline row."""

from __future__ import annotations

import math
from typing import Any

from ssl_bench.reporting.tables.cells import case_values


def _mean_std(values: list[float]) -> tuple[float, float, int]:
    finite = [v for v in values if not math.isnan(v)]
    n = len(finite)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(finite) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1)) if n > 1 else math.nan
    return mean, std, n


def wilcoxon_p(
    cell_runs: list[Any], base_runs: list[Any], metric: str, cls: int | None, checkpoint: str = "selected"
) -> float | None:
    """Two-sided paired Wilcoxon signed-rank test (scipy, zero_method "wilcox") of per-case values (each case's
    value averaged over the cell's seeds) against the baseline's, both of the model ``checkpoint`` names; cases
    paired by id, NaN pairs dropped. None when there is nothing to test (no pairs, or every difference is 0)."""
    import pandas as pd
    from scipy.stats import wilcoxon

    def per_case(runs: list[Any]) -> pd.Series:
        return pd.concat([case_values(r, metric, cls, checkpoint) for r in runs], axis=1).mean(axis=1)

    if not cell_runs or not base_runs:
        return None
    both = pd.concat([per_case(cell_runs).rename("a"), per_case(base_runs).rename("b")], axis=1, join="inner")
    both = both.dropna()
    diff = both["a"] - both["b"]
    if len(both) < 1 or (diff == 0).all():
        return None
    try:
        return float(wilcoxon(both["a"].to_numpy(), both["b"].to_numpy()).pvalue)
    except ValueError:
        return None
