"""Estimator comparison records -> aggregated table (md/tex/csv) and figures (PNG + PDF).

Records (from :func:`.estimator_compare.compare_run`, one per reference model and split) are aggregated like the
method tables: per estimator and metric, the mean ± sample std over the records (seeds), n = records. Rows are
ranked by AURC of all pixels (lower is better), so the table doubles as an estimator leaderboard. Records of
different datasets, splits or image sizes are never mixed (:func:`load_records` refuses).

Figures share one legend and the Okabe-Ito colour-blind-safe palette:
``risk-coverage`` (a panel per pixel group; the dashed grey line is the optimal ranking), ``reliability`` (accuracy
against top-class probability, all pixels) and ``pl-quality`` (PPV/TPR/CSI of the pseudo-label in the certain
region per class, CoraNet Fig. 3's quantities).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ssl_bench.core.errors import ConfigError
from ssl_bench.core.io import atomic_write_text, read_json

#: Okabe & Ito (2008), colour-blind safe; black last
PALETTE = ("#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442", "#000000")
LINESTYLES = ("-", "--", "-.", ":")
FORMATS = ("md", "tex", "csv")
#: (column header, group, metric key, scale, decimals, lower is better)
OVERALL_COLUMNS = (
    ("certain %", "all", "certain_fraction", 100, 1, None),
    ("AUROC", "all", "auroc", 1, 3, False),
    ("AUPRC", "all", "auprc", 1, 3, False),
    ("AURC ×1000", "all", "aurc", 1000, 2, True),
    ("E-AURC ×1000", "all", "e_aurc", 1000, 2, True),
    ("ECE %", "all", "ece", 100, 2, True),
)
CLASS_METRICS = (("PPV", "ppv"), ("TPR", "tpr"), ("CSI", "csi"))


def load_records(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Read record files (or every ``*.json`` record under folders); one dataset/split/size only."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(p.rglob("*.json"))
        elif p.is_file():
            files.append(p)
        else:
            raise ConfigError(f"no estimator comparison record at {p}")
    records = [
        r for r in (read_json(f) for f in files) if isinstance(r, dict) and r.get("kind") == "estimator-comparison"
    ]
    if not records:
        raise ConfigError(f"no estimator comparison records in {', '.join(map(str, paths))}")
    keys = {(r["run"]["dataset"], r["split"], tuple(r["run"]["image_size"])) for r in records}
    if len(keys) > 1:
        raise ConfigError(f"records of different settings (dataset, split, size) cannot be aggregated: {sorted(keys)}")
    return records


def _stat(values: list[float]) -> tuple[float, float, int]:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return math.nan, math.nan, 0
    return float(np.mean(vals)), (float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan), len(vals)


def estimator_names(records: Sequence[dict[str, Any]]) -> list[str]:
    """Estimators in the records, ranked by mean AURC of all pixels (NaN last)."""
    names: list[str] = []
    for r in records:
        names += [n for n in r["estimators"] if n not in names]

    def key(n: str) -> float:
        m = _stat([r["estimators"][n]["metrics"]["all"]["aurc"] for r in records if n in r["estimators"]])[0]
        return math.inf if math.isnan(m) else m

    return sorted(names, key=key)


def tidy(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per estimator, group and metric: mean, std, n (the CSV)."""
    rows = []
    for name in estimator_names(records):
        runs = [r["estimators"][name] for r in records if name in r["estimators"]]
        groups = [g for g in runs[0]["metrics"] if isinstance(runs[0]["metrics"][g], dict)]
        for g in groups:
            sample = runs[0]["metrics"][g]
            if g.startswith("class_"):
                items = [(f"{region}/{m}", (region, m)) for region in sample for m in sample[region]]
            else:
                items = [(m, (m,)) for m in sample]
            for metric, path in items:
                vals = []
                for run in runs:
                    v: Any = run["metrics"][g]
                    for part in path:
                        v = v[part]
                    vals.append(v)
                mean, std, n = _stat(vals)
                rows.append({"estimator": name, "group": g, "metric": metric, "mean": mean, "std": std, "n": n})
        for metric in ("passes_per_slice", "ms_per_slice"):
            mean, std, n = _stat([run["cost"][metric] for run in runs])
            rows.append({"estimator": name, "group": "cost", "metric": metric, "mean": mean, "std": std, "n": n})
    return rows


def _cell(mean: float, std: float, scale: float, decimals: int) -> str:
    if math.isnan(mean):
        return "–"
    text = f"{mean * scale:.{decimals}f}"
    return text if math.isnan(std) else f"{text} ± {std * scale:.{decimals}f}"


