"""``ssl-bench sweep``: a grid of runs, locally (``--jobs N``) or as one SLURM job array (submitit); plus the
executor options shared with ``ssl-bench table --run-missing``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

SWEEP_EPILOG = """\
A grid expands to one run per combination (the cartesian product); finished runs under --out are skipped,
killed ones resumed, so re-running the same sweep continues it.

examples:
  ssl-bench sweep --grid method=unet,mean-teacher --grid seed=0,1 --preset smoke --dry-run
  ssl-bench sweep --grid method=unet --grid optim.lr=1e-3,3e-4 --set trainer.epochs=5 --jobs 2
  ssl-bench sweep benchmarks/sweep_example.yaml                       # the grid in a file
  ssl-bench sweep SPEC.yaml --executor slurm --partition gpu --gpus 1 --cpus 8 --mem 32G --time 240
  ssl-bench sweep SPEC.yaml --executor slurm --slurm-profile cluster.yaml --dry-run   # prints the sbatch file

SPEC.yaml keys (all optional; flags win):
  preset: ssl4mis                                   # of every run (default cpu)
  grid: {method: [unet, mean-teacher], seed: [0, 1, 2], labeled: [3, 7], optim.lr: [1.0e-3, 3.0e-4]}
  set: {trainer.epochs: 50}                         # fixed overrides (as --set)
  out: results/runs
  executor: local | slurm
  jobs: 2                                           # local workers
  slurm: {partition: gpu, time: 240, gpus: 1, cpus: 8, mem: 32G, array_parallelism: 16, account: X, qos: X,
          constraint: X, setup: [module load cuda], signal_delay_s: 120, max_timeouts: 3}
(--slurm-profile FILE.yaml holds the same keys as `slurm:`; flags override both.)

