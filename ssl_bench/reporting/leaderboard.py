"""``ssl-bench leaderboard``: every setting found in the results, ranked, with cost and provenance.

A *setting* is (dataset, labelled budget, preset, method, estimator, alpha, backbone, variant), where the variant
lists the config keys in which the runs differ from what that preset resolves to today (``--set`` overrides, or a
preset changed since: see :func:`.tables.variant_of`); its runs over seeds are aggregated like a table
cell: per run the foreground mean over test cases of the metric (from ``per_case.csv``), then mean ± sample std over
runs. Settings are ranked within a *group*: (dataset, labelled budget, preset, variant), so a variant never shares
a ranking with the plain preset. A method that trains on every label (``fully-supervised``) is the group's upper
bound: shown, not ranked. Settings with fewer than ``min_n`` runs are marked (their mean is not yet a ranking).

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
#: the keys of a ranking group (rows of one group are ranked against each other)
RANKING_KEYS = ("dataset", "labeled", "preset", "variant")
FORMATS = ("md", "csv", "html", "tex")


def leaderboard(
    results_dir: str | Path | Iterable[str | Path] | None = None,
    *,
    dataset: str | None = None,
    labeled: float | None = None,
    preset: str | None = None,
    metric: str = "dice",
    min_n: int = 3,
) -> pd.DataFrame:
    """One row per setting with finished runs, sorted by group (:data:`RANKING_KEYS`) then rank: ``rank`` (within
    the group; empty for an upper bound), ``dataset, labeled, preset, method, estimator, alpha,
    backbone, variant`` ("" = the plain preset, "?" = not resolvable here), ``upper_bound`` (the method trains on
    every label), ``below_min_n`` (fewer than ``min_n`` runs), ``mean, std, n_runs`` (seeds, each counted once),
    ``duplicates`` (older repeated runs of a seed, not counted), ``seeds, train_s`` (mean over runs),
    ``test_eval_s, params_train, params_inference, settings`` (distinct config hashes without seed: > 1 means the
    runs differ in an option the variant cannot see), ``run_ids, config_hashes, git_shas``. Overlap metrics in %."""
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
        "upper_bound",
        "below_min_n",
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
    return _rank(out, metric, min_n)[columns]


def _uses_all_labels(method: str) -> bool:
    from ssl_bench.core.registry import METHODS

    return method in METHODS and bool(getattr(METHODS.get(method), "uses_all_labels", False))


def _rank(out: pd.DataFrame, metric: str, min_n: int) -> pd.DataFrame:
    """Mark upper bounds and small ``n``, rank within each :data:`RANKING_KEYS` group (upper bounds excluded), and
    sort: group (plain preset before its variants), upper bound first, then by rank."""
    ascending = metric not in OVERLAP
    out = out.assign(
        upper_bound=out["method"].map(_uses_all_labels).astype(bool),
        below_min_n=out["n_runs"] < min_n,
    )
    ranked = out[~out["upper_bound"]]
    by_group = ranked.groupby(list(RANKING_KEYS), dropna=False)["mean"]  # a missing key is a group of its own
    out["rank"] = by_group.rank(method="min", ascending=ascending).astype("Int64")
    out["rank"] = out["rank"].astype("Int64")
    order = out.assign(_ub=~out["upper_bound"], _key=out["mean"] if ascending else -out["mean"])
    order = order.sort_values([*RANKING_KEYS, "_ub", "_key", "method"], na_position="last", kind="stable")
    return order.drop(columns=["_ub", "_key"]).reset_index(drop=True)


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


def render_leaderboard(frame: pd.DataFrame, fmt: str = "md", *, metric: str = "dice", min_n: int = 3) -> str:
    """The :func:`leaderboard` as Markdown (a table per ranking group), CSV (every column, unformatted), one
    self-contained sortable HTML page, or LaTeX."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    if fmt == "csv":
        return frame.to_csv(index=False, lineterminator="\n")
    if frame.empty:
        return "no finished runs found\n"
    unit = " (%)" if metric in OVERLAP else ""
    note = _note(metric, unit, min_n)
    groups = [(_group_title(key), _view(group, metric, unit)) for key, group in _groups(frame)]
    if fmt == "md":
        parts = [f"## Leaderboard: {metric}{unit}\n"]
        for title, view in groups:
            parts.append(f"### {title}\n")
            lines = ["| " + " | ".join(view.columns) + " |", "|" + "---|" * len(view.columns)]
            lines += ["| " + " | ".join(row) + " |" for row in view.astype(str).itertuples(index=False)]
            parts.append("\n".join(lines) + "\n")
        return "\n".join(parts) + "\n" + note + "\n"
    if fmt == "html":
        from ssl_bench.reporting.html_page import sortable_page

        keys = _sort_keys(frame, groups, f"{metric}{unit}")
        classes = [
            [
                " ".join(c for c, on in (("upper-bound", ub), ("few", low)) if on)
                for ub, low in zip(g["upper_bound"], g["below_min_n"])
            ]
            for _, g in _groups(frame)
        ]
        return sortable_page(f"ssl-bench leaderboard: {metric}{unit}", groups, note, keys, classes)
    from ssl_bench.reporting.tables import tex_escape

    ncols = len(groups[0][1].columns)
    lines = [rf"\begin{{tabular}}{{{'l' * ncols}}}", r"\toprule"]
    lines.append(" & ".join(tex_escape(str(c)) for c in groups[0][1].columns) + r" \\")
    for title, view in groups:
        lines += [r"\midrule", rf"\multicolumn{{{ncols}}}{{l}}{{\textit{{{tex_escape(title)}}}}} \\"]
        lines += [" & ".join(tex_escape(str(v)) for v in row) + r" \\" for row in view.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _groups(frame: pd.DataFrame) -> list[tuple[tuple[Any, ...], pd.DataFrame]]:
    """The ranking groups in the frame's order (the frame is sorted by group)."""
    grouped = frame.groupby(list(RANKING_KEYS), dropna=False, sort=False)  # NaN keys kept (NaN != NaN in tuples)
    return [(key if isinstance(key, tuple) else (key,), part) for key, part in grouped]


def _budget(labeled: Any) -> str:
    if isinstance(labeled, (int, float)) and not isinstance(labeled, bool):
        if labeled <= 1:
            return f"{100 * labeled:g} % labelled"
        return f"{labeled:g} labelled patients"
    return f"labelled {labeled}"


def _group_title(key: tuple[Any, ...]) -> str:
    dataset, labeled, preset, variant = key
    title = f"{dataset} · {_budget(labeled)} · preset {preset}"
    if variant == "?":
        return title + " · variant not resolvable here (a plugin not loaded?)"
    return title + (f" · variant {variant}" if variant else "")


def _view(group: pd.DataFrame, metric: str, unit: str) -> pd.DataFrame:
    """The displayed cells of one group's rows (strings)."""
    return pd.DataFrame(
        {
            "rank": ["upper bound" if ub else str(r) for ub, r in zip(group["upper_bound"], group["rank"])],
            "method": group["method"].astype(str),
            "estimator": group["estimator"].astype(str),
            "α": group["alpha"].map(lambda v: f"{v:g}" if isinstance(v, (int, float)) else str(v)),
            "backbone": group["backbone"].astype(str),
            f"{metric}{unit}": [
                "—" if math.isnan(m) else f"{m:.2f}" + ("" if math.isnan(s) else f" ± {s:.2f}")
                for m, s in zip(group["mean"], group["std"])
            ],
            "n": [f"{n} *" if low else str(n) for n, low in zip(group["n_runs"], group["below_min_n"])],
            "train time": group["train_s"].map(_fmt_time),
            "params train/test": [
                f"{_fmt_params(a)} / {_fmt_params(b)}" for a, b in zip(group["params_train"], group["params_inference"])
            ],
            "runs (config hash, git)": [
                f"{c} @ {g or '?'}" + (f" ({k} settings!)" if k > 1 else "")
                for c, g, k in zip(group["config_hashes"], group["git_shas"], group["settings"])
            ],
        }
    )


def _sort_keys(
    frame: pd.DataFrame, groups: list[tuple[str, pd.DataFrame]], metric_col: str
) -> list[list[list[str | None]]]:
    """Per group, per row, per column: the value an HTML column sorts by (numbers where the cell shows one, "" for
    none: sorted last; None: the cell's text)."""
    out = []
    for (_, group), (_, view) in zip(_groups(frame), groups):
        numeric = {
            "rank": [("" if ub else str(r)) for ub, r in zip(group["upper_bound"], group["rank"])],
            "n": [str(n) for n in group["n_runs"]],
            "train time": [_num(v) for v in group["train_s"]],
            "params train/test": [_num(v) for v in group["params_train"]],
        }
        numeric[metric_col] = [_num(v) for v in group["mean"]]
        out.append([[numeric[c][i] if c in numeric else None for c in view.columns] for i in range(len(view))])
    return out


def _num(value: Any) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return ""
    return "" if math.isnan(v) else repr(v)


def _note(metric: str, unit: str, min_n: int) -> str:
    return (
        f"{metric}{unit}: mean ± std over runs (seeds) of each run's foreground mean {metric} over test cases. Ranked "
        "within each group: dataset, labelled budget, preset and variant (a variant, a run whose config differs from "
        "what its preset resolves to, e.g. made with `--set` overrides, is never ranked with the plain preset). "
        "upper bound: a method trained on every label (the budget does not apply), shown, not ranked. "
        f"n: runs; * fewer than {min_n} (`--min-n`): too few for a ranking to mean much. "
        "params: trainable during training / used at test time."
    )
