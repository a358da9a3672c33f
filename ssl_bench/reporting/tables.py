"""The paper's tables as data: specs, aggregation of finished runs, rendering, provenance, missing runs.

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
    rows:
      - id: ours                        # unique within the table
        label: "Ours (CoraNet)"
        group: "Backbone: V-Net"        # optional section header
        method: coranet                 # registered method name; null = a row the paper only cites
        estimator: crm                  # optional: --estimator
        alpha: 2                        # optional: --set params.alpha=2
        backbone: vnet                  # optional: --backbone
        dataset / labeled / set         # optional per-row run settings
        in_paper: true                  # false: a row we add (e.g. a baseline), no paper values
        paper: {RV: [82.69, 0.48], ...} # the paper's value per column: number, [mean, std] or null ("-")

A *cell* (row x column) selects finished runs by their ``config.yaml``: the run's resolved config must equal the
cell's (``ssl-bench run`` with the cell's method, dataset, budget, preset, backbone, estimator, alpha and ``set``
keys, resolved by the current code), every key but the seed and a few that cannot change scores (``UNMATCHED_KEYS``).
So a run made with an extra ``--set trainer.epochs=100``, or before a preset changed, fills no cell of the plain
preset. One run per seed (the newest if several). The cell value is, per run, the mean over test cases (per
class, or the foreground mean), then mean ± sample std (ddof=1) over the seeds, with n. Paper values and
Δ = measured − paper are shown beside.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ssl_bench.core.config import format_config_value
from ssl_bench.core.errors import ConfigError, SSLBenchError
from ssl_bench.core.registry import TABLES, normalize_name

__all__ = [
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
    "render_missing",
    "run_missing",
    "specs_dir",
    "variant_items",
    "variant_of",
    "write_table",
]

OVERLAP = ("dice", "jaccard", "precision", "recall")
#: config keys compared when matching a run to a cell (plus a row's/column's ``set`` keys)
MATCH_KEYS = (
    "method",
    "preset",
    "dataset.name",
    "dataset.labeled",
    "model.backbone",
    "params.estimator",
    "params.alpha",
)
#: resolved config keys NOT compared: the seed (a cell aggregates over it), where the data lives, and settings that
#: cannot change a run's scores (logging, checkpoint cadence, evaluation batching, the validated-equal metric code)
UNMATCHED_KEYS = (
    "seed",
    "dataset.root",
    "trainer.ckpt_every",
    "trainer.log_every",
    "trainer.stop_on_nan",
    "eval.batch_size",
    "eval.metrics_backend",
)
FORMATS = ("md", "tex", "csv", "html")
SPEC_ERRORS: dict[str, str] = {}


# -- specs ----------------------------------------------------------------------------------------------------------


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
    def unit(self) -> str:
        if self.metric in OVERLAP:
            return "%"
        return "voxel" if self.metric.endswith("_vox") else "mm (dataset spacing; voxels without one)"


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

    @property
    def paper_only(self) -> bool:
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
    return Path(env) if env else Path(__file__).resolve().parents[2] / "benchmarks" / "tables"


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
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"table spec {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"table spec {path}: expected a mapping")
    where = f"table spec {path.name}"
    top = {"id", "title", "caption", "source", "protocol", "dataset", "labeled", "backbone", "set", "seeds"}
    _check_keys(data, top | {"baseline", "notes", "columns", "rows"}, where)
    for needed in ("id", "title", "dataset", "labeled", "columns", "rows"):
        if needed not in data:
            raise ConfigError(f"{where}: missing {needed!r}")
    col_keys = {"key", "label", "metric", "class", "group", "dataset", "labeled", "backbone", "set"}
    columns = []
    for i, c in enumerate(data["columns"]):
        _check_keys(c, col_keys, f"{where} column {i}")
        if "key" not in c or "metric" not in c:
            raise ConfigError(f"{where} column {i}: needs 'key' and 'metric'")
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
            )
        )
    keys = [c.key for c in columns]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{where}: duplicate column keys {keys}")
    row_keys = {"id", "label", "method", "estimator", "alpha", "backbone", "dataset", "labeled", "set", "group"}
    row_keys |= {"baseline", "in_paper", "paper", "note"}
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
        in_paper = bool(r.get("in_paper", True))
        if in_paper and set(paper) != set(keys):
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


# -- cell selection ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selector:
    """A run setting without its seed: what `ssl-bench run` gets, and what a cell's runs must match."""

    dataset: str
    method: str
    labeled: float
    preset: str
    backbone: str | None = None
    estimator: str | None = None
    alpha: float | None = None
    extra: tuple[tuple[str, Any], ...] = ()

    def overrides(self) -> dict[str, Any]:
        out = dict(self.extra)
        if self.alpha is not None:
            out["params.alpha"] = self.alpha
        return out

    def command(self, seed: int, out: str | Path | None = None, plugins: Sequence[str] = ()) -> list[str]:
        cmd = ["ssl-bench", "run", "--method", self.method, "--dataset", self.dataset]
        cmd += ["--labeled", _fmt_num(self.labeled), "--seed", str(seed), "--preset", self.preset]
        if self.backbone:
            cmd += ["--backbone", self.backbone]
        if self.estimator:
            cmd += ["--estimator", self.estimator]
        for key, value in self.overrides().items():
            cmd += ["--set", f"{key}={_fmt_num(value) if isinstance(value, (int, float)) else value}"]
        for plugin in plugins:
            cmd += ["--plugin", str(plugin)]
        if out is not None:
            cmd += ["--out", str(out)]
        return cmd

    def describe(self) -> str:
        parts = [f"{self.method} on {self.dataset}", f"labelled {_fmt_num(self.labeled)}", f"preset {self.preset}"]
        parts += [f"{k} {v}" for k, v in (("backbone", self.backbone), ("estimator", self.estimator)) if v]
        parts += [f"{k}={v}" for k, v in self.overrides().items()]
        return ", ".join(parts)


