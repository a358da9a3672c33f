"""GPU sweep driver behind ``benchmarks/gpu/sweep.sh`` (read that file's header for usage and the assumptions).

Runs the cells of ``benchmarks/gpu/cells.txt`` (``METHOD SEED [KEY=VALUE ...]`` per line, in priority order) as
parallel ``ssl-bench run`` processes on one device within a wall-clock budget:

1. checks the environment before anything starts (``OUT``, the dataset's data folder, the device);
2. resolves every cell's config in-process (unknown methods and bad ``--set`` values are skipped with a warning);
3. picks the fraction ``F`` of each method's own schedule (``--fraction`` or the largest that lets the first wave
   of ``--jobs`` cells finish in the budget under the cost model below) and runs ``trainer.epochs = round(F x E)``
   (``params.*_epochs`` such as BCP's pre-training scaled alike);
4. launches a cell only while its predicted duration fits before ``budget - margin``; at that point sends SIGINT
   to every run still going (the trainer checkpoints at its next step, ``ssl-bench resume RUN_DIR`` continues),
   then SIGTERM / SIGKILL after a grace period;
5. exports each finished run's record (``ssl_bench.reporting.results.export_records``) into ``$OUT/records`` and
   rewrites ``$OUT/plan.json`` after every event (one log per run in ``$OUT/logs``; ``--pack`` adds
   ``$OUT/sweep.tar.gz`` with plan, records and logs).

Cost model of one run (seconds): ``overhead_s + K x (val_s + steps_per_epoch x sec_per_iter x cost[method])``.
Exit codes: 0 no launched run failed (runs stopped by the budget are not failures), 1 a run failed, 2 bad input,
130 the sweep itself was stopped (SIGINT / SIGTERM: its runs were stopped as at the budget's end).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEFAULT_CELLS = HERE / "cells.txt"
PLAN_VERSION = 1

#: the full schedule the fraction refers to: SSL4MIS's 30,000 iterations = 150 epochs x 200 steps
REFERENCE_EPOCHS = 150

#: Cost-model defaults per --preset (sweep.sh's header states and explains them; flags override each).
#:   sec_per_iter: wall seconds per training iteration of a cost-1.0 method, per run, while --jobs runs share the
#:                 device (ssl4mis: H200, 256^2, batch 12 + 12, ssl4mis-unet width 16, AMP, 8 runs x 2 threads)
#:   overhead_s:   per run: start-up, data loading, and the test evaluation(s) after training
#:   val_s:        one validation pass (every epoch at ssl4mis: 10 val patients)
#:   margin_s:     the budget's last seconds: no run is predicted into them; at their start running runs get SIGINT
#:   grace_s:      seconds a run has, after SIGINT, to checkpoint and exit (then SIGTERM, then SIGKILL)
PROFILES: dict[str, dict[str, float]] = {
    "ssl4mis": {"sec_per_iter": 0.08, "overhead_s": 75.0, "val_s": 4.0, "margin_s": 60.0, "grace_s": 30.0},
    "smoke": {"sec_per_iter": 0.5, "overhead_s": 30.0, "val_s": 1.0, "margin_s": 0.0, "grace_s": 30.0},
}

#: Relative cost of one training iteration: network passes over the batch, 1.0 = one forward + backward of the
#: student on 24 slices (Mean Teacher's student; its teacher's no-grad pass on 12 adds ~0.15). Guesses from the
#: methods' structure (benchmarks/test_bench_methods.py measures the 2D ratios on a CPU); others: DEFAULT_COST.
METHOD_COST: dict[str, float] = {
    "unet": 0.5,  # 12 labelled slices only
    "fully-supervised": 0.5,
    "mean-teacher": 1.15,
    "ua-mt": 2.3,  # + 8 noisy teacher passes on 12 slices
    "coranet": 1.6,
    "bcp": 1.3,
    "unimatch": 2.0,  # weak + feature-perturbed + two strong views
    "abd": 2.5,  # two students
    "cps": 2.0,  # two networks
}
DEFAULT_COST = 1.5
#: steps per epoch assumed where a method's schedule counts full passes (trainer.iters_per_epoch None, UniMatch):
#: ACDC, 7 labelled patients: 1176 unlabelled slices / 12
FULL_PASS_STEPS = 98

PREDICT_EPS = 1e-9


class SweepError(Exception):
    """Bad input or environment: reported as one line, exit code 2."""


# -- cells ---------------------------------------------------------------------------------------------------------


@dataclass
class Cell:
    index: int
    method: str
    seed: int
    sets: dict[str, str]
    line: int
    status: str = "pending"  # pending running finished interrupted failed skipped not-started
    reason: str = ""
    epochs: int | None = None
    full_epochs: int | None = None
    steps_per_epoch: int | None = None
    #: resolved ``params.*_epochs`` values (BCP's pre-training ...): scaled with the fraction
    bases: dict[str, int] = field(default_factory=dict)
    extra_sets: dict[str, str] = field(default_factory=dict)  # what the fraction sets (trainer.epochs, ...)
    predicted_s: float | None = None
    command: list[str] = field(default_factory=list)
    start: str | None = None
    end: str | None = None
    wall_s: float | None = None
    exit_code: int | None = None
    signals: list[str] = field(default_factory=list)
    run_dir: str | None = None
    record: str | None = None
    log: str | None = None
    train_s: float | None = None
    total_steps: int | None = None
    # runtime only
    proc: Any = field(default=None, repr=False)
    t_start: float = field(default=0.0, repr=False)
    log_fh: Any = field(default=None, repr=False)

    @property
    def name(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in self.sets.items())
        return f"{self.method} seed {self.seed}" + (f" [{extra}]" if extra else "")

    def to_json(self, out: Path | None) -> dict[str, Any]:
        def rel(p: str | None) -> str | None:
            if p is None or out is None:
                return p
            try:
                return str(Path(p).resolve().relative_to(out.resolve()))
            except ValueError:
                return p

        d: dict[str, Any] = {
            "index": self.index,
            "method": self.method,
            "seed": self.seed,
            "sets": self.sets,
            "status": self.status,
            "reason": self.reason or None,
            "epochs": self.epochs,
            "full_epochs": self.full_epochs,
            "fraction": None
            if not self.full_epochs or self.epochs is None
            else round(self.epochs / self.full_epochs, 6),
            "steps_per_epoch": self.steps_per_epoch,
            "fraction_sets": self.extra_sets,
            "predicted_s": None if self.predicted_s is None else round(self.predicted_s, 1),
            "command": shlex.join(self.command) if self.command else None,
            "start": self.start,
            "end": self.end,
            "wall_s": self.wall_s,
            "exit_code": self.exit_code,
            "signals": self.signals,
            "run_dir": rel(self.run_dir),
            "record": rel(self.record),
            "log": rel(self.log),
            "train_s": self.train_s,
            "total_steps": self.total_steps,
        }
        if self.train_s and self.total_steps:
            d["train_s_per_iter"] = round(self.train_s / self.total_steps, 5)
        if self.status == "interrupted" and self.run_dir:
            d["resume"] = f"ssl-bench resume {self.run_dir}"
        return d


def read_cells(path: Path) -> list[Cell]:
    """``METHOD SEED [KEY=VALUE ...]`` per line; ``#`` starts a comment."""
    if not path.is_file():
        raise SweepError(f"cells file {path} does not exist")
    cells = []
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split()
        if len(parts) < 2 or not re.fullmatch(r"\d+", parts[1]):
            raise SweepError(f"{path}:{lineno}: expected 'METHOD SEED [KEY=VALUE ...]', got {text!r}")
        sets = {}
        for item in parts[2:]:
            if "=" not in item or not item.split("=", 1)[0]:
                raise SweepError(f"{path}:{lineno}: expected KEY=VALUE, got {item!r}")
            key, value = item.split("=", 1)
            sets[key] = value
        cells.append(Cell(index=len(cells), method=parts[0], seed=int(parts[1]), sets=sets, line=lineno))
    if not cells:
        raise SweepError(f"cells file {path} lists no cells")
    return cells