def _table_rows(records: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    names = records[0]["label_names"]
    index = {(r["estimator"], r["group"], r["metric"]): r for r in tidy(records)}
    header = ["estimator", *(c[0] for c in OVERALL_COLUMNS)]
    for k in range(1, len(names)):
        header += [f"{names[k]} {label} (certain) %" for label, _ in CLASS_METRICS]
    header += ["passes/slice", "ms/slice", "n"]
    rows = []
    for est in estimator_names(records):
        line = [est]
        for _, group, metric, scale, dec, _ in OVERALL_COLUMNS:
            r = index[(est, group, metric)]
            line.append(_cell(r["mean"], r["std"], scale, dec))
        for k in range(1, len(names)):
            for _, m in CLASS_METRICS:
                r = index[(est, f"class_{k}", f"certain/{m}")]
                line.append(_cell(r["mean"], r["std"], 100, 1))
        for metric, dec in (("passes_per_slice", 0), ("ms_per_slice", 1)):
            r = index[(est, "cost", metric)]
            line.append(_cell(r["mean"], math.nan, 1, dec))
        line.append(str(index[(est, "all", "auroc")]["n"]))
        rows.append(line)
    return header, rows


def setting_line(records: Sequence[dict[str, Any]]) -> str:
    r0 = records[0]
    run = r0["run"]
    size = "x".join(map(str, run["image_size"]))
    seeds = sorted({r["run"]["seed"] for r in records})
    return (
        f"{run['dataset']}, {r0['split']} split ({r0['n_slices']} slices at {size}), reference method "
        f"{run['method']}, preset {run['preset']}, seeds {seeds} (n = {len(records)} model(s))"
    )


NOTE = (
    "Pixel error = pseudo-label (arg-max) ≠ label. AUROC/AUPRC: the score as a detector of errors; AURC: area under "
    "the risk-coverage curve (selective risk, most certain pixels first); E-AURC = AURC − the optimal ranking's; "
    "ECE: 15 equal-width bins of the top-class probability; PPV/TPR/CSI of the pseudo-label inside the certain "
    "region. Mean ± std over reference models; rows ranked by AURC."
)


def render_table(records: Sequence[dict[str, Any]], fmt: str = "md") -> str:
    """The comparison table in ``fmt`` (md, tex, csv)."""
    if fmt == "csv":
        import pandas as pd

        return pd.DataFrame(tidy(records)).to_csv(index=False, lineterminator="\n")
    header, rows = _table_rows(records)
    if fmt == "md":
        lines = [f"Estimator comparison: {setting_line(records)}", ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join([*lines, "", NOTE, ""])
    if fmt == "tex":
        from ssl_bench.reporting.tables import tex_escape

        lines = [
            "\\begin{table}[t]",
            "\\centering\\small",
            f"\\caption{{Uncertainty estimators on one network: {tex_escape(setting_line(records))}}}",
            "\\begin{tabular}{l" + "r" * (len(header) - 1) + "}",
            "\\toprule",
            " & ".join(tex_escape(h) for h in header) + " \\\\",
            "\\midrule",
            *(" & ".join(tex_escape(c) for c in r) + " \\\\" for r in rows),
            "\\bottomrule",
            "\\end{tabular}",
            f"\\par\\footnotesize {tex_escape(NOTE)}",
            "\\end{table}",
            "",
        ]
        return "\n".join(lines)
    raise ConfigError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


def write_tables(records: Sequence[dict[str, Any]], stem: Path) -> list[Path]:
    """``<stem>.md``, ``.tex`` and ``.csv`` (atomic)."""
    out = []
    for fmt in FORMATS:
        path = stem.with_name(f"{stem.name}.{fmt}")
        atomic_write_text(path, render_table(records, fmt))
        out.append(path)
    return out


# -- figures --------------------------------------------------------------------------------------------------------


def _style(i: int) -> dict[str, Any]:
    return {"color": PALETTE[i % len(PALETTE)], "linestyle": LINESTYLES[(i // len(PALETTE)) % len(LINESTYLES)]}


def _group_title(group: str, names: Sequence[str]) -> str:
    return "all pixels" if group == "all" else f"predicted {names[int(group.split('_')[1])]}"


def _mean_curve(curves: list[tuple[list[float], list[float]]]) -> tuple[np.ndarray, np.ndarray]:
    curves = [c for c in curves if c[0]]
    if not curves:
        return np.zeros(0), np.zeros(0)
    return np.asarray(curves[0][0]), np.mean([np.asarray(c[1]) for c in curves], axis=0)


def _figure(ncols: int, width: float = 3.6, height: float = 3.2) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height + 0.8), layout="constrained")
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _legend(fig: Any, axes: Sequence[Any]) -> None:
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    ncols = max(1, min(len(labels), 5, int(fig.get_figwidth() // 1.9)))  # as many columns as fit the width
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize="small", frameon=False)


def fig_risk_coverage(records: Sequence[dict[str, Any]]) -> Any:
    """Risk-coverage curves (mean over records), a panel per pixel group, the optimal ranking dashed."""
    names = records[0]["label_names"]
    groups = list(records[0]["estimators"][next(iter(records[0]["estimators"]))]["curves"])
    fig, axes = _figure(len(groups))
    for ax, g in zip(axes, groups):
        errors = []
        for i, est in enumerate(estimator_names(records)):
            runs = [r["estimators"][est] for r in records if est in r["estimators"]]
            cov, risk = _mean_curve([(run["curves"][g]["coverage"], run["curves"][g]["risk"]) for run in runs])
            errors += [run["metrics"][g]["error_rate"] for run in runs]
            if cov.size:
                ax.plot(cov, risk, label=est, linewidth=1.6, **_style(i))
        rate = _stat(errors)[0]
        if not math.isnan(rate):
            c = np.linspace(1e-3, 1, 400)
            ax.plot(c, np.clip((c - (1 - rate)) / c, 0, None), color="0.5", linestyle="--", label="optimal ranking")
        ax.set(xlabel="coverage (fraction of pixels kept)", title=_group_title(g, names), xlim=(0, 1))
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("selective risk (error rate of kept pixels)")
    _legend(fig, axes)
    return fig


def _bin_mean(per_run: list[list[float | None]]) -> np.ndarray:
    """Mean over runs per reliability bin, ignoring runs whose bin is empty (None); NaN where all are."""
    values = np.array([[np.nan if v is None else v for v in run] for run in per_run], dtype=np.float64)
    seen = ~np.isnan(values)
    total = np.where(seen, values, 0.0).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(seen.any(0), total / seen.sum(0), np.nan)


def fig_reliability(records: Sequence[dict[str, Any]]) -> Any:
    """Reliability diagram of all pixels: accuracy against mean top-class probability per bin, per estimator."""
    fig, axes = _figure(1, width=5.4)
    ax = axes[0]
    ax.plot([0, 1], [0, 1], color="0.5", linestyle="--", label="perfect calibration")
    for i, est in enumerate(estimator_names(records)):
        runs = [r["estimators"][est] for r in records if est in r["estimators"]]
        conf, acc = (
            _bin_mean([run["curves"]["all"]["reliability"][key] for run in runs]) for key in ("confidence", "accuracy")
        )
        keep = ~(np.isnan(conf) | np.isnan(acc))
        ax.plot(conf[keep], acc[keep], marker="o", markersize=3, label=est, linewidth=1.4, **_style(i))
    ax.set(
        xlabel="top-class probability", ylabel="accuracy", title="reliability (all pixels)", xlim=(0, 1), ylim=(0, 1)
    )
    ax.grid(alpha=0.3)
    _legend(fig, [ax])
    return fig


def fig_pl_quality(records: Sequence[dict[str, Any]]) -> Any:
    """PPV / TPR / CSI of the pseudo-label inside the certain region, bars per estimator, a panel per class."""
    names = records[0]["label_names"]
    ests = estimator_names(records)
    fig, axes = _figure(len(names) - 1)
    width = 0.8 / max(1, len(ests))
    for ax, k in zip(axes, range(1, len(names))):
        for i, est in enumerate(ests):
            runs = [r["estimators"][est] for r in records if est in r["estimators"]]
            stats = [_stat([run["metrics"][f"class_{k}"]["certain"][m] for run in runs]) for _, m in CLASS_METRICS]
            x = np.arange(len(CLASS_METRICS)) - 0.4 + width * (i + 0.5)
            err = None if all(math.isnan(s[1]) for s in stats) else [0 if math.isnan(s[1]) else s[1] for s in stats]
            ax.bar(x, [s[0] for s in stats], width, yerr=err, label=est, color=PALETTE[i % len(PALETTE)], capsize=2)
        ax.set_xticks(range(len(CLASS_METRICS)), [label for label, _ in CLASS_METRICS])
        ax.set(ylim=(0, 1), title=f"{names[k]} (certain pixels)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("pseudo-label quality")
    _legend(fig, axes)
    return fig


FIGURES = {"risk-coverage": fig_risk_coverage, "reliability": fig_reliability, "pl-quality": fig_pl_quality}


def write_figures(records: Sequence[dict[str, Any]], stem: Path) -> list[Path]:
    """Every figure of :data:`FIGURES` as ``<stem>-<kind>.png`` and ``.pdf``."""
    from ssl_bench.reporting.figures import save_figure

    out: list[Path] = []
    for kind, make in FIGURES.items():
        out += save_figure(make(records), stem.with_name(f"{stem.name}-{kind}"))
    return out