def _fmt_num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and value > 1:
        return str(int(value))
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


_RESOLVED: dict[Selector, tuple[dict[str, Any] | None, str]] = {}


def resolve_selector(sel: Selector) -> tuple[dict[str, Any] | None, str]:
    """``(expected config values, "")`` if ``sel`` can be run now, else ``(None, why not)``."""
    if sel in _RESOLVED:
        return _RESOLVED[sel]
    from ssl_bench.core.config import flatten, to_dict
    from ssl_bench.core.registry import BACKBONES, DATASETS, ESTIMATORS, METHODS

    reason = ""
    if sel.method not in METHODS:
        reason = f"method {sel.method!r} is not registered yet"
    elif sel.dataset not in DATASETS:
        reason = f"dataset {sel.dataset!r} is not registered yet"
    elif sel.backbone and sel.backbone not in BACKBONES:
        reason = f"backbone {sel.backbone!r} is not registered yet"
    elif sel.estimator and sel.estimator not in ESTIMATORS:
        reason = f"estimator {sel.estimator!r} is not registered yet"
    result: tuple[dict[str, Any] | None, str]
    if reason:
        result = (None, reason)
    else:
        from ssl_bench.training.runner import resolve_config

        try:
            cfg = resolve_config(
                sel.method,
                sel.dataset,
                preset=sel.preset,
                labeled=sel.labeled,
                backbone=sel.backbone,
                estimator=sel.estimator,
                overrides=sel.overrides(),
            )
        except SSLBenchError as exc:
            result = (None, f"config error: {exc}")
        else:
            expected = expected_config(cfg)
            flat = flatten(to_dict(cfg))
            expected.update({k: flat.get(k, v) for k, v in sel.extra})
            result = (expected, "")
    _RESOLVED[sel] = result
    return result


def expected_config(cfg: Any) -> dict[str, Any]:
    """The flat config values a run made with ``cfg`` (a resolved :class:`~ssl_bench.core.config.RunConfig`) must have,
    seed excluded: every key but :data:`UNMATCHED_KEYS` (and the labelled budget for methods that use all labels)."""
    from ssl_bench.core.config import flatten, to_dict
    from ssl_bench.core.registry import METHODS

    expected = {k: v for k, v in flatten(to_dict(cfg)).items() if k not in UNMATCHED_KEYS}
    if cfg.method in METHODS and METHODS.get(cfg.method).uses_all_labels:
        expected.pop("dataset.labeled", None)  # the budget is ignored (run folder tag "all")
    return expected


