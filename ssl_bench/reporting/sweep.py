"""Sweeps: a grid of run settings (``ssl-bench sweep SPEC.yaml`` / ``--grid key=a,b``) expanded to runs, planned
against the results tree (finished runs skipped, killed ones resumed) and run by the same executors as
``table --run-missing``: local workers (:func:`~ssl_bench.reporting.tables.missing.run_missing`) or a SLURM job
array through submitit (:mod:`ssl_bench.reporting.slurm`).

Spec file (every key optional but a method, from ``grid`` or ``set``)::

    preset: smoke                 # default cpu
    grid:                         # the cartesian product of these lists
      method: [unet, mean-teacher]
      seed: [0, 1]
      optim.lr: [1.0e-3, 3.0e-4]  # any config key, as --set
    set: {trainer.epochs: 2}      # fixed overrides of every run
    out: results/runs
    executor: local               # or slurm
    jobs: 2                       # local workers
    slurm: {partition: gpu, time: 240, gpus: 1, cpus: 8, mem: 32G, array_parallelism: 16}

Grid keys ``method``, ``dataset``, ``labeled``, ``seed``, ``preset``, ``backbone`` and ``estimator`` are the
``ssl-bench run`` flags; every other key is a config override.
"""

from __future__ import annotations

import itertools
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssl_bench.core.config import read_yaml_mapping
from ssl_bench.core.errors import ConfigError
from ssl_bench.reporting.tables.cells import Selector, resolve_selector
from ssl_bench.reporting.tables.missing import MissingRun, classify_killed, finished_runs_of

#: grid keys that are ``ssl-bench run`` flags (the rest are ``--set`` keys)
FLAG_KEYS = ("method", "dataset", "labeled", "seed", "preset", "backbone", "estimator")
SPEC_KEYS = ("preset", "grid", "set", "out", "executor", "jobs", "slurm")
EXECUTORS = ("local", "slurm")


@dataclass
class SweepSpec:
    """A grid (key -> values, in order) and the fixed settings of every run."""

    grid: dict[str, list[Any]] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    preset: str = "cpu"
    out: str | None = None
    executor: str = "local"
    jobs: int = 1
    slurm: dict[str, Any] = field(default_factory=dict)


def load_spec(path: str | Path | None, grid_args: list[str] = (), set_args: dict[str, Any] | None = None) -> SweepSpec:
    """The spec file (if any) with ``--grid KEY=a,b`` items and ``--set`` overrides added (flags win)."""
    spec = SweepSpec()
    if path is not None:
        data = read_yaml_mapping(path, "sweep spec", keys=SPEC_KEYS)
        unknown = sorted(set(data) - set(SPEC_KEYS))
        if unknown:
            raise ConfigError(f"sweep spec {path}: unknown key(s) {', '.join(unknown)}; use {', '.join(SPEC_KEYS)}")
        grid = data.get("grid") or {}
        if not isinstance(grid, dict):
            raise ConfigError(f"sweep spec {path}: grid must map keys to lists of values")
        spec.grid = {str(k): v if isinstance(v, list) else [v] for k, v in grid.items()}
        spec.fixed = dict(data.get("set") or {})
        spec.preset = str(data.get("preset", spec.preset))
        spec.out = data.get("out")
        spec.executor = str(data.get("executor", spec.executor))
        spec.jobs = int(data.get("jobs", spec.jobs))
        spec.slurm = dict(data.get("slurm") or {})
    for item in grid_args:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise ConfigError(f"--grid {item!r}: expected KEY=V1,V2,..., e.g. --grid seed=0,1,2")
        spec.grid[key.strip()] = [v.strip() for v in values.split(",") if v.strip()]
    spec.fixed.update(set_args or {})
    if "preset" in spec.fixed:
        spec.preset = str(spec.fixed.pop("preset"))
    if spec.executor not in EXECUTORS:
        raise ConfigError(f"sweep executor {spec.executor!r}: use {' or '.join(EXECUTORS)}")
    empty = [k for k, v in spec.grid.items() if not v]
    if empty:
        raise ConfigError(f"sweep grid key(s) {', '.join(empty)} have no values")
    return spec


