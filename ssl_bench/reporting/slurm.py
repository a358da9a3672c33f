"""Running a plan of runs through **submitit**: one SLURM job array (or submitit's local/debug executors, the same
code path minus ``sbatch``).

Each array task is a :class:`RunTask`: it runs one plan entry's ``ssl-bench run|resume`` command (the same
command line as the local workers, :func:`~ssl_bench.reporting.tables.missing.entry_argv`) as a child process.
On pre-emption or time-out SLURM signals the task (USR2, ``signal_delay_s`` before the kill); submitit then calls
:meth:`RunTask.__submitit_checkpoint__`, which stops the child with SIGTERM (the trainer writes
``checkpoints/last.pt`` and exits), finds the task's own run folder and returns a resubmission that *resumes that
folder*; submitit requeues the task. Logs: one file per task, ``<log_dir>/<job id>_<task>_log.out``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ssl_bench.core.config import read_yaml_mapping
from ssl_bench.core.errors import ConfigError, SSLBenchError

#: submitit executors: ``slurm`` (sbatch), ``local`` (subprocesses, same pickling and requeue), ``debug`` (in-process)
CLUSTERS = ("slurm", "local", "debug")


@dataclass
class SlurmOptions:
    """Resources of each array task (``--slurm-profile FILE.yaml`` holds the same keys)."""

    partition: str | None = None
    #: wall-clock limit per task, minutes (a timed-out task is requeued and resumes)
    time: int = 240
    gpus: int = 1
    cpus: int = 4
    #: memory per node, SLURM syntax (``16G``), or None for the partition's default
    mem: str | None = "16G"
    #: array tasks running at once (``#SBATCH --array=0-N%P``)
    array_parallelism: int = 32
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    #: shell lines run before the task (``module load ...``, ``source .venv/bin/activate``)
    setup: list[str] = field(default_factory=list)
    #: seconds between SLURM's warning signal and the kill: time for the final checkpoint
    signal_delay_s: int = 120
    #: requeues after time-outs (pre-emptions are always requeued)
    max_timeouts: int = 3
    job_name: str = "ssl-bench"


def load_profile(path: str | Path | None, base: dict[str, Any] | None = None, **overrides: Any) -> SlurmOptions:
    """Options: ``base`` (a sweep spec's ``slurm`` section) < the YAML profile at ``path`` (keys of
    :class:`SlurmOptions`) < ``overrides`` (command-line flags; None = not given)."""
    values: dict[str, Any] = dict(base or {})
    if path is not None:
        values.update(read_yaml_mapping(path, "SLURM profile", keys=_option_names()))
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - set(_option_names()))
    if unknown:
        raise ConfigError(f"unknown SLURM option(s) {', '.join(unknown)}: use {', '.join(_option_names())}")
    opts = SlurmOptions(**values)
    if opts.time < 1 or opts.gpus < 0 or opts.cpus < 1 or opts.array_parallelism < 1:
        raise ConfigError("SLURM options: time, cpus and array_parallelism must be >= 1, gpus >= 0")
    return opts


def _option_names() -> list[str]:
    return [f.name for f in fields(SlurmOptions)]


def sbatch_parameters(opts: SlurmOptions) -> dict[str, Any]:
    """The options as submitit's SLURM parameters (the ``#SBATCH`` lines; None values left out)."""
    params: dict[str, Any] = {
        "job_name": opts.job_name,
        "time": int(opts.time),
        "gpus_per_node": int(opts.gpus) or None,
        "cpus_per_task": int(opts.cpus),
        "mem": opts.mem,
        "partition": opts.partition,
        "account": opts.account,
        "qos": opts.qos,
        "constraint": opts.constraint,
        "array_parallelism": int(opts.array_parallelism),
        "signal_delay_s": int(opts.signal_delay_s),
        "setup": list(opts.setup) or None,
        "stderr_to_stdout": True,  # one log file per task
    }
    return {k: v for k, v in params.items() if v is not None}


def sbatch_script(opts: SlurmOptions, log_dir: str | Path, n_tasks: int) -> str:
    """The sbatch file submitit writes for an array of ``n_tasks`` (rendered without ``sbatch``; ``--dry-run``)."""
    import shlex
    import sys

    from submitit.slurm.slurm import _make_sbatch_string

    folder = Path(log_dir) / "%j"
    command = f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {shlex.quote(str(folder))}"  # as submitit
    params = {**sbatch_parameters(opts), "map_count": n_tasks if n_tasks > 1 else None}
    return _make_sbatch_string(command=command, folder=folder, **params)


def make_executor(log_dir: str | Path, opts: SlurmOptions, cluster: str = "slurm") -> Any:
    """A submitit executor writing its pickles and per-task logs under ``log_dir``."""
    if cluster not in CLUSTERS:
        raise ConfigError(f"unknown submitit cluster {cluster!r}: use {', '.join(CLUSTERS)}")
    try:
        import submitit
    except ImportError as exc:
        raise ConfigError('the slurm executor needs submitit: pip install "ssl-bench[slurm]"') from exc
    kwargs = {f"{cluster}_max_num_timeout": opts.max_timeouts} if cluster in ("slurm", "local") else {}
    try:
        executor = submitit.AutoExecutor(folder=Path(log_dir) / "%j", cluster=cluster, **kwargs)
    except RuntimeError as exc:  # no srun/sbatch on this machine
        raise ConfigError(f"cannot use SLURM here ({exc}); use --executor local, or run on a login node") from exc
    if cluster == "slurm":
        executor.update_parameters(**{f"slurm_{k}": v for k, v in sbatch_parameters(opts).items()})
    elif cluster == "local":  # the same time-out warning (USR2, signal_delay_s early) and requeue as SLURM
        executor.update_parameters(timeout_min=int(opts.time))
        executor._executor.update_parameters(signal_delay_s=int(opts.signal_delay_s))  # not exposed by AutoExecutor
    else:
        executor.update_parameters(timeout_min=int(opts.time))
    return executor