def finished_runs_like(cfg: Any, results_dir: str | Path | Iterable[str | Path] | None = None) -> list[Any]:
    """The finished runs under ``results_dir`` (default: as :func:`.results.find_runs`) made with ``cfg``'s
    setting and seed, as a table cell would match them: use it to skip a run that is already there."""
    from ssl_bench.reporting.results import find_runs

    expected = expected_config(cfg)
    return [r for r in find_runs(results_dir, status="finished") if r.get("seed") == cfg.seed and matches(r, expected)]


def literal_expected(sel: Selector) -> dict[str, Any]:
    """The selector's own values (for settings that cannot be resolved here, e.g. an unregistered method)."""
    out: dict[str, Any] = {
        "method": sel.method,
        "preset": sel.preset,
        "dataset.name": sel.dataset,
        "dataset.labeled": sel.labeled,
    }
    if sel.backbone:
        out["model.backbone"] = sel.backbone
    if sel.estimator:
        out["params.estimator"] = sel.estimator
    out.update(sel.overrides())
    return out


def compare_config(run: Any, expected: dict[str, Any]) -> tuple[list[str], list[str]]:
    """``(keys whose value differs, keys the run's config lacks)`` of ``expected`` in ``run``'s config."""
    from ssl_bench.reporting.results import values_equal

    missing = object()
    differing, absent = [], []
    for key, value in expected.items():
        got = run.get(key, missing)
        if got is missing:
            absent.append(key)
        elif not values_equal(got, value):
            differing.append(key)
    return differing, absent


def matches(run: Any, expected: dict[str, Any]) -> bool:
    """Does ``run`` have the expected setting? ``MATCH_KEYS`` must be present and equal; every other expected key
    must be equal where the run's config has it (a key that an older ssl-bench version did not write is skipped)."""
    differing, absent = compare_config(run, expected)
    return not differing and not set(absent) & set(MATCH_KEYS)


def variant_of(run: Any) -> str | None:
    """How ``run``'s config differs from its plain setting, as text: ``"k=v, ..."`` (see :func:`variant_items`)."""
    items = variant_items(run)
    return None if items is None else ", ".join(f"{k}={format_config_value(v)}" for k, v in items.items())


def variant_items(run: Any) -> dict[str, Any] | None:
    """How ``run``'s config differs from its plain setting (what ``ssl-bench run`` with the run's method, dataset,
    budget, preset, backbone, estimator and alpha resolves to with the current code): ``{key: the run's value}``,
    empty for none, None when the setting cannot be resolved (e.g. a plugin method not loaded)."""
    labeled = run.get("dataset.labeled")
    sel = Selector(
        dataset=normalize_name(str(run.get("dataset.name"))),
        method=normalize_name(str(run.get("method"))),
        labeled=float(labeled) if isinstance(labeled, (int, float)) else 1.0,
        preset=str(run.get("preset")),
        backbone=run.get("model.backbone"),
        estimator=run.get("params.estimator"),
        alpha=run.get("params.alpha"),
    )
    expected, _ = resolve_selector(sel)
    if expected is None:
        return None
    differing, _ = compare_config(run, expected)
    return {key: run.get(key) for key in differing}