# -- planning ------------------------------------------------------------------------------------------------------


@dataclass
class Model:
    sec_per_iter: float
    overhead_s: float
    val_s: float

    def duration(self, cell: Cell, epochs: int) -> float:
        cost = METHOD_COST.get(cell.method, DEFAULT_COST)
        steps = cell.steps_per_epoch or FULL_PASS_STEPS
        return self.overhead_s + epochs * (self.val_s + steps * self.sec_per_iter * cost)


def scaled_epochs(cell: Cell, fraction: float) -> tuple[int, dict[str, str]]:
    """Epochs of ``cell`` at ``fraction`` of its schedule, and the ``--set`` values that run it."""
    full = cell.full_epochs or 1
    if fraction >= 1.0:
        return full, {}
    epochs = max(1, round(fraction * full))
    sets: dict[str, str] = {}
    floor = 1
    for key, value in cell.bases.items():  # params.*_epochs (BCP / ABD pre-training) scale with the run
        scaled = max(1, round(fraction * value)) if value > 0 else 0
        sets[key] = str(scaled)
        floor = max(floor, scaled + 1)
    epochs = max(epochs, floor)  # pre-training must stay shorter than the run
    return epochs, {"trainer.epochs": str(epochs), **sets}


def simulate(cells: list[Cell], fraction: float, model: Model, jobs: int, usable_s: float) -> list[float]:
    """Greedy in-order first-fit schedule, as the sweep runs it: predicted end (s) per runnable cell, inf if the
    cell would not be started."""
    slots = [0.0] * jobs
    ends = []
    for cell in cells:
        epochs, _ = scaled_epochs(cell, fraction)
        d = model.duration(cell, epochs)
        i = min(range(jobs), key=lambda k: slots[k])
        if slots[i] + d <= usable_s + PREDICT_EPS:
            slots[i] += d
            ends.append(slots[i])
        else:
            ends.append(math.inf)
    return ends


