"""Rendering a filled table: Markdown, LaTeX (booktabs), CSV (tidy, one line per cell), HTML, the footnotes,
and the provenance JSON (:func:`write_table` writes them all)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ssl_bench.core.errors import ConfigError
from ssl_bench.reporting.tables.cells import Cell, TableResult
from ssl_bench.reporting.tables.spec import OVERLAP, RowSpec, TableSpec

FORMATS = ("md", "tex", "csv", "html")


def _num(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def _signed(value: float) -> str:
    return f"{'+' if value >= 0 else '−'}{abs(value):.2f}"


def _paper_text(cell: Cell, tex: bool = False) -> str:
    if not cell.row.in_paper:
        return "n/a"
    if cell.paper is None:
        return "-"
    text = _num(cell.paper) + (f" ({_num(cell.paper_std)})" if cell.paper_std is not None else "")
    if cell.paper_dataset is not None:  # measured on a substitute dataset: no difference to the paper
        return f"{text} on {cell.paper_dataset}"
    if cell.delta is not None:
        delta = _signed(cell.delta)
        text += f", Δ ${delta.replace('−', '-')}$" if tex else f", Δ {delta}"
    return text


def _measured_parts(cell: Cell) -> tuple[str, str, str]:
    """(value, spread, marker) of a measured cell; ("—", "", "") if empty."""
    if not cell.measured:
        return "—", "", ""
    spread = f" ± {_num(cell.std)}" if cell.n > 1 else ""
    return _num(cell.mean), f"{spread} (n={cell.n})", "†" if cell.significant else ""


def _row_label(row: RowSpec, cells: list[Cell]) -> str:
    label = row.label
    if row.paper_only:
        return f"{label} (paper only)"
    if not row.in_paper:
        return f"{label} (not in paper)"
    if cells and not any(c.runnable for c in cells) and not any(c.measured for c in cells):
        return f"{label} (not runnable yet)"
    return label


def _row_groups(spec: TableSpec) -> list[tuple[str | None, list[RowSpec]]]:
    groups: list[tuple[str | None, list[RowSpec]]] = []
    for row in spec.rows:
        if groups and groups[-1][0] == row.group:
            groups[-1][1].append(row)
        else:
            groups.append((row.group, [row]))
    return groups


def footnotes(result: TableResult) -> list[str]:
    """The notes printed under a table: cell definition, markers, empty-mask policy, units, preset, gaps."""
    from ssl_bench.core.config import PRESETS
    from ssl_bench.evaluation.metrics import EMPTY_POLICY_TEXT

    spec = result.spec
    base_rows = sorted({spec.baseline_of(r) for r in spec.rows} - {None})
    base_labels = ", ".join(
        spec.row(b).label + (f" ({spec.row(b).group})" if spec.row(b).group else "") for b in base_rows
    )
    preset = PRESETS.get(result.preset, {})
    preset_text = ", ".join(f"{k}={v}" for k, v in preset.items())
    preset_text += "; datasets and methods may add their own preset values, every run's config.yaml has them all"
    notes = [
        f"Cells: per run, the mean over test cases; then mean ± sample std (ddof=1) over seeds "
        f"{', '.join(map(str, result.seeds))}, with n = finished runs found. Overlap metrics in %. "
        f"Beside each: the paper's value ({spec.source or 'CoraNet'}; std in parentheses where it gives one) "
        "and Δ = measured − paper (none where a substitute dataset was measured). '—': no finished run yet.",
        "Bold: best measured value of the column. †: paired two-sided Wilcoxon signed-rank test "
        "(scipy.stats.wilcoxon) on the per-case values of the column's metric (per-case DSC for DSC columns; "
        f"each case averaged over seeds) against {base_labels or 'the baseline row'}: p < 0.05.",
        f"Empty masks: {EMPTY_POLICY_TEXT.removeprefix('Empty masks: ')}",
    ]
    dist = [c for c in spec.columns if c.metric not in OVERLAP]
    if dist:
        unit = {c.metric: "voxel" if c.metric.endswith("_vox") else "mm" for c in dist} | result.distance_units
        units = "; ".join(f"{c.label} = {c.metric} in {unit[c.metric]}" for c in dist)
        notes.append(f"Distances: {units} (voxel distances ignore the spacing, as the paper's).")
    else:
        notes.append("Distances: none in this table.")
    datasets = sorted({c.selector.dataset for c in result.cells.values() if c.selector})
    mapped = ""
    if result.dataset_map:
        mapped = " (substituted: " + ", ".join(f"{k}→{v}" for k, v in sorted(result.dataset_map.items())) + ")"
    from ssl_bench.core.registry import DATASETS

    for name in datasets:  # a dataset's own preset values override the global ones
        if name in DATASETS and DATASETS.get(name).presets.get(result.preset):
            own = ", ".join(f"{k}={v}" for k, v in DATASETS.get(name).presets[result.preset].items())
            preset_text += f"; {name}: {own}"
    if result.overrides:
        preset_text += "; every run also with " + ", ".join(f"{k}={v}" for k, v in result.overrides.items())
    notes.append(
        f"Preset: {result.preset} ({preset_text}); dataset(s): {', '.join(datasets) or spec.dataset}{mapped}. "
        f"{result.n_runs_found} finished run(s) read from {', '.join(str(d) for d in result.results_dirs)}."
    )
    notes += spec.notes
    blocked = {}
    for cell in result.cells.values():
        if not cell.runnable and not cell.row.paper_only:
            blocked.setdefault(cell.row.label, cell.reason)
    if blocked:
        notes.append("Not runnable yet: " + "; ".join(f"{k}: {v}" for k, v in blocked.items()) + ".")
    return notes


def render(result: TableResult, fmt: str = "md") -> str:
    """The table as Markdown, LaTeX (booktabs), CSV (one line per cell, tidy) or HTML."""
    if fmt == "md":
        return _render_md(result)
    if fmt == "tex":
        return _render_tex(result)
    if fmt == "csv":
        return to_frame(result).to_csv(index=False, lineterminator="\n")
    if fmt == "html":
        return _render_html(result)
    raise ConfigError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _render_md(result: TableResult) -> str:
    spec = result.spec
    lines = [f"### Table {spec.id}: {spec.title} ({result.setting})", ""]
    if spec.caption:
        lines += [f"*Paper caption:* {spec.caption}", ""]
    if spec.protocol:
        lines += [f"*Protocol:* {spec.protocol}", ""]
    header = ["Method"]
    for col in spec.columns:
        header += [_md_escape(col.header), "paper"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group, rows in _row_groups(spec):
        if group:
            lines.append("| " + " | ".join([f"*{_md_escape(group)}*", *[""] * (len(header) - 1)]) + " |")
        for row in rows:
            cells = [result.cell(row.id, c.key) for c in spec.columns]
            out = [_md_escape(_row_label(row, cells))]
            for cell in cells:
                value, spread, marker = _measured_parts(cell)
                text = f"**{value}**" if cell.best else value
                out += [f"{text}{spread}{marker}", _paper_text(cell)]
            lines.append("| " + " | ".join(out) + " |")
    lines.append("")
    lines += [f"{i}. {_md_escape(n)}" for i, n in enumerate(footnotes(result), 1)]
    return "\n".join(lines) + "\n"


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_"}
_TEX_ESCAPES |= {"{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_TEX_UNICODE = {"±": r"$\pm$", "Δ": r"$\Delta$", "−": "$-$", "†": r"$^\dagger$", "★": r"$\star$", "α": r"$\alpha$"}
_TEX_UNICODE |= {"Π": r"$\Pi$", "→": r"$\to$", "×": r"$\times$", "≥": r"$\geq$", "—": "---", "–": "--"}
_TEX_UNICODE |= {"<": "$<$", ">": "$>$", "§": r"\S{}"}


def tex_escape(text: str) -> str:
    out = "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)
    for k, v in _TEX_UNICODE.items():
        out = out.replace(k, v)
    return out


def _render_tex(result: TableResult) -> str:
    spec = result.spec
    setting = tex_escape(result.setting.replace("`", ""))
    ncol = 1 + 2 * len(spec.columns)
    lines = [
        "% generated by `ssl-bench table` (needs \\usepackage{booktabs})",
        r"\begin{table}[t]",
        r"\centering\small",
        rf"\caption{{Table {tex_escape(spec.id)}: {tex_escape(spec.title)} ({setting})}}",
        rf"\begin{{tabular}}{{l{'rl' * len(spec.columns)}}}",
        r"\toprule",
        " & ".join(["Method", *[f"{tex_escape(c.header)} & paper" for c in spec.columns]]) + r" \\",
        r"\midrule",
    ]
    for group, rows in _row_groups(spec):
        if group:
            lines.append(rf"\multicolumn{{{ncol}}}{{l}}{{\textit{{{tex_escape(group)}}}}} \\")
        for row in rows:
            cells = [result.cell(row.id, c.key) for c in spec.columns]
            out = [tex_escape(_row_label(row, cells))]
            for cell in cells:
                value, spread, marker = _measured_parts(cell)
                text = rf"\textbf{{{value}}}" if cell.best else tex_escape(value)
                out += [text + tex_escape(spread + marker), tex_escape(_paper_text(cell))]
            lines.append(" & ".join(out) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    lines += [r"\par\footnotesize " + tex_escape(n) for n in footnotes(result)]
    lines += [r"\end{table}"]
    return "\n".join(lines) + "\n"


def _render_html(result: TableResult) -> str:
    from html import escape

    spec = result.spec
    head = "".join(f"<th>{escape(c.header)}</th><th>paper</th>" for c in spec.columns)
    body = []
    for group, rows in _row_groups(spec):
        if group:
            body.append(f'<tr><td colspan="{1 + 2 * len(spec.columns)}"><i>{escape(group)}</i></td></tr>')
        for row in rows:
            cells = [result.cell(row.id, c.key) for c in spec.columns]
            tds = [f"<td>{escape(_row_label(row, cells))}</td>"]
            for cell in cells:
                value, spread, marker = _measured_parts(cell)
                text = f"<b>{value}</b>" if cell.best else escape(value)
                sup = f"<sup>{marker}</sup>" if marker else ""
                tds.append(f"<td>{text}{escape(spread)}{sup}</td><td>{escape(_paper_text(cell))}</td>")
            body.append("<tr>" + "".join(tds) + "</tr>")
    notes = "".join(f"<li>{escape(n)}</li>" for n in footnotes(result))
    return (
        f"<h3>Table {escape(spec.id)}: {escape(spec.title)} ({escape(result.setting.replace('`', ''))})</h3>\n"
        f"<table>\n<thead><tr><th>Method</th>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n"
        f"</table>\n<ol>{notes}</ol>\n"
    )


def to_frame(result: TableResult) -> Any:
    """One line per cell: measured mean/std/n, paper value, Δ, best, p-value, marker, runnable, run ids."""
    import pandas as pd

    rows = []
    for (row_id, col_key), cell in result.cells.items():
        rows.append(
            {
                "table": result.spec.id,
                "preset": result.preset,
                "row": row_id,
                "label": cell.row.label,
                "group": cell.row.group,
                "method": cell.row.method,
                "column": col_key,
                "metric": cell.column.metric,
                "class": cell.column.cls if cell.column.cls is not None else "mean",
                "mean": None if not cell.measured else round(cell.mean, 6),
                "std": None if math.isnan(cell.std) else round(cell.std, 6),
                "n": cell.n,
                "paper": cell.paper,
                "paper_std": cell.paper_std,
                "delta": None if cell.delta is None else round(cell.delta, 6),
                "best": cell.best,
                "p_value": cell.p_value,
                "significant": cell.significant,
                "in_paper": cell.row.in_paper,
                "runnable": cell.runnable,
                "reason": cell.reason,
                "run_ids": " ".join(r.run_id for r in cell.runs),
            }
        )
    return pd.DataFrame(rows)


def provenance(result: TableResult) -> dict[str, Any]:
    """Per cell: the runs used (id, seed, path, config hash, git sha, value) and the aggregate."""
    from ssl_bench import __version__
    from ssl_bench.training.runner import git_state

    cells = []
    for (row_id, col_key), cell in result.cells.items():
        cells.append(
            {
                "row": row_id,
                "column": col_key,
                "setting": cell.selector.describe() if cell.selector else None,
                "runnable": cell.runnable,
                "reason": cell.reason,
                "mean": None if not cell.measured else cell.mean,
                "std": None if math.isnan(cell.std) else cell.std,
                "n": cell.n,
                "paper": cell.paper,
                "p_value": cell.p_value,
                "duplicates_ignored": cell.duplicates,
                "runs": [
                    {
                        "run_id": r.run_id,
                        "seed": r.get("seed"),
                        "path": _rel(r.path),
                        "config_hash": r.manifest.get("config_hash"),
                        "setting_hash": r.setting,
                        "git_sha": (r.manifest.get("git") or {}).get("sha"),
                        "git_dirty": (r.manifest.get("git") or {}).get("dirty"),
                        "value": v,
                    }
                    for r, v in zip(cell.runs, cell.values)
                ],
            }
        )
    return {
        "table": result.spec.id,
        "title": result.spec.title,
        "spec": _rel(result.spec.path) if result.spec.path else None,
        "preset": result.preset,
        "overrides": result.overrides,
        "seeds": result.seeds,
        "dataset_map": result.dataset_map,
        "results_dirs": [str(d) for d in result.results_dirs],
        "generated_by": {"ssl_bench": __version__, "git": git_state()},
        "cells": cells,
    }


def _rel(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def write_table(result: TableResult, out_dir: str | Path = "results/tables", formats: Sequence[str] = ()) -> list[Path]:
    """Write ``<stem>.md``, ``.tex``, ``.csv`` (plus any extra ``formats``) and ``<stem>.provenance.json``."""
    from ssl_bench.core.io import atomic_write_json, atomic_write_text

    out = Path(out_dir)
    written = []
    for fmt in dict.fromkeys(("md", "tex", "csv", *formats)):
        path = out / f"{result.stem}.{fmt}"
        atomic_write_text(path, render(result, fmt))
        written.append(path)
    path = out / f"{result.stem}.provenance.json"
    atomic_write_json(path, provenance(result))
    written.append(path)
    return written
