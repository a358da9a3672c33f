"""The paper's tables as data: specs, aggregation of finished runs, rendering, provenance, missing runs.

Modules (everything public is re-exported here, as ``ssl_bench.reporting.tables.X``):

- :mod:`.spec`: the table YAML specs (their format), loading and validation, registration in ``TABLES``;
- :mod:`.cells`: which finished runs fill a cell (:class:`Selector`, :func:`matches`, :func:`variant_of`,
  :func:`finished_runs_like`) and the cell's aggregate over seeds (:class:`Cell`, :class:`TableResult`);
- :mod:`.stats`: mean ± sample std over seeds, the paired Wilcoxon test against the baseline row;
- :mod:`.build`: :func:`build_table`, a table filled from the finished runs;
- :mod:`.notes`: the layout, column headers (with distance units), row labels (reference rows, sources), footnotes;
- :mod:`.renderers`: Markdown, LaTeX, CSV, HTML, provenance JSON, :func:`write_table`;
- :mod:`.missing`: the runs a table still needs (``--missing``) and running them (``--run-missing``);
- :mod:`.convergence`: the validation curves of each row's runs, and whether they had flattened (``--convergence``).

Importing the package registers the paper's tables (:func:`register_tables`).
"""

from __future__ import annotations

from ssl_bench.reporting.tables.build import build_table
from ssl_bench.reporting.tables.cells import (
    MATCH_KEYS,
    UNMATCHED_KEYS,
    Cell,
    Selector,
    TableResult,
    case_values,
    cell_selector,
    compare_config,
    expected_config,
    finished_runs_like,
    literal_expected,
    map_dataset,
    matches,
    parse_dataset_map,
    resolve_selector,
    run_value,
    scores_folder,
    summary_of,
    variant_items,
    variant_of,
)
from ssl_bench.reporting.tables.convergence import RowConvergence, render_convergence, row_convergence
from ssl_bench.reporting.tables.missing import (
    MissingRun,
    finished_runs_of,
    plan_missing,
    render_missing,
    run_missing,
)
from ssl_bench.reporting.tables.notes import footnotes, header, shows_paper, source_marks
from ssl_bench.reporting.tables.renderers import (
    FORMATS,
    provenance,
    render,
    tex_escape,
    to_frame,
    write_table,
)
from ssl_bench.reporting.tables.spec import (
    CHECKPOINTS,
    OVERLAP,
    SPEC_ERRORS,
    ColumnSpec,
    RowSpec,
    TableSpec,
    add_estimator_rows,
    get_spec,
    load_spec,
    register_tables,
    specs_dir,
)
from ssl_bench.reporting.tables.stats import wilcoxon_p

__all__ = [
    "add_estimator_rows",
    "Cell",
    "ColumnSpec",
    "MissingRun",
    "RowSpec",
    "TableResult",
    "TableSpec",
    "build_table",
    "finished_runs_like",
    "get_spec",
    "load_spec",
    "plan_missing",
    "render",
    "render_convergence",
    "render_missing",
    "row_convergence",
    "RowConvergence",
    "run_missing",
    "specs_dir",
    "variant_items",
    "variant_of",
    "write_table",
    # also used as ``tables.X`` by the CLI, leaderboard, figures and tests
    "CHECKPOINTS",
    "FORMATS",
    "MATCH_KEYS",
    "OVERLAP",
    "SPEC_ERRORS",
    "UNMATCHED_KEYS",
    "Selector",
    "case_values",
    "cell_selector",
    "compare_config",
    "expected_config",
    "finished_runs_of",
    "footnotes",
    "header",
    "literal_expected",
    "map_dataset",
    "matches",
    "parse_dataset_map",
    "provenance",
    "register_tables",
    "resolve_selector",
    "run_value",
    "scores_folder",
    "shows_paper",
    "source_marks",
    "summary_of",
    "tex_escape",
    "to_frame",
    "wilcoxon_p",
]

register_tables()