def cell_selector(
    spec: TableSpec,
    row: RowSpec,
    col: ColumnSpec,
    preset: str,
    dataset_map: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Selector | None:
    """The run setting of a cell (None for rows the paper only cites). Precedence of the ``set`` keys: table < row <
    column < ``overrides`` (``ssl-bench table --set``)."""
    if row.method is None:
        return None
    dataset = col.dataset or row.dataset or spec.dataset
    dataset = map_dataset(dataset, dataset_map)
    labeled = col.labeled if col.labeled is not None else row.labeled if row.labeled is not None else spec.labeled
    backbone = col.backbone or row.backbone or spec.backbone
    extra = {**spec.set, **row.set, **col.set, **(overrides or {})}
    alpha = row.alpha
    if "params.alpha" in extra:
        alpha = float(extra.pop("params.alpha"))
    return Selector(
        dataset=normalize_name(dataset),
        method=row.method,
        labeled=labeled,
        preset=preset,
        backbone=backbone,
        estimator=row.estimator,
        alpha=alpha,
        extra=tuple(sorted(extra.items())),
    )


def map_dataset(name: str, dataset_map: dict[str, str] | None) -> str:
    if not dataset_map:
        return name
    return dataset_map.get(name, dataset_map.get("*", name))


def parse_dataset_map(items: Sequence[str] | None) -> dict[str, str]:
    """``["acdc=cardiac-phantom"]`` -> ``{"acdc": "cardiac-phantom"}``; a bare ``X`` maps every dataset to X."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" in item:
            src, dst = item.split("=", 1)
            out[normalize_name(src)] = normalize_name(dst)
        else:
            out["*"] = normalize_name(item)
    return out


# -- aggregation ------------------------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One row x column of a table: the matched runs (one per seed) and their aggregate."""

    row: RowSpec
    column: ColumnSpec
    selector: Selector | None
    runnable: bool
    reason: str = ""
    runs: list[Any] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    mean: float = math.nan
    std: float = math.nan
    n: int = 0
    paper: float | None = None
    paper_std: float | None = None
    p_value: float | None = None
    significant: bool = False
    best: bool = False
    duplicates: int = 0
    #: the paper's dataset when ``--dataset FROM=TO`` replaced it (the paper value is then not comparable)
    paper_dataset: str | None = None

    @property
    def measured(self) -> bool:
        return self.n > 0 and not math.isnan(self.mean)

    @property
    def delta(self) -> float | None:
        if not self.measured or self.paper is None or self.paper_dataset is not None:
            return None
        return self.mean - self.paper


@dataclass
class TableResult:
    spec: TableSpec
    preset: str
    seeds: list[int]
    dataset_map: dict[str, str]
    results_dirs: list[Path]
    cells: dict[tuple[str, str], Cell]
    n_runs_found: int = 0
    distance_units: dict[str, str] = field(default_factory=dict)
    #: ``--set`` keys every cell's runs were made with (on top of the spec's own)
    overrides: dict[str, Any] = field(default_factory=dict)

    def cell(self, row_id: str, col_key: str) -> Cell:
        return self.cells[(row_id, col_key)]

    @property
    def measured_cells(self) -> int:
        return sum(c.measured for c in self.cells.values())

    @property
    def stem(self) -> str:
        """File stem: ``IX-cpu`` (``IX-smoke-cardiac-phantom`` when datasets are substituted,
        ``IX-cpu-iters_per_epoch160`` with ``--set trainer.iters_per_epoch=160``)."""
        stem = f"{self.spec.id}-{self.preset}"
        if self.dataset_map:
            stem += "-" + "-".join(sorted(set(self.dataset_map.values())))
        for key, value in sorted(self.overrides.items()):
            stem += "-" + re.sub(r"[^A-Za-z0-9_.]+", "_", key.rsplit(".", 1)[-1] + format_config_value(value))
        return stem

    @property
    def setting(self) -> str:
        """``preset `cpu``` plus the ``--set`` keys, for titles."""
        text = f"preset `{self.preset}`"
        if self.overrides:
            text += ", " + " ".join(f"`--set {k}={format_config_value(v)}`" for k, v in self.overrides.items())
        return text


def run_value(run: Any, metric: str, cls: int | None) -> float:
    """Mean over test cases of ``metric`` for class ``cls`` (NaN cases skipped), or the foreground mean (``None``):
    the mean over classes of those per-class means (as ``summary.json``'s ``foreground_mean``)."""
    pc = run.per_case()
    if metric not in pc.columns:
        return math.nan
    per_class = pc.groupby("class")[metric].mean()  # pandas skips NaN
    if cls is not None:
        return float(per_class.get(cls, math.nan))
    finite = per_class.dropna()
    return float(finite.mean()) if len(finite) else math.nan


def case_values(run: Any, metric: str, cls: int | None) -> Any:
    """Per-case values (a Series indexed by case) of ``metric`` for class ``cls``, or the mean over classes."""
    pc = run.per_case()
    if metric not in pc.columns:
        import pandas as pd

        return pd.Series(dtype=float)
    if cls is not None:
        return pc[pc["class"] == cls].set_index("case")[metric].astype(float)
    return pc.groupby("case")[metric].mean()


def _mean_std(values: list[float]) -> tuple[float, float, int]:
    finite = [v for v in values if not math.isnan(v)]
    n = len(finite)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(finite) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1)) if n > 1 else math.nan
    return mean, std, n