def choose_fraction(cells: list[Cell], model: Model, jobs: int, waves: int, usable_s: float) -> float | None:
    """The largest k / REFERENCE_EPOCHS (k = 150 .. 1) at which the first ``waves x jobs`` runnable cells all fit;
    None if not even 1 / REFERENCE_EPOCHS does."""
    first = cells[: max(1, waves * jobs)]
    for k in range(REFERENCE_EPOCHS, 0, -1):
        f = k / REFERENCE_EPOCHS
        if all(math.isfinite(e) for e in simulate(first, f, model, jobs, usable_s)):
            return f
    return None


# -- helpers -------------------------------------------------------------------------------------------------------


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def info(msg: str) -> None:
    print(f"[sweep {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="benchmarks/gpu/sweep.sh",
        description="Run the benchmark cells in parallel on one GPU within a wall-clock budget (see the header of "
        "benchmarks/gpu/sweep.sh). OUT (env) is the output folder; DEVICE and DATASET (env) default to cuda, acdc.",
    )
    p.add_argument("--budget-min", type=float, default=8.0, help="wall-clock budget of the whole sweep (default 8)")
    p.add_argument("--jobs", type=int, default=8, help="runs at a time (default 8: 16 cores / --threads 2)")
    p.add_argument("--preset", default="ssl4mis", choices=sorted(PROFILES), help="ssl-bench preset (default ssl4mis)")
    p.add_argument("--fraction", type=float, help="fraction of each method's schedule to run (default: estimated)")
    p.add_argument("--waves", type=int, default=1, help="the estimated fraction fits WAVES x JOBS cells (default 1)")
    p.add_argument("--cells", type=Path, default=DEFAULT_CELLS, help="cells file (default benchmarks/gpu/cells.txt)")
    p.add_argument("--dataset", default=os.environ.get("DATASET", "acdc"), help="dataset (env DATASET; acdc)")
    p.add_argument("--device", default=os.environ.get("DEVICE", "cuda"), help="device of the runs (env DEVICE; cuda)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads per run (default 2)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="for every run")
    p.add_argument("--sec-per-iter", type=float, help="cost model: s per iteration of a cost-1 method, per run")
    p.add_argument("--overhead-s", type=float, help="cost model: start-up + test evaluation seconds per run")
    p.add_argument("--val-s", type=float, help="cost model: seconds per validation pass")
    p.add_argument("--margin-s", type=float, help="budget's last seconds kept free (SIGINT at their start)")
    p.add_argument("--grace-s", type=float, help="seconds after SIGINT before SIGTERM, then SIGKILL")
    p.add_argument("--pack", action="store_true", help="also write $OUT/sweep.tar.gz (plan, records, logs)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit; runs nothing, writes nothing")
    args = p.parse_args(argv)
    if args.budget_min <= 0:
        raise SweepError(f"--budget-min must be > 0, got {args.budget_min}")
    if args.jobs < 1:
        raise SweepError(f"--jobs must be >= 1, got {args.jobs}")
    if args.waves < 1:
        raise SweepError(f"--waves must be >= 1, got {args.waves}")
    if args.fraction is not None and not 0 < args.fraction <= 1:
        raise SweepError(f"--fraction must be in (0, 1], got {args.fraction}")
    for item in args.sets:
        if "=" not in item or not item.split("=", 1)[0]:
            raise SweepError(f"--set {item!r}: expected KEY=VALUE")
    profile = PROFILES[args.preset]
    for key in profile:
        if getattr(args, key) is None:
            setattr(args, key, profile[key])
        elif getattr(args, key) < 0:
            raise SweepError(f"--{key.replace('_', '-')} must be >= 0, got {getattr(args, key)}")
    return args


def check_environment(args: argparse.Namespace) -> Path | None:
    """Fail fast (before importing torch or starting anything): OUT and the dataset's data folder."""
    out = os.environ.get("OUT")
    if args.dataset == "acdc":
        acdc = os.environ.get("SSL_BENCH_ACDC")
        problem = None
        if not acdc:
            problem = "SSL_BENCH_ACDC is not set"
        elif not Path(acdc).is_dir():
            problem = f"SSL_BENCH_ACDC={acdc} is not a folder"
        if problem:
            msg = f"{problem}: point it to the ACDC data (SSL4MIS layout) or set DATASET=cardiac-phantom for a test"
            if not args.dry_run:
                raise SweepError(msg)
            warn(msg + " (the sweep itself will refuse to start)")
    if args.dry_run:
        return Path(out).resolve() if out else None
    if not out:
        raise SweepError("OUT is not set: OUT=/path/to/output bash benchmarks/gpu/sweep.sh ...")
    return Path(out).resolve()


def resolve_cells(cells: list[Cell], args: argparse.Namespace) -> None:
    """Registry check and config resolution in-process: unknown methods / invalid configs become 'skipped'."""
    try:
        from ssl_bench.core.config import parse_set
        from ssl_bench.core.registry import DATASETS, METHODS
        from ssl_bench.training.runner import resolve_config
    except ImportError as exc:
        raise SweepError(
            f"cannot import ssl_bench ({exc}) with {sys.executable}: run `pip install -e .` (on an offline GPU "
            "image: `python3 -m pip install --no-deps --no-build-isolation -e .`) or set PYTHON"
        ) from exc
    if args.dataset not in DATASETS:
        raise SweepError(f"unknown dataset {args.dataset!r}: see `ssl-bench list datasets`")
    global_sets = parse_set(args.sets)
    for cell in cells:
        if cell.method not in METHODS:
            cell.status, cell.reason = "skipped", "method not registered (ssl-bench list methods)"
            warn(
                f"method {cell.method!r} is not registered (ssl-bench list methods); skipping cell {cell.index} "
                f"({cell.name}, line {cell.line})"
            )
            continue
        try:
            cfg = resolve_config(
                cell.method, args.dataset, preset=args.preset, seed=cell.seed, overrides={**cell.sets, **global_sets}
            )
        except Exception as exc:  # noqa: BLE001 - any config error skips the cell, reported
            cell.status, cell.reason = "skipped", f"config: {exc}"
            warn(f"cell {cell.index} ({cell.name}): {exc}; skipping it")
            continue
        cell.full_epochs = int(cfg.trainer.epochs)
        cell.steps_per_epoch = cfg.trainer.iters_per_epoch
        for name in getattr(type(cfg.params), "__dataclass_fields__", {}):
            value = getattr(cfg.params, name)
            if name.endswith("_epochs") and isinstance(value, int) and not isinstance(value, bool):
                cell.bases[f"params.{name}"] = value


def check_device(device: str) -> None:
    if not device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise SweepError(f"--device {device}: torch {torch.__version__} sees no CUDA device (DEVICE=cpu for a test)")


# -- the sweep -----------------------------------------------------------------------------------------------------


class Sweep:
    def __init__(
        self, args: argparse.Namespace, cells: list[Cell], out: Path | None, fraction: float, source: str, t0: float
    ):
        self.args, self.cells, self.out = args, cells, out
        self.fraction, self.fraction_source = fraction, source
        self.model = Model(args.sec_per_iter, args.overhead_s, args.val_s)
        self.budget_s = args.budget_min * 60.0
        self.usable_s = max(0.0, self.budget_s - args.margin_s)
        self.t0 = t0  # the budget counts from the sweep's start, config resolution included
        self.start_iso = datetime.fromtimestamp(time.time() - (time.monotonic() - t0), timezone.utc).isoformat(
            timespec="seconds"
        )
        self.end_iso: str | None = None
        self.stop_reason: str | None = None
        self.signalled: str | None = None
        self.kill_time: float | None = None
        self.runnable = [c for c in cells if c.status == "pending"]
        for c in self.runnable:
            c.epochs, c.extra_sets = scaled_epochs(c, fraction)
            c.predicted_s = self.model.duration(c, c.epochs)
            c.command = self.command(c)

    # ---- commands

    def command(self, cell: Cell) -> list[str]:
        a = self.args
        out_runs = str(self.out / "runs") if self.out else "$OUT/runs"
        cmd = [sys.executable, "-m", "ssl_bench", "run", "--method", cell.method, "--dataset", a.dataset]
        cmd += ["--preset", a.preset, "--seed", str(cell.seed), "--device", a.device, "--no-progress"]
        cmd += ["--threads", str(a.threads), "--out", out_runs]
        sets = {**cell.sets, **dict(s.split("=", 1) for s in a.sets), **cell.extra_sets}
        for key, value in sets.items():
            cmd += ["--set", f"{key}={value}"]
        return cmd

    # ---- plan file

    def plan(self) -> dict[str, Any]:
        a = self.args
        counts: dict[str, int] = {}
        for c in self.cells:
            counts[c.status] = counts.get(c.status, 0) + 1
        return {
            "version": PLAN_VERSION,
            "tool": "benchmarks/gpu/sweep.sh",
            "argv": sys.argv[1:],
            "preset": a.preset,
            "dataset": a.dataset,
            "device": a.device,
            "jobs": a.jobs,
            "threads": a.threads,
            "budget_min": a.budget_min,
            "margin_s": a.margin_s,
            "grace_s": a.grace_s,
            "fraction": round(self.fraction, 6),
            "fraction_source": self.fraction_source,
            "reference": f"fraction of each method's own schedule at --preset {a.preset} "
            f"(ssl4mis reference: {REFERENCE_EPOCHS} epochs x 200 = 30,000 iterations)",
            "assumptions": {
                "sec_per_iter": a.sec_per_iter,
                "overhead_s": a.overhead_s,
                "val_s": a.val_s,
                "method_cost": METHOD_COST,
                "default_cost": DEFAULT_COST,
                "full_pass_steps": FULL_PASS_STEPS,
            },
            "sets": a.sets,
            "cells_file": str(a.cells),
            "start": self.start_iso,
            "end": self.end_iso,
            "stop_reason": self.stop_reason,
            "counts": counts,
            "calibration": self.calibration(),
            "cells": [c.to_json(self.out) for c in self.cells],
        }

    def save_plan(self) -> None:
        if self.out is not None:
            write_json_atomic(self.out / "plan.json", self.plan())

    def calibration(self) -> dict[str, Any] | None:
        """Measured s/iteration (validation included) and overhead of finished runs; the fraction they suggest."""
        done = [c for c in self.cells if c.status == "finished" and c.train_s and c.total_steps and c.wall_s]
        if not done:
            return None
        per = sorted(c.train_s / (c.total_steps * METHOD_COST.get(c.method, DEFAULT_COST)) for c in done)
        over = sorted(max(0.0, c.wall_s - c.train_s) for c in done)
        spi, ovh = per[len(per) // 2], over[len(over) // 2]
        measured = Model(spi, ovh, 0.0)
        suggested = choose_fraction(self.runnable, measured, self.args.jobs, self.args.waves, self.usable_s) or 0.0
        return {
            "runs": len(done),
            "sec_per_iter": round(spi, 5),
            "overhead_s": round(ovh, 1),
            "note": "medians over finished runs; sec_per_iter includes validation (use --val-s 0 with it)",
            "suggested": f"--sec-per-iter {spi:.4f} --overhead-s {ovh:.0f} --val-s 0 (fraction {suggested:.4f}) "
            f"for --budget-min {self.args.budget_min:g} --jobs {self.args.jobs}",
        }

    # ---- dry run

    def print_plan(self) -> None:
        a = self.args
        print(
            f"GPU sweep plan: preset {a.preset}, dataset {a.dataset}, device {a.device}, {a.jobs} jobs x "
            f"{a.threads} threads, budget {a.budget_min:g} min (last {a.margin_s:g} s kept free)"
        )
        print(
            f"fraction {self.fraction:.4f} of each method's schedule ({self.fraction_source}); cost model: "
            f"{a.overhead_s:g} s + epochs x ({a.val_s:g} s + steps x {a.sec_per_iter:g} s x cost)"
        )
        predicted = simulate(self.runnable, self.fraction, self.model, a.jobs, self.usable_s)
        ends = dict(zip((c.index for c in self.runnable), predicted))
        print(f"{'#':>3}  {'cell':<32} {'epochs':>9} {'pred. min':>9}  plan")
        for c in self.cells:
            if c.status == "skipped":
                print(f"{c.index:>3}  {c.name:<32} {'':>9} {'':>9}  skip: {c.reason}")
                continue
            end = ends[c.index]
            what = f"ends ~{end / 60:.1f} min" if math.isfinite(end) else "does not fit: not started"
            print(f"{c.index:>3}  {c.name:<32} {f'{c.epochs}/{c.full_epochs}':>9} {c.predicted_s / 60:>9.1f}  {what}")
        for c in self.runnable:
            print(f"  [{c.index}] {shlex.join(c.command)}")

    # ---- running

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def launch(self, cell: Cell) -> None:
        assert self.out is not None
        logs = self.out / "logs"
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{cell.index:02d}-{cell.method}-seed{cell.seed}")
        cell.log = str(logs / f"{name}.log")
        cell.log_fh = open(cell.log, "w")  # noqa: SIM115 - closed when the run ends
        cell.log_fh.write(f"$ {shlex.join(cell.command)}\n")
        cell.log_fh.flush()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(self.args.threads)}
        env["MKL_NUM_THREADS"] = str(self.args.threads)
        cell.proc = subprocess.Popen(
            cell.command,
            cwd=ROOT,
            stdout=cell.log_fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=os.setpgrp,  # own process group: a terminal's Ctrl-C reaches the sweep, which forwards it
        )
        cell.status, cell.start, cell.t_start = "running", now_iso(), time.monotonic()
        info(
            f"started [{cell.index}] {cell.name}: {cell.epochs}/{cell.full_epochs} epochs, "
            f"~{cell.predicted_s / 60:.1f} min predicted (log {Path(cell.log).name})"
        )

    def finish(self, cell: Cell, rc: int) -> None:
        cell.exit_code, cell.end = rc, now_iso()
        cell.wall_s = round(time.monotonic() - cell.t_start, 1)
        cell.log_fh.close()
        text = Path(cell.log).read_text(errors="replace")
        m = re.search(r"^run folder: (.+)$", text, re.M)
        cell.run_dir = m.group(1).strip() if m else None
        manifest = {}
        if cell.run_dir and (Path(cell.run_dir) / "manifest.json").exists():
            try:
                manifest = json.loads((Path(cell.run_dir) / "manifest.json").read_text())
            except (OSError, json.JSONDecodeError):
                manifest = {}
        cell.train_s = (manifest.get("timings") or {}).get("train_s")
        cell.total_steps = (manifest.get("data") or {}).get("total_steps")
        if rc == 0 and manifest.get("status") == "finished":
            cell.status = "finished"
            self.export(cell)
        elif cell.signals:
            cell.status = "interrupted"
            where = "" if cell.run_dir else " before its run folder existed (start it again)"
            cell.reason = f"stopped at the budget's end ({self.stop_reason}){where}"
        else:
            cell.status = "failed"
            tail = [ln for ln in text.splitlines() if ln.strip()][-1:] or ["(empty log)"]
            cell.reason = f"exit code {rc}: {tail[0][:300]}"
        info(f"ended [{cell.index}] {cell.name}: {cell.status} (exit {rc}, {cell.wall_s:.0f} s)")

    def export(self, cell: Cell) -> None:
        from ssl_bench.reporting.results import export_records

        assert self.out is not None and cell.run_dir
        written = export_records([cell.run_dir], dest=self.out / "records", root=self.out / "runs")
        if written:
            cell.record = str(written[0])
        else:
            warn(f"cell {cell.index}: export_records wrote nothing for {cell.run_dir}")

    def signal_running(self, sig: signal.Signals) -> None:
        for c in self.cells:
            if c.status == "running" and c.proc.poll() is None:
                try:
                    os.kill(c.proc.pid, sig)
                    c.signals.append(f"{sig.name} at {self.elapsed():.0f} s")
                except ProcessLookupError:
                    pass

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            self.kill_time = self.elapsed()
            running = [c for c in self.cells if c.status == "running"]
            if running:
                info(f"{reason}: SIGINT to {len(running)} run(s); each checkpoints and exits (ssl-bench resume)")
            self.signal_running(signal.SIGINT)
            self.save_plan()

    def run(self) -> int:
        assert self.out is not None
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        (self.out / "runs").mkdir(parents=True, exist_ok=True)
        (self.out / "records").mkdir(parents=True, exist_ok=True)

        def on_signal(signum: int, frame: Any) -> None:
            self.signalled = self.signalled or f"sweep got {signal.Signals(signum).name}"

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        info(
            f"{len(self.runnable)} cell(s) to run, fraction {self.fraction:.4f}, budget {self.args.budget_min:g} "
            f"min, {self.args.jobs} job(s); plan: {self.out / 'plan.json'}"
        )
        self.save_plan()
        pending = list(self.runnable)
        termed = killed = False
        try:
            while True:
                changed = False
                if self.signalled:
                    self.request_stop(self.signalled)
                if self.stop_reason is None and self.elapsed() >= self.usable_s:
                    self.request_stop(f"budget end ({self.args.budget_min:g} min - {self.args.margin_s:g} s margin)")
                running = [c for c in self.cells if c.status == "running"]
                while self.stop_reason is None and pending and len(running) < self.args.jobs:
                    cell = pending.pop(0)
                    if self.elapsed() + cell.predicted_s > self.usable_s + PREDICT_EPS:
                        cell.status = "not-started"
                        cell.reason = (
                            f"predicted {cell.predicted_s / 60:.1f} min, "
                            f"{max(0.0, self.usable_s - self.elapsed()) / 60:.1f} min left"
                        )
                        info(f"not starting [{cell.index}] {cell.name}: {cell.reason}")
                    else:
                        self.launch(cell)
                        running.append(cell)
                    changed = True
                for c in running:
                    rc = c.proc.poll()
                    if rc is not None:
                        self.finish(c, rc)
                        changed = True
                running = [c for c in self.cells if c.status == "running"]
                if self.stop_reason is not None:
                    for c in pending:
                        c.status, c.reason = "not-started", f"sweep stopped ({self.stop_reason})"
                    pending = []
                    waited = self.elapsed() - (self.kill_time or 0.0)
                    if running and not termed and waited > self.args.grace_s:
                        info("grace period over: SIGTERM")
                        self.signal_running(signal.SIGTERM)
                        termed = True
                    elif running and termed and not killed and waited > self.args.grace_s + 10:
                        info("SIGKILL")
                        self.signal_running(signal.SIGKILL)
                        killed = True
                if not running and not pending:
                    break
                if changed:
                    self.save_plan()
                time.sleep(0.5)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        self.end_iso = now_iso()
        self.save_plan()
        if self.args.pack:
            self.pack()
        counts = self.plan()["counts"]
        info("done: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + f"; plan: {self.out / 'plan.json'}")
        if counts.get("failed"):
            return 1
        return 130 if self.signalled else 0

    def pack(self) -> None:
        assert self.out is not None
        target = self.out / "sweep.tar.gz"
        with tarfile.open(target, "w:gz") as tar:
            for name in ("plan.json", "records", "logs"):
                if (self.out / name).exists():
                    tar.add(self.out / name, arcname=name)
        info(f"packed plan, records and logs: {target} ({target.stat().st_size / 1e6:.2f} MB)")


def main(argv: list[str] | None = None) -> int:
    t0 = time.monotonic()
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
        out = check_environment(args)
        cells = read_cells(args.cells)
        resolve_cells(cells, args)
        runnable = [c for c in cells if c.status == "pending"]
        if not runnable:
            raise SweepError("no runnable cell: every cell was skipped (see the warnings)")
        # what is left of the budget once the runs can start (resolution took some of it; 5 s to launch them)
        usable = max(0.0, args.budget_min * 60.0 - args.margin_s - (time.monotonic() - t0) - 5.0)
        model = Model(args.sec_per_iter, args.overhead_s, args.val_s)
        if args.fraction is not None:
            fraction, source = args.fraction, "--fraction"
        elif args.preset == "smoke":
            fraction, source = 1.0, "the smoke preset runs whole"
        else:
            fraction = choose_fraction(runnable, model, args.jobs, args.waves, usable)
            if fraction is None:
                fraction = 1 / REFERENCE_EPOCHS
                warn(
                    f"even 1/{REFERENCE_EPOCHS} of the schedule does not let the first {args.waves} x {args.jobs} "
                    "cells fit the budget: running that; cells predicted past the budget are not started"
                )
            source = (
                f"estimated: the largest k/{REFERENCE_EPOCHS} at which the first {args.waves} x {args.jobs} "
                "cells fit the budget under the cost model"
            )
        sweep = Sweep(args, cells, out, fraction, source, t0)
        if args.dry_run:
            sweep.print_plan()
            return 0
        check_device(args.device)
        if out is not None and (out / "plan.json").exists():
            raise SweepError(f"{out / 'plan.json'} exists: use a new OUT (finished runs are never re-run here)")
        return sweep.run()
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
