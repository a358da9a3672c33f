"""Table specs: the paper's tables as YAML data, loaded, validated and registered in ``TABLES``.

Specs
-----
One YAML file per table of the CoraNet paper (II–IX) in ``benchmarks/tables/`` at the repository root
(``$SSL_BENCH_TABLES`` points elsewhere), registered in ``TABLES`` as ``ii`` ... ``ix`` (case-insensitive)::

    id: IX                              # the registry name
    title: "ACDC: DSC per class ..."    # shown by `ssl-bench list tables`
    caption: "..."                      # the paper's caption
    source: "CoraNet, IEEE TMI 2021, Table IX (§IV-F)"
    protocol: "..."                     # what is run (free text)
    dataset: acdc                       # registered dataset name (rows/columns may override)
    labeled: 0.2                        # fraction (<= 1) or patient count (rows/columns may override)
    backbone: vnet                      # optional default backbone
    set: {key: value}                   # optional extra config overrides (dotted keys) for every cell
    seeds: [0, 1, 2]                    # seeds a cell aggregates (`--seeds` overrides)
    baseline: unet                      # row id of the paired Wilcoxon test (a row's `baseline` overrides)
    notes: ["..."]                      # printed under the table
    columns:                            # metric columns
      - {key: RV, label: "RV", group: "DSC (%)", metric: dice, class: 1}
      #   metric: a per_case.csv column (dice, jaccard, precision, recall, hd95_vox, asd_vox, ...)
      #   class: foreground class index; omitted = foreground mean (mean over classes of per-class means)
      #   dataset / labeled / backbone / set: per-column run settings (Table III ratios, Table VI 2D vs 3D)
      #   checkpoint: which tested model's scores: "selected" (default; eval/test, the model the run selected) or
      #     "last" (eval/test-last of trainer.select=both, or eval/test where that is the last model); a run without
      #     them leaves the cell empty. Two column groups "val-selected" / "last" show both (FIELD.md pitfall 1).
      #   metric hd95 / asd / hd / assd: in mm where the data carry a spacing, else voxels (summary.json
      #     spacing_unit; the header says which); *_vox: always voxels
    rows:
      - id: ours                        # unique within the table
        label: "Ours (CoraNet)"
        group: "Backbone: V-Net"        # optional section header
        method: coranet                 # registered method name; null = a reference row: published numbers only,
                                        #   never run, never bold, never in the Wilcoxon test
        estimator: crm                  # optional: --estimator
        alpha: 2                        # optional: --set params.alpha=2
        backbone: vnet                  # optional: --backbone
        dataset / labeled / set         # optional per-row run settings
        in_paper: true                  # false: a row we add (e.g. a baseline), no paper values; a row without
                                        #   `paper` is such a row (no `paper: null` needed)
        paper: {RV: [82.69, 0.48], ...} # the paper's value per column: number, [mean, std] or null ("-")
        source: "BCP, CVPR 2023, Tab. 1" # optional: where this row's paper values come from (default the table's
                                        #   source), rendered as a footnote; with a source, paper values may be given
                                        #   for some columns only (the others are "-")
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssl_bench.core.config import read_yaml_mapping
from ssl_bench.core.errors import ConfigError, SSLBenchError
from ssl_bench.core.registry import TABLES, normalize_name

OVERLAP = ("dice", "jaccard", "precision", "recall")
#: column ``checkpoint`` values -> the eval folder read first (see :func:`.cells.scores_folder`)
CHECKPOINTS = {"selected": "test", "last": "test-last"}
SPEC_ERRORS: dict[str, str] = {}


@dataclass(frozen=True)
class ColumnSpec:
    key: str
    label: str
    metric: str
    cls: int | None = None
    group: str | None = None
    dataset: str | None = None
    labeled: float | None = None
    backbone: str | None = None
    set: dict[str, Any] = field(default_factory=dict)
    checkpoint: str = "selected"

    @property
    def scale(self) -> float:
        return 100.0 if self.metric in OVERLAP else 1.0

    @property
    def higher_is_better(self) -> bool:
        return self.metric in OVERLAP

    @property
    def header(self) -> str:
        return f"{self.group} {self.label}" if self.group else self.label

    @property
    def is_distance(self) -> bool:
        return self.metric not in OVERLAP


@dataclass(frozen=True)
class RowSpec:
    id: str
    label: str
    method: str | None
    estimator: str | None = None
    alpha: float | None = None
    backbone: str | None = None
    dataset: str | None = None
    labeled: float | None = None
    set: dict[str, Any] = field(default_factory=dict)
    group: str | None = None
    baseline: str | None = None
    in_paper: bool = True
    paper: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    note: str = ""
    #: where the paper values come from, if not the table's source (a reference row's publication)
    source: str = ""

    @property
    def paper_only(self) -> bool:
        """A reference row: published numbers, no method (nothing to run or measure)."""
        return self.method is None


@dataclass
class TableSpec:
    id: str
    title: str
    columns: list[ColumnSpec]
    rows: list[RowSpec]
    dataset: str
    labeled: float
    seeds: list[int] = field(default_factory=lambda: [0])
    baseline: str | None = None
    backbone: str | None = None
    set: dict[str, Any] = field(default_factory=dict)
    caption: str = ""
    source: str = ""
    protocol: str = ""
    notes: list[str] = field(default_factory=list)
    path: Path | None = None

    def __post_init__(self) -> None:
        self.__doc__ = f"Table {self.id}: {self.title}"  # `ssl-bench list tables` shows it

    def row(self, row_id: str) -> RowSpec:
        for r in self.rows:
            if r.id == row_id:
                return r
        raise ConfigError(f"table {self.id}: no row {row_id!r} (rows: {', '.join(r.id for r in self.rows)})")

    def baseline_of(self, row: RowSpec) -> str | None:
        return row.baseline or self.baseline


def specs_dir() -> Path:
    """Folder of the table specs: ``$SSL_BENCH_TABLES`` or ``<repository>/benchmarks/tables``."""
    env = os.environ.get("SSL_BENCH_TABLES")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "benchmarks" / "tables"


def _paper_value(value: Any, where: str) -> tuple[float | None, float | None]:
    if value is None:
        return (None, None)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value), None)
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return (None if value[0] is None else float(value[0]), None if value[1] is None else float(value[1]))
    raise ConfigError(f"{where}: paper value must be a number, [mean, std] or null, got {value!r}")


def _check_keys(data: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(data) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")


def load_spec(path: str | Path) -> TableSpec:
    """Read and validate one table spec (raises :class:`ConfigError` naming the file and the problem)."""
    path = Path(path)
    data = read_yaml_mapping(path, "table spec", empty_ok=False)
    where = f"table spec {path.name}"
    top = {"id", "title", "caption", "source", "protocol", "dataset", "labeled", "backbone", "set", "seeds"}
    _check_keys(data, top | {"baseline", "notes", "columns", "rows"}, where)
    for needed in ("id", "title", "dataset", "labeled", "columns", "rows"):
        if needed not in data:
            raise ConfigError(f"{where}: missing {needed!r}")
    col_keys = {"key", "label", "metric", "class", "group", "dataset", "labeled", "backbone", "set", "checkpoint"}
    columns = []
    for i, c in enumerate(data["columns"]):
        _check_keys(c, col_keys, f"{where} column {i}")
        if "key" not in c or "metric" not in c:
            raise ConfigError(f"{where} column {i}: needs 'key' and 'metric'")
        checkpoint = str(c.get("checkpoint", "selected"))
        if checkpoint not in CHECKPOINTS:
            raise ConfigError(
                f"{where} column {c['key']}: checkpoint must be one of {list(CHECKPOINTS)}, got {checkpoint!r}"
            )
        columns.append(
            ColumnSpec(
                key=str(c["key"]),
                label=str(c.get("label", c["key"])),
                metric=str(c["metric"]),
                cls=None if c.get("class") in (None, "mean") else int(c["class"]),
                group=c.get("group"),
                dataset=c.get("dataset"),
                labeled=c.get("labeled"),
                backbone=c.get("backbone"),
                set=dict(c.get("set") or {}),
                checkpoint=checkpoint,
            )
        )
    keys = [c.key for c in columns]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{where}: duplicate column keys {keys}")
    row_keys = {"id", "label", "method", "estimator", "alpha", "backbone", "dataset", "labeled", "set", "group"}
    row_keys |= {"baseline", "in_paper", "paper", "note", "source"}
    rows = []
    for i, r in enumerate(data["rows"]):
        rw = f"{where} row {r.get('id', i)}"
        _check_keys(r, row_keys, rw)
        if "id" not in r or "method" not in r:
            raise ConfigError(f"{rw}: needs 'id' and 'method' (null for rows the paper only cites)")
        paper = {}
        for k, v in (r.get("paper") or {}).items():
            if str(k) not in keys:
                raise ConfigError(f"{rw}: paper value for unknown column {k!r} (columns: {keys})")
            paper[str(k)] = _paper_value(v, rw)
        in_paper = bool(r.get("in_paper", "paper" in r))  # a row without paper values is one we add
        source = " ".join(str(r.get("source") or "").split())
        if source:  # a publication of its own: it gives what it gives
            paper, in_paper = {k: paper.get(k, (None, None)) for k in keys}, True
        elif in_paper and set(paper) != set(keys):
            raise ConfigError(f"{rw}: paper values needed for every column {keys} (null for '-'), got {sorted(paper)}")
        rows.append(
            RowSpec(
                id=str(r["id"]),
                label=str(r.get("label", r["id"])),
                method=None if r["method"] is None else normalize_name(str(r["method"])),
                estimator=r.get("estimator"),
                alpha=None if r.get("alpha") is None else float(r["alpha"]),
                backbone=r.get("backbone"),
                dataset=r.get("dataset"),
                labeled=r.get("labeled"),
                set=dict(r.get("set") or {}),
                group=r.get("group"),
                baseline=r.get("baseline"),
                in_paper=in_paper,
                paper=paper,
                note=str(r.get("note", "")),
                source=source,
            )
        )
    ids = [r.id for r in rows]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{where}: duplicate row ids {ids}")
    for rid in [data.get("baseline"), *(r.baseline for r in rows)]:
        if rid is not None and rid not in ids:
            raise ConfigError(f"{where}: baseline {rid!r} is not a row id ({ids})")
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise ConfigError(f"{where}: seeds must be a non-empty list of integers")
    return TableSpec(
        id=str(data["id"]),
        title=str(data["title"]),
        columns=columns,
        rows=rows,
        dataset=str(data["dataset"]),
        labeled=data["labeled"],
        seeds=list(seeds),
        baseline=data.get("baseline"),
        backbone=data.get("backbone"),
        set=dict(data.get("set") or {}),
        caption=" ".join(str(data.get("caption", "")).split()),
        source=str(data.get("source", "")),
        protocol=" ".join(str(data.get("protocol", "")).split()),
        notes=[" ".join(str(n).split()) for n in data.get("notes", [])],
        path=path,
    )


def _roman_key(table_id: str) -> int:
    values = {"I": 1, "V": 5, "X": 10, "L": 50}
    total, prev = 0, 0
    for ch in reversed(table_id.upper()):
        v = values.get(ch, 0)
        total, prev = (total - v, prev) if v < prev else (total + v, v)
    return total


def register_tables() -> None:
    """Register every spec in :func:`specs_dir` (a broken file is recorded in ``SPEC_ERRORS``, not raised, so that
    other commands keep working; ``ssl-bench table`` reports it)."""
    folder = specs_dir()
    if not folder.is_dir():
        return
    specs = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            specs.append(load_spec(path))
        except SSLBenchError as exc:
            SPEC_ERRORS[path.stem.lower()] = str(exc)
    for spec in sorted(specs, key=lambda s: _roman_key(s.id)):
        TABLES.add(spec.id, spec, override=True)


def get_spec(table_id: str) -> TableSpec:
    """The registered spec of ``table_id`` (``IX``, ``ix``), or the spec in a ``.yaml`` file (a table of your own,
    e.g. ``benchmarks/acdc_baselines.yaml``), with a clear error if the specs are missing."""
    if table_id.lower().endswith((".yaml", ".yml")):
        if not Path(table_id).is_file():
            raise ConfigError(f"table spec file {table_id} not found")
        return load_spec(table_id)
    key = normalize_name(table_id)
    if key in SPEC_ERRORS:
        raise ConfigError(SPEC_ERRORS[key])
    if not specs_dir().is_dir():
        raise ConfigError(
            f"table specs not found: {specs_dir()} does not exist (tables need a source checkout of ssl-bench, "
            "or set $SSL_BENCH_TABLES to a folder of table YAML files)"
        )
    return TABLES.get(table_id)


def add_estimator_rows(spec: TableSpec, names: list[str]) -> TableSpec:
    """``spec`` with one row per estimator in ``names`` (``ssl-bench table VI --add-estimator margin``): each a copy
    of the table's CRM row (else its first row with an estimator) with that estimator, no paper values. The copy's
    id is ``<ID>+<names>``, so its files do not overwrite the paper table's."""
    from ssl_bench.core.registry import ESTIMATORS

    templates = [r for r in spec.rows if r.method is not None and r.estimator is not None]
    if not templates:
        raise ConfigError(
            f"table {spec.id} has no row with an estimator; --add-estimator extends tables that compare estimators "
            "(VI, VIII)"
        )
    template = next((r for r in templates if r.estimator == "crm"), templates[0])
    rows = list(spec.rows)
    for name in names:
        ESTIMATORS.get(name)  # unknown: the registry's error lists the names (a plugin's needs --plugin)
        if any(r.id == name for r in rows):
            raise ConfigError(f"table {spec.id} already has a row {name!r}")
        rows.append(
            dataclasses.replace(
                template, id=name, label=f"{name} (added)", estimator=name, in_paper=False, paper={}, note="", source=""
            )
        )
    return dataclasses.replace(spec, id=f"{spec.id}+{'+'.join(names)}", rows=rows)