def wilcoxon_p(cell_runs: list[Any], base_runs: list[Any], metric: str, cls: int | None) -> float | None:
    """Two-sided paired Wilcoxon signed-rank test (scipy, zero_method "wilcox") of per-case values (each case's
    value averaged over the cell's seeds) against the baseline's; cases paired by id, NaN pairs dropped. None
    when there is nothing to test (no pairs, or every difference is 0)."""
    import pandas as pd
    from scipy.stats import wilcoxon

    def per_case(runs: list[Any]) -> pd.Series:
        return pd.concat([case_values(r, metric, cls) for r in runs], axis=1).mean(axis=1)

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


def build_table(
    table: str | TableSpec,
    results_dir: str | Path | Iterable[str | Path] | None = None,
    *,
    preset: str = "cpu",
    seeds: Sequence[int] | None = None,
    dataset_map: dict[str, str] | None = None,
    runs: list[Any] | None = None,
    alpha: float = 0.05,
    overrides: dict[str, Any] | None = None,
) -> TableResult:
    """Fill a table from the finished runs under ``results_dir`` (default ``results/runs`` and ``results/records``).

    Args:
        table: a spec or a table id (``"IX"``).
        preset: the preset the runs must have been made with (part of the match).
        seeds: seeds to aggregate (default the spec's).
        dataset_map: dataset substitution, e.g. ``{"acdc": "cardiac-phantom"}`` (``"*"``: every dataset).
        runs: the run records to use instead of searching ``results_dir`` (see :func:`.results.find_runs`).
        alpha: significance level of the Wilcoxon marker.
        overrides: config keys every cell's runs were made with (``ssl-bench run --set``), on top of the spec's.
    """
    from ssl_bench.reporting.results import _as_dirs, find_runs

    spec = table if isinstance(table, TableSpec) else get_spec(table)
    dirs = _as_dirs(results_dir)
    all_runs = runs if runs is not None else find_runs(dirs)
    finished = [r for r in all_runs if r.finished]
    seeds = list(seeds) if seeds else list(spec.seeds)
    result = TableResult(
        spec,
        preset,
        seeds,
        dict(dataset_map or {}),
        dirs,
        {},
        n_runs_found=len(finished),
        overrides=dict(overrides or {}),
    )
    for row in spec.rows:
        for col in spec.columns:
            paper, paper_std = row.paper.get(col.key, (None, None))
            sel = cell_selector(spec, row, col, preset, dataset_map, result.overrides)
            cell = Cell(row, col, sel, runnable=False, paper=paper, paper_std=paper_std)
            original = col.dataset or row.dataset or spec.dataset
            if sel is not None and sel.dataset != normalize_name(original):
                cell.paper_dataset = original
            if sel is None:
                cell.reason = "paper only: results cited by the paper, no implementation"
            else:
                expected, reason = resolve_selector(sel)
                cell.runnable, cell.reason = expected is not None, reason
                matched = [r for r in finished if matches(r, expected or literal_expected(sel))]
                for seed in seeds:
                    of_seed = sorted((r for r in matched if r.get("seed") == seed), key=lambda r: r.run_id)
                    if of_seed:
                        cell.runs.append(of_seed[-1])
                        cell.duplicates += len(of_seed) - 1
                cell.values = [col.scale * run_value(r, col.metric, col.cls) for r in cell.runs]
                cell.mean, cell.std, cell.n = _mean_std(cell.values)
                for r in cell.runs:
                    units = r.summary().get("distance_units") or {}
                    if col.metric in units:
                        result.distance_units[col.metric] = units[col.metric]
            result.cells[(row.id, col.key)] = cell
    # best per column, Wilcoxon against the baseline row
    for col in spec.columns:
        column = [result.cells[(r.id, col.key)] for r in spec.rows]
        measured = [c for c in column if c.measured]
        means = [c.mean for c in measured]
        if len(measured) >= 2 and max(means) - min(means) >= 5e-3:  # no bold when all are equal
            best = max(means) if col.higher_is_better else min(means)
            for c in measured:
                c.best = math.isclose(c.mean, best, rel_tol=0, abs_tol=5e-3)  # equal at the 2 printed decimals
        for c in measured:
            base_id = spec.baseline_of(c.row)
            if base_id is None or base_id == c.row.id:
                continue
            base = result.cells[(base_id, col.key)]
            if not base.measured:
                continue
            c.p_value = wilcoxon_p(c.runs, base.runs, col.metric, col.cls)
            c.significant = c.p_value is not None and c.p_value < alpha
    return result


