"""What a rendered table says besides its numbers: the layout (a "paper" column beside each measured one, or
reference rows with their published numbers in the value columns), column headers with their distance unit, row
labels (reference rows and their sources' markers) and the footnotes."""

from __future__ import annotations

from string import ascii_lowercase

from ssl_bench.reporting.tables.cells import Cell, TableResult
from ssl_bench.reporting.tables.spec import ColumnSpec, RowSpec, TableSpec


def shows_paper(spec: TableSpec) -> bool:
    """Does the table put a "paper" column beside each measured one? Yes when a row with a method has paper values
    (a paper's table, or a benchmark quoting one); otherwise (a benchmark with reference rows only) each reference
    row shows its published numbers in the value columns, labelled as reported."""
    return any(
        r.method is not None and r.in_paper and any(v[0] is not None for v in r.paper.values()) for r in spec.rows
    )


def source_marks(spec: TableSpec) -> dict[str, str]:
    """``{source: "a", ...}``: a footnote marker per distinct row ``source``, in row order."""
    marks: dict[str, str] = {}
    for row in spec.rows:
        if row.source and row.source not in marks:
            n = len(marks)
            marks[row.source] = ascii_lowercase[n % 26] * (1 + n // 26)
    return marks


def header(result: TableResult, col: ColumnSpec) -> str:
    """The column's header, with its unit for distance columns (unless the label already names one)."""
    text = col.header
    if col.is_distance and not any(u in col.label.lower() for u in ("voxel", "mm")):
        text += f" ({result.unit_of(col)[0]})"
    return text


def row_label(row: RowSpec, cells: list[Cell], paper_columns: bool, marks: dict[str, str]) -> str:
    mark = f" [{marks[row.source]}]" if row.source else ""
    if row.paper_only:
        return f"{row.label} (reported{mark})" if row.source else f"{row.label} (paper only)"
    label = row.label + mark
    if not row.in_paper and paper_columns:
        return f"{label} (not in paper)"
    if cells and not any(c.runnable for c in cells) and not any(c.measured for c in cells):
        return f"{label} (not runnable yet)"
    return label


def footnotes(result: TableResult) -> list[str]:
    """The notes printed under a table: cell definition, markers, checkpoints, empty-mask policy, units, reference
    rows and their sources, preset, gaps."""
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
    beside = (
        f"Beside each: the paper's value ({spec.source or 'CoraNet'}; std in parentheses where it gives one) "
        "and Δ = measured − paper (none where a substitute dataset was measured). "
        if shows_paper(spec)
        else ""
    )
    notes = [
        f"Cells: per run, the mean over test cases; then mean ± sample std (ddof=1) over seeds "
        f"{', '.join(map(str, result.seeds))}, with n = finished runs found. Overlap metrics in %. "
        f"{beside}'—': no finished run yet.",
        "Bold: best measured value of the column. †: paired two-sided Wilcoxon signed-rank test "
        "(scipy.stats.wilcoxon) on the per-case values of the column's metric (per-case DSC for DSC columns; "
        f"each case averaged over seeds) against {base_labels or 'the baseline row'}: p < 0.05.",
    ]
    notes += _checkpoint_notes(result)
    notes.append(f"Empty masks: {EMPTY_POLICY_TEXT.removeprefix('Empty masks: ')}")
    notes.append(_distance_note(result))
    notes += _reference_notes(result)
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
        f"{_runs_used(result)} run(s) used; their ids and the sha256 of the files read are in the provenance file."
    )
    notes += spec.notes
    blocked = {}
    for cell in result.cells.values():
        if not cell.runnable and not cell.row.paper_only:
            blocked.setdefault(cell.row.label, cell.reason)
    if blocked:
        notes.append("Not runnable yet: " + "; ".join(f"{k}: {v}" for k, v in blocked.items()) + ".")
    return notes


def _runs_used(result: TableResult) -> int:
    """Distinct runs in the table's cells (not the runs found: those depend on what else lies in the results)."""
    return len({r.run_id for cell in result.cells.values() for r in cell.runs})


def _groups_of(cols: list[ColumnSpec]) -> str:
    return ", ".join(dict.fromkeys(f"'{c.group}'" if c.group else c.key for c in cols))


def _checkpoint_notes(result: TableResult) -> list[str]:
    cols = result.spec.columns
    last = [c for c in cols if c.checkpoint == "last"]
    unscored = {r.run_id for c in result.cells.values() for r in c.unscored}
    if not last and not unscored:
        return []
    selected = [c for c in cols if c.checkpoint == "selected"]
    text = "Checkpoints: "
    if selected:
        text += (
            f"{_groups_of(selected)}: eval/test, the model each run selected (trainer.select best-val or both: the "
            "checkpoint of best validation Dice; the last model where validation never ran); "
        )
    text += (
        f"{_groups_of(last)}: eval/test-last, the last checkpoint (trainer.select=both), or eval/test where that is "
        "the last model. Bold and † are computed per column, among runs of the same checkpoint."
    )
    if unscored:
        text += (
            f" {len(unscored)} finished run(s) have no scores of a column's checkpoint (e.g. made without "
            "trainer.select=both): their cells there are empty, and they are not listed as missing runs."
        )
    return [text]


def _distance_note(result: TableResult) -> str:
    dist = [c for c in result.spec.columns if c.is_distance]
    if not dist:
        return "Distances: none in this table."
    parts = []
    for metric in dict.fromkeys(c.metric for c in dist):
        cols = [c for c in dist if c.metric == metric]
        units = [result.unit_of(c) for c in cols]
        unit = "/".join(sorted({u for u, _ in units}))
        origin = (
            ""
            if metric.endswith("_vox")
            else (
                " (from the runs' summary.json)"
                if all(read for _, read in units)
                else " (the dataset's default unit; no run read yet)"
            )
        )
        parts.append(f"{'/'.join(dict.fromkeys(c.label for c in cols))} = {metric} in {unit}{origin}")
    return (
        f"Distances: {'; '.join(parts)}. Distances are in mm where the data carry a voxel spacing, in voxels where "
        "they do not (summary.json spacing_unit); *_vox metrics are always in voxels (ignoring the spacing, as the "
        "paper's)."
    )


def _reference_notes(result: TableResult) -> list[str]:
    spec = result.spec
    marks = source_marks(spec)
    if not marks:
        return []
    refs = [r for r in spec.rows if r.paper_only and r.source]
    where = "in the value columns" if not shows_paper(spec) else "in the paper columns"
    text = (
        f"Reference rows ({len(refs)}, labelled 'reported'): published numbers, shown {where} as their sources "
        "report them (each with its own protocol, model selection and distance unit; '-': not reported), never "
        "measured here: they are never bold, never in the † test, and no Δ is computed for them. "
        if refs
        else ""
    )
    if refs and result.dataset_map:
        mapped = ", ".join(f"{k} (measured rows on {v})" for k, v in sorted(result.dataset_map.items()))
        text += f"They are for the spec's dataset(s): {mapped}. "
    return [text + "Sources: " + "; ".join(f"[{m}] {s}" for s, m in marks.items()) + "."]
