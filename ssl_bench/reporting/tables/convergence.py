"""How far each measured row of a table had converged: the validation curves of the runs the table uses.

For each row, every run in its cells (one per seed, as the table aggregates them) gives its validation curve
(``metrics.jsonl`` val records: foreground-mean Dice on the val split, in %). Per run: the value at 25, 50, 75 and
100 % of its training (the last validation at or before that step), its best value, and the last quarter's gain
(value at 100 % minus value at 75 %). A row shows the mean over its runs. Issue #15's criterion calls a budget
*converged* when that gain is below :data:`CONVERGED_GAIN` points. The trend names the three cases: ``rising``
(gain >= 0.5: stopped on a rising curve, its rank may change with a larger budget), ``flat`` (|gain| < 0.5) and
``falling`` (gain <= -0.5: the last quarter lost what it had, where the val-selected and the last checkpoint part).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ssl_bench.reporting.tables.cells import TableResult

FRACTIONS = (0.25, 0.5, 0.75, 1.0)
CONVERGED_GAIN = 0.5  # points of validation Dice over the last quarter of training (issue #15)


@dataclass(frozen=True)
class RowConvergence:
    """One row's validation curve summary: means over its ``n`` runs, Dice in %."""

    row_id: str
    label: str
    n: int
    steps: int  # the runs' last validated step (their training length); the largest where they differ
    at: tuple[float, ...]  # mean value at each of FRACTIONS of training
    best: float
    gain_std: float  # sample std over runs of the last quarter's gain (NaN for one run)

    @property
    def gain(self) -> float:
        """Mean gain over the last quarter: value at 100 % − value at 75 % of training."""
        return self.at[-1] - self.at[FRACTIONS.index(0.75)]

    @property
    def trend(self) -> str:
        """``rising``, ``flat`` or ``falling`` over the last quarter (threshold :data:`CONVERGED_GAIN`)."""
        if self.gain >= CONVERGED_GAIN:
            return "rising"
        return "falling" if self.gain <= -CONVERGED_GAIN else "flat"


def val_curve(run_dir) -> list[tuple[int, float]]:
    """``[(step, val Dice %)]`` of a run's validations, in step order (NaN scores kept); [] without a log or any."""
    from ssl_bench.reporting.results import load_metrics_log

    if not (Path(run_dir) / "metrics.jsonl").is_file():
        return []
    frame = load_metrics_log(run_dir, kind="val")
    if frame.empty or "val_dice_fg" not in frame:
        return []
    return sorted((int(s), 100 * float(v)) for s, v in zip(frame["step"], frame["val_dice_fg"]))


def value_at(curve: Sequence[tuple[int, float]], step: float) -> float:
    """The last validation at or before ``step`` (NaN if none was made by then)."""
    before = [v for s, v in curve if s <= step]
    return before[-1] if before else math.nan


def row_convergence(result: TableResult) -> list[RowConvergence]:
    """A :class:`RowConvergence` per measured row of ``result`` that has runs with validation curves."""
    rows = []
    for row in result.spec.rows:
        runs = {r.run_id: r for (row_id, _), cell in result.cells.items() if row_id == row.id for r in cell.runs}
        curves = [c for c in (val_curve(r.path) for r in runs.values()) if c]
        if not curves:
            continue
        per_run = [[value_at(c, f * c[-1][0]) for f in FRACTIONS] for c in curves]
        gains = [v[-1] - v[FRACTIONS.index(0.75)] for v in per_run]
        rows.append(
            RowConvergence(
                row_id=row.id,
                label=row.label,
                n=len(curves),
                steps=max(c[-1][0] for c in curves),
                at=tuple(statistics.fmean(v[i] for v in per_run) for i in range(len(FRACTIONS))),
                best=statistics.fmean(max((v for _, v in c if not math.isnan(v)), default=math.nan) for c in curves),
                gain_std=statistics.stdev(gains) if len(gains) > 1 else math.nan,
            )
        )
    return rows


def render_convergence(result: TableResult, fmt: str = "md", rows: Sequence[RowConvergence] | None = None) -> str:
    """The rows' convergence as Markdown (with a note on how to read it) or CSV (one line per row).

    ``rows``: :func:`row_convergence` of ``result`` where already computed (it reads every run's log)."""
    rows = row_convergence(result) if rows is None else rows
    heads = [f"val @{int(100 * f)} %" for f in FRACTIONS]
    if fmt == "csv":
        import pandas as pd

        frame = pd.DataFrame(
            [
                {
                    "table": result.spec.id,
                    "preset": result.preset,
                    "row": r.row_id,
                    "label": r.label,
                    "n": r.n,
                    "steps": r.steps,
                    **{f"val_at_{int(100 * f)}": round(v, 4) for f, v in zip(FRACTIONS, r.at)},
                    "best": round(r.best, 4),
                    "gain_last_quarter": round(r.gain, 4),
                    "gain_std": None if math.isnan(r.gain_std) else round(r.gain_std, 4),
                    "trend": r.trend,
                }
                for r in rows
            ]
        )
        return frame.to_csv(index=False, lineterminator="\n")
    if fmt != "md":
        from ssl_bench.core.errors import ConfigError

        raise ConfigError(f"--convergence renders md or csv, not {fmt!r}")
    lines = [
        f"### Convergence of the rows of table {result.spec.id} ({result.setting})",
        "",
        "| Method | n | steps | " + " | ".join(heads) + " | best | gain, last 25 % | trend |",
        "|---|---:|---:|" + "---:|" * len(heads) + "---:|---:|:---:|",
    ]
    for r in rows:
        spread = "" if math.isnan(r.gain_std) else f" ± {r.gain_std:.2f}"
        lines.append(
            f"| {r.label} | {r.n} | {r.steps:,} | "
            + " | ".join(f"{v:.2f}" for v in r.at)
            + f" | {r.best:.2f} | {r.gain:+.2f}{spread} | {r.trend if r.trend == 'flat' else f'**{r.trend}**'} |"
        )
    lines += [
        "",
        "Validation Dice (foreground mean, %, on the val split) of the runs the table uses, mean over their seeds: "
        "the value at 25/50/75/100 % of training (the last validation at or before that step), the best, and the "
        f"gain over the last 25 % (± its std over seeds). Trend: flat when |gain| < {CONVERGED_GAIN} points (issue "
        "#15's convergence criterion); rising: still rising when its budget ended, so its rank may change with more "
        "steps; falling: it lost ground in its last quarter (compare its val-selected and last columns).",
        "",
    ]
    return "\n".join(lines)
