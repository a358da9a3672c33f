"""Cells: which finished runs fill a table cell (row x column), and their aggregate over seeds.

A *cell* (row x column) selects finished runs by their ``config.yaml``: the run's resolved config must equal the
cell's (``ssl-bench run`` with the cell's method, dataset, budget, preset, backbone, estimator, alpha and ``set``
keys, resolved by the current code), every key but the seed and a few that cannot change scores (``UNMATCHED_KEYS``).
So a run made with an extra ``--set trainer.epochs=100``, or before a preset changed, fills no cell of the plain
preset. One run per seed (the newest if several). The cell value is, per run, the mean over test cases (per
class, or the foreground mean) of the column's checkpoint (:func:`scores_folder`: ``eval/test`` or
``eval/test-last``), then mean ± sample std (ddof=1) over the seeds, with n. Paper values and Δ = measured − paper
are shown beside.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssl_bench.core.config import format_config_value
from ssl_bench.core.errors import SSLBenchError
from ssl_bench.core.registry import normalize_name
from ssl_bench.reporting.tables.spec import CHECKPOINTS, OVERLAP, ColumnSpec, RowSpec, TableSpec

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
    "trainer.loggers",
    "trainer.stop_on_nan",
    "eval.batch_size",
    "eval.metrics_backend",
)
#: what a key an older ssl-bench did not write meant, where the option was added later with another value under some
#: preset: CoraNet (and its Table IV ablations) gained ``params.loss`` and ``params.st_loss`` when the ssl4mis /
#: cpu-bench presets moved its main head to the recipe's CE + Dice; its runs without them trained with Eq. 1's and
#: Eq. 7's CE. Any other absent key is skipped (it had the default's effect).
ABSENT_MEANS: dict[str, Any] = {"params.loss": "ce", "params.st_loss": "ce"}


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
        got = run.get(key, ABSENT_MEANS.get(key, missing))
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
    return {key: run.get(key, ABSENT_MEANS.get(key)) for key in differing}


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
    #: matched runs (one per seed) without the column checkpoint's scores (e.g. no eval/test-last): the cell stays
    #: empty for them, and they are not missing runs (running them again would not add those scores)
    unscored: list[Any] = field(default_factory=list)
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
    #: per distance column key: the units its runs' summary.json give (``spacing_unit``: "mm" or "voxel")
    distance_units: dict[str, set[str]] = field(default_factory=dict)
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

    def unit_of(self, col: ColumnSpec) -> tuple[str, bool]:
        """``(unit, read from the runs)`` of a column: "%" for overlap metrics, "voxel" for ``*_vox``; for the other
        distances the unit the runs' summary.json record, or, before any run, the dataset's default
        (``spacing_unit`` of its adapter class; "mm or voxel" where unknown)."""
        if col.metric in OVERLAP:
            return "%", True
        if col.metric.endswith("_vox"):
            return "voxel", True
        seen = self.distance_units.get(col.key)
        if seen:
            return "/".join(sorted(seen)), True
        from ssl_bench.core.registry import DATASETS

        names = {c.selector.dataset for c in self.cells.values() if c.column.key == col.key and c.selector}
        names = names or {map_dataset(col.dataset or self.spec.dataset, self.dataset_map)}
        units = {DATASETS.get(n).spacing_unit if n in DATASETS else "mm or voxel" for n in names}
        return "/".join(sorted(units)), False

    @property
    def setting(self) -> str:
        """``preset `cpu``` plus the ``--set`` keys, for titles."""
        text = f"preset `{self.preset}`"
        if self.overrides:
            text += ", " + " ".join(f"`--set {k}={format_config_value(v)}`" for k, v in self.overrides.items())
        return text


def scores_folder(run: Any, checkpoint: str = "selected") -> str | None:
    """The ``eval/<folder>`` holding ``run``'s test scores of ``checkpoint`` (a column's), None if it has none:
    ``selected``: ``test`` (the model the run selected: best validation Dice for ``trainer.select`` best-val/both,
    the last model if validation never ran or for ``select=last``); ``last``: ``test-last`` (written by
    ``select=both``), else ``test`` where its summary says the last model was tested."""
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {list(CHECKPOINTS)}, got {checkpoint!r}")
    folder = CHECKPOINTS[checkpoint]
    if (Path(run.path) / "eval" / folder / "per_case.csv").exists():
        return folder
    if checkpoint == "last" and str(run.summary().get("checkpoint", "")).startswith("last"):
        return "test"
    return None


def _scores(run: Any, checkpoint: str) -> Any:
    """``run``'s per-case scores of ``checkpoint`` (an empty frame if it has none)."""
    folder = scores_folder(run, checkpoint)
    if folder is None:
        import pandas as pd

        return pd.DataFrame(columns=["case", "class"])
    return run.per_case() if folder == "test" else run.per_case(folder)


def summary_of(run: Any, checkpoint: str = "selected") -> dict[str, Any]:
    """``run``'s summary.json of ``checkpoint`` ({} if it has none)."""
    folder = scores_folder(run, checkpoint)
    return {} if folder is None else run.summary() if folder == "test" else run.summary(folder)


def run_value(run: Any, metric: str, cls: int | None, checkpoint: str = "selected") -> float:
    """Mean over test cases of ``metric`` for class ``cls`` (NaN cases skipped), or the foreground mean (``None``):
    the mean over classes of those per-class means (as ``summary.json``'s ``foreground_mean``); of the model
    ``checkpoint`` names (:func:`scores_folder`; NaN if the run has no scores of it)."""
    pc = _scores(run, checkpoint)
    if metric not in pc.columns:
        return math.nan
    per_class = pc.groupby("class")[metric].mean()  # pandas skips NaN
    if cls is not None:
        return float(per_class.get(cls, math.nan))
    finite = per_class.dropna()
    return float(finite.mean()) if len(finite) else math.nan


def case_values(run: Any, metric: str, cls: int | None, checkpoint: str = "selected") -> Any:
    """Per-case values (a Series indexed by case) of ``metric`` for class ``cls``, or the mean over classes, of the
    model ``checkpoint`` names (empty if the run has no scores of it)."""
    pc = _scores(run, checkpoint)
    if metric not in pc.columns:
        import pandas as pd

        return pd.Series(dtype=float)
    if cls is not None:
        return pc[pc["class"] == cls].set_index("case")[metric].astype(float)
    return pc.groupby("case")[metric].mean()
