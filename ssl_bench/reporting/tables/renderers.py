"""Rendering a filled table: Markdown, LaTeX (booktabs), CSV (tidy, one line per cell), HTML, the footnotes,
and the provenance JSON (:func:`write_table` writes them all)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ssl_bench.core.errors import ConfigError
from ssl_bench.reporting.tables.cells import Cell, TableResult, scores_folder
from ssl_bench.reporting.tables.notes import footnotes, header, row_label, shows_paper, source_marks
from ssl_bench.reporting.tables.spec import RowSpec, TableSpec

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


def _reported_text(cell: Cell) -> str:
    """A reference row's published value (shown in a value column when the table has no paper columns)."""
    if cell.paper is None:
        return "-"
    return _num(cell.paper) + (f" ({_num(cell.paper_std)})" if cell.paper_std is not None else "")


def _measured_parts(cell: Cell, paper_columns: bool = True) -> tuple[str, str, str]:
    """(value, spread, marker) of a measured cell; ("—", "", "") if empty; a reference row's published value
    when the table has no paper columns."""
    if cell.row.paper_only and not paper_columns:
        return _reported_text(cell), "", ""
    if not cell.measured:
        return "—", "", ""
    spread = f" ± {_num(cell.std)}" if cell.n > 1 else ""
    return _num(cell.mean), f"{spread} (n={cell.n})", "†" if cell.significant else ""


def _row_groups(spec: TableSpec) -> list[tuple[str | None, list[RowSpec]]]:
    groups: list[tuple[str | None, list[RowSpec]]] = []
    for row in spec.rows:
        if groups and groups[-1][0] == row.group:
            groups[-1][1].append(row)
        else:
            groups.append((row.group, [row]))
    return groups


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
    paper, marks = shows_paper(spec), source_marks(spec)
    head = ["Method"]
    for col in spec.columns:
        head += [_md_escape(header(result, col)), *(["paper"] if paper else [])]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group, rows in _row_groups(spec):
        if group:
            lines.append("| " + " | ".join([f"*{_md_escape(group)}*", *[""] * (len(head) - 1)]) + " |")
        for row in rows:
            cells = [result.cell(row.id, c.key) for c in spec.columns]
            out = [_md_escape(row_label(row, cells, paper, marks))]
            for cell in cells:
                value, spread, marker = _measured_parts(cell, paper)
                text = f"**{value}**" if cell.best else value
                out += [f"{text}{spread}{marker}", *([_paper_text(cell)] if paper else [])]
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
    paper, marks = shows_paper(spec), source_marks(spec)
    per = 2 if paper else 1
    ncol = 1 + per * len(spec.columns)
    lines = [
        "% generated by `ssl-bench table` (needs \\usepackage{booktabs})",
        r"\begin{table}[t]",
        r"\centering\small",
        rf"\caption{{Table {tex_escape(spec.id)}: {tex_escape(spec.title)} ({setting})}}",
        rf"\begin{{tabular}}{{l{('rl' if paper else 'r') * len(spec.columns)}}}",
        r"\toprule",
        " & ".join(["Method", *[tex_escape(header(result, c)) + (" & paper" if paper else "") for c in spec.columns]])
        + r" \\",
        r"\midrule",
    ]
    for group, rows in _row_groups(spec):
        if group:
            lines.append(rf"\multicolumn{{{ncol}}}{{l}}{{\textit{{{tex_escape(group)}}}}} \\")
        for row in rows:
            cells = [result.cell(row.id, c.key) for c in spec.columns]
            out = [tex_escape(row_label(row, cells, paper, marks))]
            for cell in cells:
                value, spread, marker = _measured_parts(cell, paper)
                text = rf"\textbf{{{value}}}" if cell.best else tex_escape(value)
                out += [text + tex_escape(spread + marker), *([tex_escape(_paper_text(cell))] if paper else [])]
            lines.append(" & ".join(out) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    lines += [r"\par\footnotesize " + tex_escape(n) for n in footnotes(result)]
    lines += [r"\end{table}"]
    return "\n".join(lines) + "\n"


def _render_html(result: TableResult) -> str:
    from html import escape

    spec = result.spec
    paper, marks = shows_paper(spec), source_marks(spec)
    head = "".join(f"<th>{escape(header(result, c))}</th>" + ("<th>paper</th>" if paper else "") for c in spec.columns)
    body = []
    for group, rows in _row_groups(spec):
        if group:
            span = 1 + (2 if paper else 1) * len(spec.columns)
            body.append(f'<tr><td colspan="{span}"><i>{escape(group)}</i></td></tr>')
        for row in rows:
            cells = [result.cell(row.id, c.key) for c in spec.columns]
            tds = [f"<td>{escape(row_label(row, cells, paper, marks))}</td>"]
            for cell in cells:
                value, spread, marker = _measured_parts(cell, paper)
                text = f"<b>{value}</b>" if cell.best else escape(value)
                sup = f"<sup>{marker}</sup>" if marker else ""
                ptd = f"<td>{escape(_paper_text(cell))}</td>" if paper else ""
                tds.append(f"<td>{text}{escape(spread)}{sup}</td>{ptd}")
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
                "column_group": cell.column.group,
                "checkpoint": cell.column.checkpoint,
                "metric": cell.column.metric,
                "unit": result.unit_of(cell.column)[0],
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
                "reference": cell.row.paper_only,
                "source": cell.row.source or (result.spec.source if cell.paper is not None else ""),
                "runnable": cell.runnable,
                "reason": cell.reason,
                "run_ids": " ".join(r.run_id for r in cell.runs),
                "unscored_run_ids": " ".join(r.run_id for r in cell.unscored),
            }
        )
    return pd.DataFrame(rows)