def expand(spec: SweepSpec) -> list[tuple[Selector, int]]:
    """Every (setting, seed) of the grid, in grid order (the last key varies fastest); duplicates dropped."""
    keys = list(spec.grid)
    out: list[tuple[Selector, int]] = []
    for combo in itertools.product(*(spec.grid[k] for k in keys)) if keys else [()]:
        values = {**spec.fixed, **dict(zip(keys, combo))}
        item = _selector(values, spec.preset)
        if item not in out:
            out.append(item)
    return out


def _selector(values: dict[str, Any], preset: str) -> tuple[Selector, int]:
    from ssl_bench.core.registry import normalize_name

    if "method" not in values:
        raise ConfigError("a sweep needs a method: --grid method=a,b or method in the spec's grid/set")
    preset = str(values.pop("preset", preset))
    method, dataset = str(values.pop("method")), str(values.pop("dataset", "cardiac-phantom"))
    try:
        seed = int(values.pop("seed", 0))
        labeled = values.pop("labeled", None)
        labeled = None if labeled is None else float(labeled)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"sweep: seed must be an integer and labeled a number ({exc})") from exc
    if labeled is None:  # the resolved default of this method/dataset/preset (a dataset preset may set it)
        from ssl_bench.training.runner import resolve_config

        labeled = float(resolve_config(method, dataset, preset=preset).dataset.labeled)
    backbone, estimator = values.pop("backbone", None), values.pop("estimator", None)
    lists = [k for k, v in values.items() if isinstance(v, (list, dict))]
    if lists:
        raise ConfigError(
            f"sweep: {', '.join(lists)}: grid and set values must be scalars (a list value is a grid axis)"
        )
    extra = tuple(sorted((str(k), v) for k, v in values.items()))
    sel = Selector(
        dataset=normalize_name(dataset),
        method=normalize_name(method),
        labeled=labeled,
        preset=preset,
        backbone=None if backbone is None else str(backbone),
        estimator=None if estimator is None else str(estimator),
        extra=extra,
    )
    return sel, seed


def plan_sweep(spec: SweepSpec, out: str | Path, *, stale_s: float = 600.0) -> list[MissingRun]:
    """One entry per grid point: ``done`` (a finished run exists under ``out``), ``resume`` (a killed one),
    ``active`` (one still writing) or ``run``. A grid point that cannot be resolved is refused before any work."""
    from ssl_bench.reporting.results import find_runs

    unfinished = [r for r in find_runs(out) if not r.finished]
    plan = []
    for sel, seed in expand(spec):
        expected, reason = resolve_selector(sel)
        if expected is None:
            raise ConfigError(f"sweep point {sel.describe()}, seed {seed}: {reason}")
        entry = MissingRun(sel, seed, [], "run")
        finished = finished_runs_of(entry, out)
        if finished:
            entry.action, entry.run_dir = "done", max(finished, key=lambda r: r.run_id).path
            entry.reason = "finished"
        else:
            classify_killed(entry, unfinished, stale_s)
        plan.append(entry)
    return plan


def render_plan(plan: list[MissingRun], out: str | Path, plugins: list[str] = ()) -> str:
    """The plan as text: counts, then one line per grid point with its action and command."""
    counts = {a: sum(m.action == a for m in plan) for a in ("run", "resume", "active", "done")}
    lines = [
        f"# sweep: {len(plan)} run(s): {counts['run']} to start, {counts['resume']} to resume, "
        f"{counts['done']} finished (skipped), {counts['active']} still running (skipped); results under {out}"
    ]
    for m in plan:
        if m.action in ("run", "resume"):
            lines.append(f"{m.action:<7} {shlex.join(m.command(out, plugins))}")
        else:
            lines.append(f"# {m.action:<6} {m.selector.describe()}, seed {m.seed}: {m.run_dir}")
    return "\n".join(lines) + "\n"
