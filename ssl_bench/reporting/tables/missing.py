"""Missing runs: the (setting, seed) pairs a table still needs (``ssl-bench table --missing``), and running or
resuming them (``--run-missing``)."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssl_bench.reporting.tables.cells import Selector, TableResult, literal_expected, matches, resolve_selector

#: orders of :func:`plan_missing` (``ssl-bench table --order``)
MISSING_ORDERS = ("row", "seed")


@dataclass
class MissingRun:
    """A (setting, seed) that some cell needs and no finished run provides."""

    selector: Selector
    seed: int
    rows: list[str]
    action: str  # "run", "resume", "active" (a run still writing), "blocked" (not runnable)
    reason: str = ""
    run_dir: Path | None = None
    #: median train + test seconds of the finished runs of the same setting (any seed), and how many there are
    cost_s: float | None = None
    cost_runs: int = 0

    def command(self, out: str | Path | None, plugins: Sequence[str] = ()) -> list[str]:
        if self.action == "resume" and self.run_dir is not None:
            return ["ssl-bench", "resume", str(self.run_dir), *[a for p in plugins for a in ("--plugin", str(p))]]
        return self.selector.command(self.seed, out, plugins)


def plan_missing(
    result: TableResult,
    runs: list[Any] | None = None,
    *,
    stale_s: float = 600.0,
    order: str = "row",
) -> list[MissingRun]:
    """The runs that would fill the table's empty (seed-incomplete) cells, one per (setting, seed).

    A killed run of the same setting (manifest status running/interrupted/failed) in a results folder is resumed
    instead of started again, unless its status is ``running`` and its files changed within ``stale_s`` seconds
    (then it is probably still running: action ``active``, skipped).

    Resumes come first. Then ``order="row"``: row by row, every seed of a row before the next row;
    ``order="seed"``: the first missing seed of every row, then the next seed, ... — a long sweep stopped half-way
    leaves a run in every row rather than all seeds of the first rows.
    """
    if order not in MISSING_ORDERS:
        raise ValueError(f"order must be one of {', '.join(MISSING_ORDERS)}, got {order!r}")
    from ssl_bench.reporting.results import find_runs

    all_runs = runs if runs is not None else find_runs(result.results_dirs)
    unfinished = [r for r in all_runs if not r.finished]
    finished = [r for r in all_runs if r.finished]
    costs: dict[Selector, tuple[float | None, int]] = {}  # per setting, shared by its seeds
    plan: dict[tuple[Selector, int], MissingRun] = {}
    row_index = {r.id: i for i, r in enumerate(result.spec.rows)}
    first_row: dict[Selector, int] = {}
    for cell in result.cells.values():
        if cell.selector is None:
            continue
        have = {r.get("seed") for r in (*cell.runs, *cell.unscored)}  # a finished run is not run again
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
                classify_killed(entry, unfinished, stale_s)
                if cell.selector not in costs:
                    costs[cell.selector] = setting_cost(cell.selector, finished)
                entry.cost_s, entry.cost_runs = costs[cell.selector]
            plan[key] = entry
    actions = {"resume": 0, "run": 1, "active": 2, "blocked": 3}

    def key(m: MissingRun) -> tuple:
        setting = (first_row[m.selector], m.selector.describe())
        return (actions[m.action], *((m.seed, *setting) if order == "seed" else (*setting, m.seed)))

    return sorted(plan.values(), key=key)


def classify_killed(entry: MissingRun, unfinished: list[Any], stale_s: float) -> MissingRun:
    """Set ``entry``'s action from the unfinished runs of its setting and seed (newest first): ``resume`` a killed
    one, ``active`` when its status is ``running`` and its files changed within ``stale_s`` seconds, else keep
    ``run``. Shared by ``table --run-missing`` and ``ssl-bench sweep``."""
    expected, _ = resolve_selector(entry.selector)
    killed = sorted(
        (r for r in unfinished if r.get("seed") == entry.seed and matches(r, expected or {})),
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
    return entry


def setting_cost(selector: Selector, finished: list[Any]) -> tuple[float | None, int]:
    """``(median training + test seconds, count)`` of the ``finished`` runs of ``selector``'s setting (any seed), as
    their manifests recorded them on their own hosts and threads; ``(None, 0)`` where there is none."""
    expected = _expected(selector)
    times = []
    for run in finished:
        timings = run.manifest.get("timings") or {}
        if timings.get("train_s") is not None and matches(run, expected):
            times.append(float(timings["train_s"]) + float(timings.get("test_eval_s") or 0.0))
    return (float(statistics.median(times)), len(times)) if times else (None, 0)


def _expected(selector: Selector) -> dict[str, Any]:
    """The config values a run of ``selector``'s setting has (its own values where it cannot be resolved here)."""
    return resolve_selector(selector)[0] or literal_expected(selector)


def render_costs(plan: list[MissingRun]) -> list[str]:
    """``--missing``'s cost block: per setting, the measured time of one run and the runs left; then the total."""
    todo = [m for m in plan if m.action in ("run", "resume")]
    if not todo:
        return []
    lines = ["# cost per run (median train + test time of the setting's finished runs, as measured on their hosts):"]
    settings: dict[Selector, list[MissingRun]] = {}
    for m in todo:
        settings.setdefault(m.selector, []).append(m)
    known, unknown = 0.0, 0
    for selector, items in settings.items():
        first = items[0]
        if first.cost_s is None:
            lines.append(f"#   {selector.describe()}: no finished run yet ({len(items)} to run)")
            unknown += len(items)
            continue
        known += first.cost_s * len(items)
        lines.append(
            f"#   {selector.describe()}: {_fmt_duration(first.cost_s)} (from {first.cost_runs} run(s)) x "
            f"{len(items)} to run"
        )
    total = f"# total: {_fmt_duration(known)} of runs one after another"
    if unknown:
        total += f", plus {unknown} run(s) of settings with no finished run yet"
    lines.append(total + " (resumed runs counted in full; parallel jobs share the cores)")
    return lines


def _fmt_duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 120 else f"{seconds / 3600:.1f} h"


def finished_runs_of(entry: MissingRun, results_dir: str | Path | Iterable[str | Path]) -> list[Any]:
    """The finished runs under ``results_dir`` that fill ``entry`` (its setting and seed)."""
    from ssl_bench.reporting.results import find_runs

    expected = _expected(entry.selector)
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
    lines += render_costs(plan)
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
    paper_only = [r.label for r in result.spec.rows if r.paper_only and not r.source]
    if paper_only:
        lines.append(f"# paper-only rows (results cited by the paper, nothing to run): {', '.join(paper_only)}")
    reported = [r.label for r in result.spec.rows if r.paper_only and r.source]
    if reported:
        lines.append(f"# reference rows (published numbers, nothing to run): {'; '.join(reported)}")
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
        cmd = entry_argv(entry, out, plugins, threads=threads, device=device, quiet=jobs > 1)
        echo(f"[{index + 1}/{len(todo)}] {' '.join(['ssl-bench', *cmd[3:]])}")
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


def entry_argv(
    entry: MissingRun,
    out: str | Path,
    plugins: Sequence[str] = (),
    *,
    threads: int | None = None,
    device: str | None = None,
    quiet: bool = False,
) -> list[str]:
    """The ``python -m ssl_bench run|resume ...`` command line of one plan entry (local workers and SLURM tasks)."""
    args = entry.command(out, plugins)[1:]
    if threads:
        args += ["--threads", str(threads)]
    if device:
        args += ["--device", device]
    if quiet:
        args.append("--no-progress")
    return [sys.executable, "-m", "ssl_bench", *args]