slurm: one array job (--array-parallelism tasks at once), one log file per task under --log-dir
(default <out>/_slurm); a pre-empted or timed-out task checkpoints its run and is requeued, resuming its own
run folder. Needs submitit: pip install "ssl-bench[slurm]".
"""


def add_executor_args(p: argparse.ArgumentParser, *, jobs_help: str) -> None:
    """How the runs are launched (sweep and table --run-missing): local workers, threads, device, staleness,
    --executor and the SLURM resource options."""
    g = p.add_argument_group("executor")
    g.add_argument("--jobs", type=int, default=None, help=jobs_help)
    g.add_argument("--threads", type=int, default=None, help="local: torch threads per run (default: cores / jobs)")
    g.add_argument("--device", default=None, help="--device passed to the runs (default: theirs, auto)")
    g.add_argument(
        "--stale-after",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="a run with status 'running' whose files are older than this is resumed; a fresher one is assumed "
        "to be still running and left alone (default 600)",
    )
    g.add_argument(
        "--executor",
        choices=["local", "slurm"],
        default=None,
        help="local: subprocesses here, --jobs at a time (default); slurm: one submitit job array",
    )
    g.add_argument(
        "--slurm-profile", type=Path, default=None, metavar="FILE.yaml", help="SLURM options as YAML (keys below)"
    )
    g.add_argument("--partition", default=None, help="SLURM partition")
    g.add_argument("--time", type=int, default=None, metavar="MIN", help="minutes per task (default 240)")
    g.add_argument("--gpus", type=int, default=None, help="GPUs per task (default 1)")
    g.add_argument("--cpus", type=int, default=None, help="CPUs per task (default 4)")
    g.add_argument("--mem", default=None, help="memory per task, e.g. 32G (default 16G)")
    g.add_argument("--array-parallelism", type=int, default=None, metavar="N", help="tasks at once (default 32)")
    g.add_argument("--log-dir", type=Path, default=None, help="per-task logs (default <out>/_slurm or <out>/_logs)")
    g.add_argument("--wait", action="store_true", help="slurm: wait for the array to end (default: submit and return)")
    # not user-facing: submitit's local executor (tests, and trying the SLURM path on one machine)
    g.add_argument("--submitit-cluster", choices=["slurm", "local", "debug"], default=None, help=argparse.SUPPRESS)


def slurm_options(args: argparse.Namespace, base: dict[str, Any] | None = None) -> Any:
    """The SLURM options: ``base`` (a sweep spec's ``slurm`` section) < ``--slurm-profile`` < the flags."""
    from ssl_bench.reporting.slurm import load_profile

    return load_profile(
        args.slurm_profile,
        base,
        partition=args.partition,
        time=args.time,
        gpus=args.gpus,
        cpus=args.cpus,
        mem=args.mem,
        array_parallelism=args.array_parallelism,
    )


def submit_and_report(plan: list, out: Path, args: argparse.Namespace, opts: Any) -> int:
    """Submit the plan's runnable entries as one array; with ``--wait`` (or a local cluster), wait and report."""
    from ssl_bench.reporting.slurm import submit_plan

    cluster = args.submitit_cluster or "slurm"
    jobs = submit_plan(
        plan,
        out,
        opts,
        cluster=cluster,
        log_dir=args.log_dir,
        plugins=args.plugin,
        device=args.device,
        threads=getattr(args, "threads", None),
    )
    if not jobs:
        print("# nothing to submit")
        return 0
    print(
        f"# submitted {len(jobs)} task(s) to {cluster}: job {jobs[0].job_id.split('_')[0]}; "
        f"logs: {jobs[0].paths.folder}"
    )
    if not (args.wait or cluster != "slurm"):
        return 0
    failed = 0
    for job in jobs:
        try:
            job.result()
        except Exception as exc:  # noqa: BLE001 - one failed task does not hide the others
            failed += 1
            print(f"# task {job.job_id} failed: {str(exc).strip().splitlines()[-1] if str(exc).strip() else exc}")
    print(f"# {len(jobs) - failed} task(s) finished, {failed} failed")
    return 1 if failed else 0


def add_parser(sub: argparse._SubParsersAction, plugin: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "sweep",
        parents=[plugin],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=SWEEP_EPILOG,
        help="run a grid of settings (method x dataset x budget x seed x any --set key), locally or on SLURM",
        description="Expand a grid (SPEC.yaml and/or --grid KEY=a,b) to runs and run the ones not finished yet.",
    )
    p.add_argument("spec", nargs="?", type=Path, default=None, metavar="SPEC.yaml", help="grid file (see below)")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a grid axis: method, dataset, labeled, seed, preset, backbone, estimator or any config key (repeatable)",
    )
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="fixed override")
    p.add_argument("--preset", default=None, help="preset of every run (default: the spec's, else cpu)")
    p.add_argument("--out", type=Path, default=None, help="results root (default: the spec's, else results/runs)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (and, for slurm, the sbatch file) only")
    add_executor_args(p, jobs_help="local: parallel runs (default: the spec's, else 1)")


def cmd_sweep(args: argparse.Namespace) -> int:
    from ssl_bench.core.config import parse_set
    from ssl_bench.reporting.sweep import load_spec, plan_sweep, render_plan
    from ssl_bench.training.runner import default_out_dir

    spec = load_spec(args.spec, args.grid, parse_set(args.sets))
    if args.preset:
        spec.preset = args.preset
    out = args.out or (Path(spec.out) if spec.out else default_out_dir())
    executor = args.executor or spec.executor
    plan = plan_sweep(spec, out, stale_s=args.stale_after)
    print(render_plan(plan, out, args.plugin), end="")
    if executor == "slurm" or args.submitit_cluster:
        opts = slurm_options(args, spec.slurm)
        if args.dry_run:
            from ssl_bench.reporting.slurm import sbatch_script

            n = sum(m.action in ("run", "resume") for m in plan)
            print(f"# sbatch file of the array ({n} task(s)):")
            print(sbatch_script(opts, args.log_dir or out / "_slurm", n), end="")
            return 0
        return submit_and_report(plan, out, args, opts)
    if args.dry_run:
        return 0
    from ssl_bench.reporting.tables.missing import run_missing

    done = run_missing(
        plan,
        out,
        jobs=args.jobs or spec.jobs,
        threads=args.threads,
        plugins=args.plugin,
        device=args.device,
        log_dir=args.log_dir,
    )
    failed = [entry for entry, code in done if code != 0]
    print(f"# {len(done) - len(failed)} run(s) finished, {len(failed)} failed")
    return 1 if failed else 0


COMMANDS = {"sweep": cmd_sweep}