class RunTask:
    """One array task: run (or resume) one plan entry, as a child ``ssl-bench`` process.

    Picklable (submitit stores it); the child process handle is not pickled.
    """

    def __init__(
        self,
        entry: Any,
        out: str | Path,
        plugins: Sequence[str] = (),
        device: str | None = None,
        threads: int | None = None,
    ) -> None:
        self.entry, self.out, self.plugins, self.device, self.threads = entry, str(out), list(plugins), device, threads
        self._child: subprocess.Popen[bytes] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_child"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._child = None

    def __call__(self) -> str:
        from ssl_bench.reporting.tables.missing import entry_argv

        if self.entry.action == "resume" and self.entry.run_dir is not None:
            if _status(Path(self.entry.run_dir)) == "finished":
                return str(self.entry.run_dir)
        cmd = entry_argv(self.entry, self.out, self.plugins, threads=self.threads, device=self.device, quiet=True)
        print("+", " ".join(["ssl-bench", *cmd[3:]]), flush=True)
        self._child = subprocess.Popen(cmd)
        code = self._child.wait()
        if code != 0:
            raise SSLBenchError(f"{self.entry.selector.describe()}, seed {self.entry.seed}: exit code {code}")
        run_dir = self.own_run_dir()
        return str(run_dir) if run_dir else ""

    def own_run_dir(self) -> Path | None:
        """This task's run folder: the one it resumes, else the newest run of its setting and seed under ``out``."""
        if self.entry.run_dir is not None:
            return Path(self.entry.run_dir)
        from ssl_bench.reporting.results import find_runs
        from ssl_bench.reporting.tables.cells import matches, resolve_selector

        expected, _ = resolve_selector(self.entry.selector)
        mine = [r for r in find_runs(self.out) if r.get("seed") == self.entry.seed and matches(r, expected or {})]
        return max(mine, key=lambda r: r.run_id).path if mine else None

    def __submitit_checkpoint__(self) -> Any:
        """Pre-empted or timed out: checkpoint the child (SIGTERM), requeue as a resume of the same run folder."""
        import submitit

        self._stop_child()
        run_dir = self.own_run_dir()
        entry = self.entry
        if run_dir is not None:
            entry = type(entry)(**{**asdict_shallow(entry), "action": "resume", "run_dir": run_dir})
        return submitit.helpers.DelayedSubmission(RunTask(entry, self.out, self.plugins, self.device, self.threads))

    def _stop_child(self, timeout_s: float = 90.0) -> None:
        """SIGTERM the child (the trainer checkpoints at its next step and exits) and reap it. Runs inside the
        signal handler that interrupted ``Popen.wait`` in :meth:`__call__`, whose lock it must not wait for, hence
        ``os.waitpid``."""
        child = self._child
        if child is None or child.returncode is not None:
            return
        try:
            os.kill(child.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if os.waitpid(child.pid, os.WNOHANG)[0]:
                    return
            except ChildProcessError:  # already reaped
                return
            time.sleep(0.2)
        os.kill(child.pid, signal.SIGKILL)

    def checkpoint(self) -> Any:
        """The name submitit's signal handler looks for before calling :meth:`__submitit_checkpoint__` (1.5)."""
        return self.__submitit_checkpoint__()


def asdict_shallow(obj: Any) -> dict[str, Any]:
    """A dataclass's fields without deep-copying them (:func:`dataclasses.asdict` would rebuild nested ones)."""
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def _status(run_dir: Path) -> str | None:
    from ssl_bench.core.io import read_json

    path = run_dir / "manifest.json"
    return read_json(path).get("status") if path.exists() else None


def submit_plan(
    plan: Sequence[Any],
    out: str | Path,
    opts: SlurmOptions,
    *,
    cluster: str = "slurm",
    log_dir: str | Path | None = None,
    plugins: Sequence[str] = (),
    device: str | None = None,
    threads: int | None = None,
) -> list[Any]:
    """Submit the plan's runnable entries (action run/resume) as one job array; returns the submitit jobs."""
    todo = [m for m in plan if m.action in ("run", "resume")]
    if not todo:
        return []
    executor = make_executor(log_dir or Path(out) / "_slurm", opts, cluster)
    tasks = [RunTask(m, out, plugins, device, threads) for m in todo]
    with executor.batch():
        jobs = [executor.submit(task) for task in tasks]
    return jobs


__all__ = [
    "CLUSTERS",
    "RunTask",
    "SlurmOptions",
    "load_profile",
    "make_executor",
    "sbatch_parameters",
    "sbatch_script",
    "submit_plan",
]
