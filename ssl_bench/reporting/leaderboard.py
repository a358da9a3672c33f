"""``ssl-bench leaderboard``: every setting found in the results, ranked, with cost and provenance.

A *setting* is (dataset, labelled budget, preset, method, estimator, alpha, backbone, variant), where the variant
lists the config keys in which the runs differ from what that preset resolves to today (``--set`` overrides, or a
preset changed since: see :func:`.tables.variant_of`); its runs over seeds are aggregated like a table
cell: per run the foreground mean over test cases of the metric (from ``per_case.csv``), then mean ± sample std over
runs. Settings are ranked within (dataset, labelled budget, preset).

Each seed counts once: repeated runs of one setting and seed are resolved as ``ssl-bench table`` resolves them, the
newest finished run wins (:func:`.results.run_order`); the others are counted in ``duplicates``. Incomplete or
unreadable runs are never read (:func:`.results.skipped_runs` lists them).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from ssl_bench.reporting.results import find_runs, run_order, values_equal
from ssl_bench.reporting.tables import OVERLAP, run_value, variant_of

GROUP_KEYS = ("dataset", "labeled", "preset", "method", "estimator", "alpha", "backbone", "variant")


def leaderboard(
    results_dir: str | Path | Iterable[str | Path] | None = None,
    *,
    dataset: str | None = None,
    labeled: float | None = None,
    preset: str | None = None,
    metric: str = "dice",
) -> pd.DataFrame:
    """One row per setting with finished runs: ``rank, dataset, labeled, preset, method, estimator, alpha,
    backbone, variant`` ("" = the plain preset, "?" = not resolvable here), ``mean, std, n_runs`` (seeds, each
    counted once), ``duplicates`` (older repeated runs of a seed, not counted), ``seeds,
    train_s`` (mean over runs), ``test_eval_s, params_train, params_inference, settings`` (distinct config hashes
    without seed: > 1 means the runs differ in an option the variant cannot see), ``run_ids, config_hashes,
    git_shas``. Overlap metrics in %."""
    runs = sorted(find_runs(results_dir, status="finished"), key=run_order)  # the newest run of a seed last
    rows = []
    for run in runs:
        f = run.fields
        if dataset is not None and not values_equal(f["dataset"], dataset):
            continue
        if labeled is not None and not values_equal(f["labeled"], labeled):
            continue
        if preset is not None and f["preset"] != preset:
            continue
        timings = run.manifest.get("timings") or {}
        params = run.manifest.get("parameters") or {}
        scale = 100.0 if metric in OVERLAP else 1.0
        variant = variant_of(run)
        rows.append(
            {
                **{k: f[k] for k in GROUP_KEYS if k != "variant"},
                "variant": "?" if variant is None else variant,
                "seed": f["seed"],
                "value": scale * run_value(run, metric, None),
                "train_s": timings.get("train_s"),
                "test_eval_s": timings.get("test_eval_s"),
                "params_train": params.get("train"),
                "params_inference": params.get("inference"),
                "setting": run.setting,
                "run_id": run.run_id,
                "config_hash": run.manifest.get("config_hash"),
                "git_sha": ((run.manifest.get("git") or {}).get("sha") or "")[:7],
            }
        )
    columns = [
        "rank",
        *GROUP_KEYS,
        "mean",
        "std",
        "n_runs",
        "duplicates",
        "seeds",
        "train_s",
        "test_eval_s",
        "params_train",
        "params_inference",
        "settings",
        "run_ids",
        "config_hashes",
        "git_shas",
    ]
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(rows)
    for key in ("estimator", "alpha", "backbone"):
        frame[key] = frame[key].astype(object).where(frame[key].notna(), "—")
    n_all = frame.groupby(list(GROUP_KEYS), dropna=False, sort=False)["run_id"].transform("size")
    frame = frame.assign(_all=n_all).drop_duplicates([*GROUP_KEYS, "seed"], keep="last")  # one run per seed

    def agg(group: pd.DataFrame) -> pd.Series:
        values = group["value"].dropna()
        return pd.Series(
            {
                "mean": float(values.mean()) if len(values) else math.nan,
                "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                "n_runs": len(group),
                "duplicates": int(group["_all"].iloc[0]) - len(group),
                "seeds": " ".join(str(s) for s in sorted(group["seed"])),
                "train_s": _mean(group["train_s"]),
                "test_eval_s": _mean(group["test_eval_s"]),
                "params_train": group["params_train"].iloc[0],
                "params_inference": group["params_inference"].iloc[0],
                "settings": group["setting"].nunique(),
                "run_ids": " ".join(group["run_id"]),
                "config_hashes": " ".join(sorted(set(group["config_hash"].astype(str)))),
                "git_shas": " ".join(sorted(set(group["git_sha"].astype(str)) - {""})),
            }
        )

    out = frame.groupby(list(GROUP_KEYS), dropna=False, sort=False).apply(agg, include_groups=False).reset_index()
    ascending = metric not in OVERLAP
    out = out.sort_values(["dataset", "labeled", "preset", "mean"], ascending=[True, True, True, ascending])
    out["rank"] = (
        out.groupby(["dataset", "labeled", "preset"])["mean"].rank(method="min", ascending=ascending).astype("Int64")
    )
    return out[columns].reset_index(drop=True)


def _mean(series: pd.Series) -> float:
    values = pd.to_numeric(series, errors="coerce").dropna()
    return float(values.mean()) if len(values) else math.nan


def _fmt_params(value: Any) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "—"
    if math.isnan(v):
        return "—"
    return f"{v / 1e6:.2f}M" if v >= 1e5 else f"{v / 1e3:.1f}k"


def _fmt_time(value: Any) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "—"
    if math.isnan(v):
        return "—"
    return f"{v / 3600:.2f} h" if v >= 3600 else f"{v / 60:.1f} min" if v >= 60 else f"{v:.0f} s"


def render_leaderboard(frame: pd.DataFrame, fmt: str = "md", *, metric: str = "dice") -> str:
    """Markdown / LaTeX / HTML table of :func:`leaderboard` (CSV: every column, unformatted)."""
    if fmt == "csv":
        return frame.to_csv(index=False, lineterminator="\n")
    unit = " (%)" if metric in OVERLAP else ""
    if frame.empty:
        return "no finished runs found\n"
    view = pd.DataFrame(
        {
            "rank": frame["rank"],
            "dataset": frame["dataset"],
            "labelled": frame["labeled"].map(lambda v: f"{v:g}" if isinstance(v, (int, float)) else str(v)),
            "preset": frame["preset"],
            "method": frame["method"],
            "estimator": frame["estimator"],
            "α": frame["alpha"].map(lambda v: f"{v:g}" if isinstance(v, (int, float)) else str(v)),
            "backbone": frame["backbone"],
            "variant": frame["variant"].map(lambda v: v or "preset"),
            f"{metric}{unit}": [
                "—" if math.isnan(m) else f"{m:.2f}" + ("" if math.isnan(s) else f" ± {s:.2f}")
                for m, s in zip(frame["mean"], frame["std"])
            ],
            "n": frame["n_runs"],
            "train time": frame["train_s"].map(_fmt_time),
            "params train/test": [
                f"{_fmt_params(a)} / {_fmt_params(b)}" for a, b in zip(frame["params_train"], frame["params_inference"])
            ],
            "runs (config hash, git)": [
                f"{c} @ {g or '?'}" + (f" ({k} settings!)" if k > 1 else "")
                for c, g, k in zip(frame["config_hashes"], frame["git_shas"], frame["settings"])
            ],
        }
    )
    if fmt == "md":
        header = "| " + " | ".join(view.columns) + " |"
        lines = [header, "|" + "---|" * len(view.columns)]
        lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in view.itertuples(index=False)]
        note = (
            f"\nmean ± std over runs (seeds) of each run's foreground mean {metric} over test cases; ranked within "
            "dataset, labelled budget and preset; params: trainable during training / used at test time.\n"
        )
        return "\n".join(lines) + "\n" + note
    if fmt == "tex":
        from ssl_bench.reporting.tables import tex_escape

        lines = [rf"\begin{{tabular}}{{{'l' * len(view.columns)}}}", r"\toprule"]
        lines.append(" & ".join(tex_escape(str(c)) for c in view.columns) + r" \\")
        lines.append(r"\midrule")
        lines += [" & ".join(tex_escape(str(v)) for v in row) + r" \\" for row in view.itertuples(index=False)]
        lines += [r"\bottomrule", r"\end{tabular}"]
        return "\n".join(lines) + "\n"
    if fmt == "html":
        return view.to_html(index=False) + "\n"
    raise ValueError(f"unknown format {fmt!r}")