def _scores_files(run: Any, checkpoint: str) -> list[str]:
    """The files of ``run`` that a cell of ``checkpoint`` reads: its config and the test scores."""
    folder = f"eval/{scores_folder(run, checkpoint)}"
    return ["config.yaml", f"{folder}/per_case.csv", f"{folder}/summary.json"]


def provenance(result: TableResult) -> dict[str, Any]:
    """The table's inputs and, per cell, the runs used (id, seed, config hash, the git sha the run was made with,
    sha256 of the files the cell read, value) and the aggregate. Only inputs: no path they were read from, no
    time, no git state of the checkout rendering it, so the same records give the same file anywhere."""
    cells = []
    for (row_id, col_key), cell in result.cells.items():
        cells.append(
            {
                "row": row_id,
                "column": col_key,
                "setting": cell.selector.describe() if cell.selector else None,
                "checkpoint": cell.column.checkpoint,
                "source": cell.row.source or None,
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
                        "config_hash": r.manifest.get("config_hash"),
                        "setting_hash": r.setting,
                        "git_sha": (r.manifest.get("git") or {}).get("sha"),
                        "git_dirty": (r.manifest.get("git") or {}).get("dirty"),
                        "scores": f"eval/{scores_folder(r, cell.column.checkpoint)}",
                        "sha256": r.content_sha256(_scores_files(r, cell.column.checkpoint)),
                        "value": v,
                    }
                    for r, v in zip(cell.runs, cell.values)
                ],
                "runs_without_scores": [r.run_id for r in cell.unscored],
            }
        )
    return {
        "table": result.spec.id,
        "title": result.spec.title,
        "spec": _spec_identity(result.spec),
        "preset": result.preset,
        "overrides": result.overrides,
        "seeds": result.seeds,
        "dataset_map": result.dataset_map,
        "cells": cells,
    }


def _spec_identity(spec: TableSpec) -> dict[str, Any] | None:
    """The spec file's name and sha256 (not its path: that depends on where the table is rendered from)."""
    if spec.path is None or not Path(spec.path).is_file():
        return None
    return {"file": Path(spec.path).name, "sha256": hashlib.sha256(Path(spec.path).read_bytes()).hexdigest()}


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