# -- rendering --------------------------------------------------------------------------------------------------------


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


# -- missing runs -----------------------------------------------------------------------------------------------------


@dataclass
class MissingRun:
    """A (setting, seed) that some cell needs and no finished run provides."""

    selector: Selector
    seed: int
    rows: list[str]
    action: str  # "run", "resume", "active" (a run still writing), "blocked" (not runnable)
    reason: str = ""
    run_dir: Path | None = None

    def command(self, out: str | Path | None, plugins: Sequence[str] = ()) -> list[str]:
        if self.action == "resume" and self.run_dir is not None:
            return ["ssl-bench", "resume", str(self.run_dir), *[a for p in plugins for a in ("--plugin", str(p))]]
        return self.selector.command(self.seed, out, plugins)


def plan_missing(
    result: TableResult,
    runs: list[Any] | None = None,
    *,
    stale_s: float = 600.0,
) -> list[MissingRun]:
    """The runs that would fill the table's empty (seed-incomplete) cells, one per (setting, seed).

    A killed run of the same setting (manifest status running/interrupted/failed) in a results folder is resumed
    instead of started again, unless its status is ``running`` and its files changed within ``stale_s`` seconds
    (then it is probably still running: action ``active``, skipped).
    """
    from ssl_bench.reporting.results import find_runs

    all_runs = runs if runs is not None else find_runs(result.results_dirs)
    unfinished = [r for r in all_runs if not r.finished]
    plan: dict[tuple[Selector, int], MissingRun] = {}
    row_index = {r.id: i for i, r in enumerate(result.spec.rows)}
    first_row: dict[Selector, int] = {}
    for cell in result.cells.values():
        if cell.selector is None:
            continue
        have = {r.get("seed") for r in cell.runs}
        for seed in result.seeds:
            if seed in have:
                continue
            key = (cell.selector, seed)
            first_row.setdefault(cell.selector, row_index[cell.row.id])
            if key in plan:
                if cell.row.label not in plan[key].rows:
                    plan[key].rows.append(cell.row.label)
                continue
            entry = MissingRun(cell.selector, seed, [cell.row.label], "run")
            if not cell.runnable:
                entry.action, entry.reason = "blocked", cell.reason
            else:
                expected, _ = resolve_selector(cell.selector)
                killed = sorted(
                    (r for r in unfinished if r.get("seed") == seed and matches(r, expected or {})),
                    key=lambda r: r.run_id,
                )
                if killed:
                    entry.run_dir = killed[-1].path
                    age = time.time() - _last_write(killed[-1].path)
                    if killed[-1].status == "running" and age < stale_s:
                        entry.action = "active"
                        entry.reason = f"status running, files written {age:.0f} s ago (probably still running)"
                    else:
                        entry.action = "resume"
                        entry.reason = f"{killed[-1].status} run"
            plan[key] = entry
    order = {"resume": 0, "run": 1, "active": 2, "blocked": 3}
    return sorted(plan.values(), key=lambda m: (order[m.action], first_row[m.selector], m.selector.describe(), m.seed))


def finished_runs_of(entry: MissingRun, results_dir: str | Path | Iterable[str | Path]) -> list[Any]:
    """The finished runs under ``results_dir`` that fill ``entry`` (its setting and seed)."""
    from ssl_bench.reporting.results import find_runs

    expected = resolve_selector(entry.selector)[0] or literal_expected(entry.selector)
    return [
        r for r in find_runs(results_dir, status="finished") if r.get("seed") == entry.seed and matches(r, expected)
    ]


def _last_write(run_dir: Path) -> float:
    paths = [run_dir / "manifest.json", run_dir / "metrics.jsonl", run_dir / "checkpoints" / "last.pt"]
    return max((p.stat().st_mtime for p in paths if p.exists()), default=0.0)


def render_missing(result: TableResult, plan: list[MissingRun], out: str | Path, plugins: Sequence[str] = ()) -> str:
    """The ``--missing`` listing: the exact commands, then what cannot run yet and why."""
    import shlex

    from ssl_bench.core.registry import DATASETS

    todo = [m for m in plan if m.action in ("run", "resume")]
    lines = [
        f"# Table {result.spec.id} (preset {result.preset}, seeds {' '.join(map(str, result.seeds))}): "
        f"{len(plan)} run(s) missing, {len(todo)} can be started now"
    ]
    for action, title in (("resume", "killed runs, resumed"), ("run", "new runs")):
        items = [m for m in plan if m.action == action]
        if items:
            lines.append(f"# {title}:")
            lines += [shlex.join(m.command(out, plugins)) for m in items]
    active = [m for m in plan if m.action == "active"]
    if active:
        lines.append("# probably still running (not started again):")
        lines += [f"#   {m.run_dir}: {m.reason}" for m in active]
    blocked: dict[str, list[MissingRun]] = {}
    for m in plan:
        if m.action == "blocked":
            blocked.setdefault(m.reason, []).append(m)
    if blocked:
        lines.append("# not runnable yet:")
        for reason, items in blocked.items():
            rows = sorted({r for m in items for r in m.rows})
            lines.append(f"#   {', '.join(rows)} ({len(items)} run(s)): {reason}")
    paper_only = [r.label for r in result.spec.rows if r.paper_only]
    if paper_only:
        lines.append(f"# paper-only rows (results cited by the paper, nothing to run): {', '.join(paper_only)}")
    for name in sorted({m.selector.dataset for m in todo}):
        if name in DATASETS:
            cls = DATASETS.get(name)
            env = getattr(cls, "root_env", None)
            if getattr(cls, "needs_root", False) and env and not os.environ.get(env):
                lines.append(f"# dataset {name} needs its data: export {env}=/path/to/data (or add --data-root DIR)")
    return "\n".join(lines) + "\n"


def run_missing(
    plan: list[MissingRun],
    out: str | Path,
    *,
    jobs: int = 1,
    threads: int | None = None,
    plugins: Sequence[str] = (),
    device: str | None = None,
    log_dir: str | Path | None = None,
    echo: Callable[[str], None] = print,
    on_finish: Callable[[MissingRun, int], None] | None = None,
) -> list[tuple[MissingRun, int]]:
    """Run (or resume) the plan's runnable entries as ``ssl-bench`` subprocesses, ``jobs`` at a time.

    Each process gets ``threads`` torch threads (default: the CPU count split between the jobs). With more than one
    job, each process writes to ``<log_dir>/<method>-<dataset>-seed<k>-<n>.log`` (default ``<out>/_logs``).
    ``on_finish(entry, exit code)`` is called as each process ends (e.g. to export the run's record at once).
    Returns (entry, exit code) per entry; a failed run does not stop the others.
    """
    todo = [m for m in plan if m.action in ("run", "resume")]
    if not todo:
        return []
    jobs = max(1, int(jobs))
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    logs = Path(log_dir) if log_dir else Path(out) / "_logs"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}

    def launch(index: int, entry: MissingRun) -> tuple[MissingRun, int]:
        args = entry.command(out, plugins)[1:]
        args += ["--threads", str(threads)]
        if device:
            args += ["--device", device]
        if jobs > 1:
            args.append("--no-progress")
        cmd = [sys.executable, "-m", "ssl_bench", *args]
        echo(f"[{index + 1}/{len(todo)}] {' '.join(['ssl-bench', *args])}")
        if jobs == 1:
            code = subprocess.run(cmd, env=env).returncode
        else:
            logs.mkdir(parents=True, exist_ok=True)
            sel = entry.selector
            log = logs / f"{sel.method}-{sel.dataset}-seed{entry.seed}-{index + 1}.log"
            with log.open("w") as fh:
                code = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
        status = "done" if code == 0 else f"FAILED (exit {code})"
        echo(f"[{index + 1}/{len(todo)}] {status}: {entry.selector.describe()}, seed {entry.seed}")
        if on_finish is not None:
            on_finish(entry, code)
        return entry, code

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(lambda item: launch(*item), enumerate(todo)))


register_tables()
